/**
 * The `local` workspace runtime: each workspace is a process tree on this machine; as root it is isolated (an
 * unprivileged uid in its own user, network, pid, mount and uts namespaces, and a cgroup).
 *
 * ```ts
 * const host = new PluginHost().use(localRuntimePlugin);
 * const runtime = await host.createRuntime('local', { stateDir: '/var/lib/workbay/runtime-local' });
 * runtime.events$.subscribe((e) => console.log(e.type, e.instanceId));
 * await runtime.start(spec);
 * ```
 *
 * @module
 */
export { LocalRuntime, defaultWorkspaceScript } from './local-runtime.js';
export type { LocalWorkspaceState, LocalIsolation, LocalRuntimeOptions } from './local-runtime.js';
export { localRuntimePlugin, localRuntimeFactory } from './plugin.js';
export { localRuntimeConfigSchema, parseLocalRuntimeConfig } from './config.js';
export type { LocalRuntimeConfig, LocalRuntimeConfigInput, ReadinessConfig, ImageConfig } from './config.js';
export type { WorkspaceNet } from './network.js';
