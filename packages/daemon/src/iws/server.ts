import { chmod, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { InvalidArgumentError, InWorkspaceServiceService, WorkspaceInfoServiceService } from '@workbay/api';
import type { InWorkspaceServiceServer, WorkspaceInfoServiceServer } from '@workbay/api';

export type IwsListenOptions = (
  | /** A unix socket, as the original serves one per workspace (a stale socket file is replaced). */
    { readonly socketPath: string; readonly socketMode?: number }
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

/** Serves one workspace's InWorkspaceService on a unix socket or a TCP address. */
export async function listenIws(
  service: InWorkspaceServiceServer,
  options: IwsListenOptions,
): Promise<IwsServerHandle> {
  const server = new Server();
  server.addService(InWorkspaceServiceService, service);
  if (options.workspaceInfo) {
    server.addService(WorkspaceInfoServiceService, options.workspaceInfo);
  }
  let bindTo: string;
  let socketPath: string | undefined;
  if ('socketPath' in options) {
    if (!options.socketPath.startsWith('/')) {
      throw new InvalidArgumentError('socketPath', 'must be an absolute path');
    }
    socketPath = options.socketPath;
    await mkdir(dirname(socketPath), { recursive: true });
    await rm(socketPath, { force: true });
    bindTo = `unix:${socketPath}`;
  } else {
    bindTo = options.address;
  }
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(bindTo, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  if (socketPath !== undefined) {
    // The workspace user (not root) dials it from inside the workspace.
    await chmod(socketPath, 'socketMode' in options && options.socketMode !== undefined ? options.socketMode : 0o777);
  }
  const target = socketPath !== undefined ? `unix:${socketPath}` : bindTo.replace(/:0$/, `:${port}`);
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
      if (socketPath !== undefined) await rm(socketPath, { force: true });
    },
  };
}
