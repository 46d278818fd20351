import { chmod, lchown, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Server } from '@grpc/grpc-js';
import {
  InvalidArgumentError,
  InWorkspaceServiceService,
  WorkspaceInfoServiceService,
  bindAddress,
  startGrpcServer,
} from '@workbay/api';
import type { InWorkspaceServiceServer, ServedService, WorkspaceInfoServiceServer } from '@workbay/api';

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
    await bindAddress(server, `unix:${bound}`);
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
  const started = await startGrpcServer({
    address: socketPath !== undefined ? `unix:${socketPath}` : (options as { address: string }).address,
    services,
    // One server per workspace, started on the way to RUNNING: neither reflection nor health checks (a few ms each).
    reflectionProtos: [],
    healthChecks: false,
    // Requests of this service are tiny (the largest, WriteIDMapping, is a few KB): nothing bigger is read.
    serverOptions: { 'grpc.max_receive_message_length': MAX_REQUEST_BYTES, 'grpc.max_concurrent_streams': 16 },
    bind:
      socketPath !== undefined
        ? async (server) => {
            await bindUnixSocket(server, socketPath, options as Parameters<typeof bindUnixSocket>[2]);
            return 0;
          }
        : undefined,
  });
  let closed = false;
  return {
    target: socketPath !== undefined ? `unix:${socketPath}` : started.address,
    port: socketPath !== undefined ? 0 : Number(started.address.slice(started.address.lastIndexOf(':') + 1)),
    async close(graceMs = 2000) {
      if (closed) return;
      closed = true;
      await started.stop(graceMs);
      // Not recursive: whatever else a workspace put there is left to the one who owns the directory.
      if (socketPath !== undefined) await rm(socketPath, { force: true }).catch(() => undefined);
    },
  };
}
