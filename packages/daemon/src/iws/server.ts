import { chmod, lchown, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { InvalidArgumentError, InWorkspaceServiceService, WorkspaceInfoServiceService } from '@workbay/api';
import type { InWorkspaceServiceServer, WorkspaceInfoServiceServer } from '@workbay/api';

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
    }
    /** A TCP address such as `127.0.0.1:0`. */
  | { readonly address: string }
) & {
  /** Also serve `iws.WorkspaceInfoService` on the same listener (see `createWorkspaceInfoService`). */
  readonly workspaceInfo?: WorkspaceInfoServiceServer;
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

function bind(server: Server, address: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
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
  server: Server,
  socketPath: string,
  options: { socketMode?: number; owner?: { uid: number; gid: number }; stagingDir?: string },
): Promise<void> {
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  const staging = await mkdtemp(join(options.stagingDir ?? dirname(socketPath), '.bind-'));
  try {
    const bound = join(staging, 's');
    await bind(server, `unix:${bound}`);
    await chmod(bound, options.socketMode ?? 0o600);
    if (options.owner) await lchown(bound, options.owner.uid, options.owner.gid);
    await rename(bound, socketPath);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Serves one workspace's InWorkspaceService on a unix socket or a TCP address. */
export async function listenIws(
  service: InWorkspaceServiceServer,
  options: IwsListenOptions,
): Promise<IwsServerHandle> {
  // Requests of this service are tiny (the largest, WriteIDMapping, is a few KB): nothing bigger is read.
  const server = new Server({
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_concurrent_streams': 16,
  });
  server.addService(InWorkspaceServiceService, service);
  if (options.workspaceInfo) {
    server.addService(WorkspaceInfoServiceService, options.workspaceInfo);
  }
  let socketPath: string | undefined;
  let port = 0;
  try {
    if ('socketPath' in options) {
      if (!options.socketPath.startsWith('/')) {
        throw new InvalidArgumentError('socketPath', 'must be an absolute path');
      }
      socketPath = options.socketPath;
      await bindUnixSocket(server, socketPath, options);
    } else {
      port = await bind(server, options.address);
    }
  } catch (error) {
    server.forceShutdown();
    throw error;
  }
  const target =
    socketPath !== undefined
      ? `unix:${socketPath}`
      : (options as { address: string }).address.replace(/:0$/, `:${port}`);
  let closed = false;
  return {
    target,
    port: socketPath !== undefined ? 0 : port,
    async close(graceMs = 2000) {
      if (closed) return;
      closed = true;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      // Not recursive: whatever else a workspace put there is left to the one who owns the directory.
      if (socketPath !== undefined) await rm(socketPath, { force: true }).catch(() => undefined);
    },
  };
}
