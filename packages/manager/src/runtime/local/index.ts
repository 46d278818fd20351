/**
 * The `local` workspace runtime: each workspace is a process tree on this machine, in its own namespaces and
 * cgroup when the manager runs as root.
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
export type { CgroupLayout, WorkspaceCgroup } from './cgroups.js';
