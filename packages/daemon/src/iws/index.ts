/**
 * The daemon's `iws.InWorkspaceService`: privileged operations a workspace asks its node for (proc and
 * sysfs mounts, id maps, cgroup delegation, veth pairs, resource info), done through the
 * `NamespaceOps` interface of @workbay/nsinsider.
 *
 * ```ts
 * import { createNsinsiderOps, CgroupController } from '@workbay/nsinsider';
 *
 * const service = createInWorkspaceService({
 *   ops: createNsinsiderOps(),
 *   cgroups: await CgroupController.detect(),
 *   workspace: { workspaceId: 'ws-1', initPid: () => session.pid, cgroupPath: 'workbay/ws-1' },
 * });
 * const handle = await listenIws(service, { socketPath: '/var/lib/workbay/ws-1-daemon/daemon.sock' });
 * // ...
 * await handle.close();
 * ```
 * @module
 */
export type { NamespaceOps } from '@workbay/nsinsider';
export type { IwsWorkspaceContext, IdRange, IwsConfig, CgroupAccess, InWorkspaceServiceDeps } from './context.js';
export { defaultIwsConfig } from './context.js';
export type { PrepareForUserNsResult, WorkspaceResources } from './operations.js';
export { InWorkspaceOperations, iwsRateLimits, kernelHasNfs, WORKSPACE_CGROUP, USER_CGROUP } from './operations.js';
export type { RateLimitRule } from './rate-limit.js';
export { RateLimiter, onceOnly } from './rate-limit.js';
export type { FloodGuardConfig, FloodGuardOptions, FloodOffence, FloodPenalty, Suspendable } from './flood-guard.js';
export { FloodGuard } from './flood-guard.js';
export { toIwsError } from './error-mapping.js';
export { createInWorkspaceService, createWorkspaceInfoService } from './service.js';
export type { IwsListenOptions, IwsServerHandle } from './server.js';
export { listenIws } from './server.js';
export type { IwsHostOptions, IwsWorkspace } from './host.js';
export { IwsHost, IWS_DIR, IWS_SOCKET } from './host.js';
export type { WorkspaceProcessLocatorOptions, WorkspaceProcessSource } from './workspace-process.js';
export { WorkspaceProcessLocator } from './workspace-process.js';
