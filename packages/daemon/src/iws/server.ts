import { chmod, lchown, mkdir, mkdtemp, rename, rm, unlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { Server as NetServer, Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { ServerCredentials } from '@grpc/grpc-js';
import type { ConnectionInjector } from '@grpc/grpc-js';
import {
  InvalidArgumentError,
  InWorkspaceServiceService,
  WorkspaceInfoServiceService,
  startGrpcServer,
} from '@workbay/api';
import type { InWorkspaceServiceServer, ServedService, WorkspaceInfoServiceServer } from '@workbay/api';
import type { FloodGuard } from './flood-guard.js';

export type IwsListenOptions = (
  | /** A unix socket, as the original serves one per workspace (an existing socket file is replaced). */
    {
      readonly socketPath: string;
      /** Mode of the socket (default 0600: only its owner connects). */
      readonly socketMode?: number;
      /** Owner of the socket (default: the daemon's user). */
      readonly owner?: { readonly uid: number; readonly gid: number };
      /**
       * A directory only the daemon can write to, on the socket's filesystem (default: the socket's directory).
       * The socket is bound, chmod'ed and chowned in a private directory made there, then renamed into place.
       */
      readonly stagingDir?: string;
      /**
       * Connections open at once on this socket (default {@link DEFAULT_MAX_CONNECTIONS}); one more is closed as
       * soon as it is accepted. Every connection costs the daemon a file descriptor, and the socket's only
       * client is one workspace.
       */
      readonly maxConnections?: number;
      /**
       * Takes the socket away from a workspace that floods it (see `FloodGuard`): its connections are destroyed and
       * the socket refuses connects for a cooldown, then it is bound again at the same path, mode and owner.
       * Connections beyond `maxConnections` count as offences, and so do bytes beyond the guard's traffic budget
       * (sampled every {@link TRAFFIC_SAMPLE_MS}); the service reports its refused calls itself.
       */
      readonly flood?: FloodGuard;
      /**
       * Clears the socket's name when binding it again after a penalty fails because a directory sits there (the
       * workspace owns the socket's directory); the host moves it into its trash.
       */
      readonly clearSocketPath?: () => Promise<void>;
    }
    /** A TCP address such as `127.0.0.1:0`. */
  | { readonly address: string }
) & {
  /** Also serve `iws.WorkspaceInfoService` on the same listener (see `createWorkspaceInfoService`). */
  readonly workspaceInfo?: WorkspaceInfoServiceServer;
  /**
   * A connection without a running call for this long is closed (default {@link DEFAULT_CONNECTION_IDLE_MS});
   * this includes one that never sends a byte. A client's channel reconnects on its next call.
   */
  readonly connectionIdleMs?: number;
  /** Any connection is closed after this long (a running call gets `connectionGraceMs` more; defaults below). */
  readonly connectionMaxAgeMs?: number;
  readonly connectionGraceMs?: number;
};

export interface IwsServerHandle {
  /** What a client dials: `unix:/path/daemon.sock` or `127.0.0.1:<port>`. */
  readonly target: string;
  /** The bound TCP port (0 for a unix socket). */
  readonly port: number;
  /** Stops accepting calls, waits up to `graceMs` for running ones, then forces; removes the socket file. */
  close(graceMs?: number): Promise<void>;
}

/** The largest request accepted (RESOURCE_EXHAUSTED beyond). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Connections open at once on one workspace's socket, unless configured (`IwsConfig.maxConnections`). */
export const DEFAULT_MAX_CONNECTIONS = 64;
/** A connection without a running call is closed after this long, unless configured. */
export const DEFAULT_CONNECTION_IDLE_MS = 60_000;
/** Every connection is closed after this long (calls here take seconds at most), then forced after the grace. */
export const DEFAULT_CONNECTION_MAX_AGE_MS = 30 * 60_000;
export const DEFAULT_CONNECTION_GRACE_MS = 30_000;
/** How often the bytes a workspace sent are handed to its flood guard (see `FloodGuard.traffic`). */
export const TRAFFIC_SAMPLE_MS = 1000;

/**
 * The unix listener of one workspace: a plain `net.Server` the daemon owns, whose accepted connections are handed
 * to the gRPC server through grpc-js's connection injector (public since grpc-js 1.11). grpc-js binds and accepts
 * on its own listener and offers no limit on connections; owning the listener gives the limit from Node itself,
 * `net.Server.maxConnections`: a connection beyond it is closed right at accept (one descriptor for an instant, so a
 * workspace that opens thousands holds at most `maxConnections` of the daemon's descriptors; the rest wait in the
 * kernel's backlog at the workspace's cost). No proxy, no second hop: the socket itself is what grpc-js serves.
 *
 * Idle connections: grpc-js's `grpc.max_connection_idle_ms` closes a connection without a running call gracefully
 * (GOAWAY), counting from accept, so also one that never sends the HTTP/2 preface. A graceful close waits for the
 * peer, though, and a peer that neither reads nor closes keeps the descriptor forever; so the listener also
 * destroys any connection that moved no byte either way for twice the idle time (the socket's byte counters keep
 * counting while HTTP/2 owns its handle). `grpc.max_connection_age_ms` plus its grace (after which grpc-js
 * destroys the session) bounds a connection kept busy with pings or a call that never ends. Calls of this service
 * take seconds at most, so none of this cuts a real call; a client's channel reconnects on its next call.
 */
interface OwnedListener {
  readonly server: NetServer;
  readonly sockets: Set<Socket>;
  readonly reaper: NodeJS.Timeout;
  readonly meter: NodeJS.Timeout | undefined;
}

function injectInto(
  injector: ConnectionInjector,
  maxConnections: number,
  idleMs: number,
  flood: FloodGuard | undefined,
): OwnedListener {
  const sockets = new Set<Socket>();
  const activity = new WeakMap<Socket, { bytes: number; since: number }>();
  // The traffic meter: bytes read from each socket up to the last sample, and those of sockets closed since. The
  // socket's counter, not 'data' events: HTTP/2 reads the handle itself, and the counter survives the close.
  const sampled = new WeakMap<Socket, number>();
  let closedBytes = 0;
  const server = createServer((socket) => {
    sockets.add(socket);
    activity.set(socket, { bytes: 0, since: Date.now() });
    socket.once('close', () => {
      sockets.delete(socket);
      closedBytes += socket.bytesRead - (sampled.get(socket) ?? 0);
    });
    // A peer that resets its connection must not become an unhandled 'error' of the daemon.
    socket.on('error', () => undefined);
    injector.injectConnection(socket);
  });
  server.maxConnections = maxConnections;
  server.on('error', () => undefined);
  // Node closed a connection beyond maxConnections: a client that keeps doing that is flooding.
  if (flood) server.on('drop', () => flood.offence('connections'));
  const reaper = setInterval(
    () => {
      const now = Date.now();
      for (const socket of sockets) {
        const seen = activity.get(socket);
        const bytes = socket.bytesRead + socket.bytesWritten;
        if (!seen || bytes !== seen.bytes) activity.set(socket, { bytes, since: now });
        else if (now - seen.since >= 2 * idleMs) socket.destroy();
      }
    },
    Math.max(50, Math.floor(idleMs / 4)),
  );
  reaper.unref();
  let sampledAt = Date.now();
  const meter = flood
    ? setInterval(() => {
        let bytes = closedBytes;
        closedBytes = 0;
        for (const socket of sockets) {
          bytes += socket.bytesRead - (sampled.get(socket) ?? 0);
          sampled.set(socket, socket.bytesRead);
        }
        const now = Date.now();
        flood.traffic(bytes, now - sampledAt);
        sampledAt = now;
      }, TRAFFIC_SAMPLE_MS)
    : undefined;
  meter?.unref();
  return { server, sockets, reaper, meter };
}

/** Stops accepting; resolves once every connection is gone (see {@link dropConnections}). */
function stopAccepting(listener: OwnedListener): Promise<void> {
  clearInterval(listener.reaper);
  clearInterval(listener.meter);
  return new Promise<void>((resolve) => listener.server.close(() => resolve()));
}

function dropConnections(listener: OwnedListener): void {
  for (const socket of listener.sockets) socket.destroy();
}

/**
 * Binds a unix socket so that it never exists at its final path with a looser mode or another owner: bind()
 * creates the file with 0777 minus the umask, so it is made inside a fresh 0700 directory of the daemon's (nobody
 * else can reach it there, nor swap it for a link before the chmod, which follows links), given its mode and
 * owner (lchown), and only then renamed over `socketPath`. rename() replaces a stale socket or a planted link
 * without following it. The bound path stays short (unix socket paths are limited to 108 bytes), whatever the
 * length of `socketPath`.
 */
async function bindUnixSocket(
  server: NetServer,
  socketPath: string,
  options: { socketMode?: number; owner?: { uid: number; gid: number }; stagingDir?: string },
): Promise<void> {
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  const staging = await mkdtemp(join(options.stagingDir ?? dirname(socketPath), '.bind-'));
  try {
    const bound = join(staging, 's');
    await new Promise<void>((resolve, reject) => {
      const failed = (error: Error): void => reject(error);
      server.once('error', failed);
      server.listen({ path: bound, backlog: 64 }, () => {
        server.off('error', failed);
        resolve();
      });
    });
    await chmod(bound, options.socketMode ?? 0o600);
    if (options.owner) await lchown(bound, options.owner.uid, options.owner.gid);
    await rename(bound, socketPath);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Serves one workspace's InWorkspaceService on a unix socket or a TCP address (the shared gRPC bootstrap). */
export async function listenIws(
  service: InWorkspaceServiceServer,
  options: IwsListenOptions,
): Promise<IwsServerHandle> {
  let socketPath: string | undefined;
  if ('socketPath' in options) {
    if (!options.socketPath.startsWith('/')) throw new InvalidArgumentError('socketPath', 'must be an absolute path');
    socketPath = options.socketPath;
  }
  const services: ServedService[] = [
    { name: 'iws.InWorkspaceService', definition: InWorkspaceServiceService, implementation: service },
  ];
  if (options.workspaceInfo) {
    services.push({
      name: 'iws.WorkspaceInfoService',
      definition: WorkspaceInfoServiceService,
      implementation: options.workspaceInfo,
    });
  }
  const maxConnections = ('socketPath' in options && options.maxConnections) || DEFAULT_MAX_CONNECTIONS;
  if (!Number.isSafeInteger(maxConnections) || maxConnections < 1) {
    throw new InvalidArgumentError('maxConnections', 'must be a positive integer');
  }
  const idleMs = options.connectionIdleMs ?? DEFAULT_CONNECTION_IDLE_MS;
  if (!Number.isSafeInteger(idleMs) || idleMs <= 0) {
    throw new InvalidArgumentError('connectionIdleMs', 'must be a positive integer');
  }
  let listener: OwnedListener | undefined;
  let injector: ConnectionInjector | undefined;
  const flood = 'socketPath' in options ? options.flood : undefined;
  const clearSocketPath = 'socketPath' in options ? options.clearSocketPath : undefined;
  const bindOptions = options as Parameters<typeof bindUnixSocket>[2];
  const started = await startGrpcServer({
    address: socketPath !== undefined ? `unix:${socketPath}` : (options as { address: string }).address,
    services,
    // One server per workspace, started on the way to RUNNING: neither reflection nor health checks (a few ms each).
    reflectionProtos: [],
    healthChecks: false,
    // Requests of this service are tiny (the largest, WriteIDMapping, is a few KB): nothing bigger is read.
    serverOptions: {
      'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
      'grpc.max_concurrent_streams': 16,
      'grpc.max_connection_idle_ms': idleMs,
      'grpc.max_connection_age_ms': options.connectionMaxAgeMs ?? DEFAULT_CONNECTION_MAX_AGE_MS,
      'grpc.max_connection_age_grace_ms': options.connectionGraceMs ?? DEFAULT_CONNECTION_GRACE_MS,
      // Channelz bookkeeping on every call and connection (nothing reads it here): less work per flooded call.
      'grpc.enable_channelz': 0,
    },
    bind:
      socketPath !== undefined
        ? async (server) => {
            injector = server.createConnectionInjector(ServerCredentials.createInsecure());
            listener = injectInto(injector, maxConnections, idleMs, flood);
            try {
              await bindUnixSocket(listener.server, socketPath, bindOptions);
            } catch (error) {
              const stopped = stopAccepting(listener);
              dropConnections(listener);
              await stopped;
              throw error;
            }
            return 0;
          }
        : undefined,
  });
  let closed = false;
  // The penalty's two halves. Closing the listener makes the kernel refuse the workspace's connects (its socket
  // file stays, with nobody listening), which costs the daemon nothing, unlike accepting and closing each one.
  // The file is bound afresh afterwards, by the same staged bind as at start: same path, mode and owner.
  const detachFlood = flood?.attach({
    suspend: async () => {
      const current = listener!;
      const stopped = stopAccepting(current);
      dropConnections(current);
      await stopped;
    },
    resume: async () => {
      if (closed) return;
      const next = injectInto(injector!, maxConnections, idleMs, flood);
      try {
        await bindUnixSocket(next.server, socketPath!, bindOptions).catch(async (error: unknown) => {
          const code = (error as NodeJS.ErrnoException).code;
          if (!clearSocketPath || (code !== 'EISDIR' && code !== 'ENOTEMPTY' && code !== 'EEXIST')) throw error;
          await clearSocketPath();
          await bindUnixSocket(next.server, socketPath!, bindOptions);
        });
      } catch (error) {
        await stopAccepting(next);
        throw error;
      }
      listener = next;
    },
  });
  return {
    target: socketPath !== undefined ? `unix:${socketPath}` : started.address,
    port: socketPath !== undefined ? 0 : Number(started.address.slice(started.address.lastIndexOf(':') + 1)),
    async close(graceMs = 2000) {
      if (closed) return;
      closed = true;
      // A penalty's pending restore is cancelled, and one under way is waited for (it binds the listener below).
      await detachFlood?.();
      // No new connections first; the running calls get their grace, then whatever is left is closed.
      const stopped = listener ? stopAccepting(listener) : undefined;
      await started.stop(graceMs);
      if (listener) dropConnections(listener);
      await stopped;
      // unlink, never a recursive removal: the directory is the workspace's, and so is whatever else it put there.
      if (socketPath !== undefined) await unlink(socketPath).catch(() => undefined);
    },
  };
}
