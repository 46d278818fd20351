import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { parseConfigSection } from '../zod-config.js';

const readinessFields = {
  /** `tcp`: a TCP connect to the IDE port succeeds; `http`: a GET answers below 500; `none`: ready once launched. */
  kind: z.enum(['tcp', 'http', 'none']),
  /** Path for the `http` probe. */
  path: z.string().startsWith('/'),
  /** Pause between probes. */
  intervalMs: z.number().int().positive(),
  /** Limit for one probe. */
  probeTimeoutMs: z.number().int().positive(),
};

const readinessSchema = z.strictObject({
  kind: readinessFields.kind.default('tcp'),
  path: readinessFields.path.default('/'),
  intervalMs: readinessFields.intervalMs.default(100),
  probeTimeoutMs: readinessFields.probeTimeoutMs.default(1000),
});

const imageSchema = z.strictObject({
  /** argv of the workspace process; `${NAME}` in an argument is replaced by that variable of the workspace env. */
  command: z.array(z.string().min(1)).min(1),
  /** Extra environment for this image (the spec's env wins on conflicts). */
  env: z.record(z.string(), z.string()).optional(),
  /** Overrides parts of the runtime-wide readiness check. */
  readiness: z.strictObject(readinessFields).partial().optional(),
});

export const localRuntimeConfigSchema = z.strictObject({
  /** Where per-instance records, exit codes and logs live; must survive a manager restart. */
  stateDir: z
    .string()
    .min(1)
    .default(path.join(os.homedir(), '.workbay', 'runtime-local')),
  /** Address the workspaces' ports are reachable on; also where readiness is probed. */
  host: z.string().min(1).default('127.0.0.1'),
  nodeName: z.string().min(1).default(os.hostname()),
  /** `auto`: own pid/mount/uts namespaces when running as root; `namespaces`: required; `none`: plain processes. */
  isolation: z.enum(['auto', 'namespaces', 'none']).default('auto'),
  /** `auto`: a cgroup per workspace when running as root and cgroups are available (v1 or v2, detected). */
  cgroups: z.enum(['auto', 'v1', 'v2', 'off']).default('auto'),
  /**
   * Parent of the workspace cgroups: relative to the manager's own cgroup, or from the hierarchy root when it
   * starts with '/'. Default: `workbay` below the manager's own cgroup on v1, `/workbay` on v2.
   */
  cgroupParent: z
    .string()
    .min(1)
    .regex(/^\/?[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/, 'must be a cgroup path without ".." segments')
    .refine((p) => !p.split('/').includes('..'), 'must not contain ".."')
    .optional(),
  readiness: readinessSchema.prefault({}),
  /** Image reference (exact, or a glob with `*` and `?`) → how to run it. Exact matches win, then globs in order. */
  images: z.record(z.string().min(1), imageSchema).default({}),
  /** How often processes adopted after a restart (no longer our children) are checked for exit. */
  exitPollIntervalMs: z.number().int().positive().default(500),
  /** How long to wait for processes to vanish after SIGKILL before giving up. */
  killTimeoutMs: z.number().int().positive().default(10_000),
  /** Records of instances that exited are dropped after this long even if nobody called stop(). */
  exitedRetentionMs: z
    .number()
    .int()
    .positive()
    .default(24 * 3600_000),
});

export type LocalRuntimeConfig = z.output<typeof localRuntimeConfigSchema>;
export type LocalRuntimeConfigInput = z.input<typeof localRuntimeConfigSchema>;
export type ReadinessConfig = LocalRuntimeConfig['readiness'];
export type ImageConfig = LocalRuntimeConfig['images'][string];

/** Validates the `local` runtime section; the error names the bad key, e.g. `runtime.local.readiness.kind`. */
export function parseLocalRuntimeConfig(raw: unknown, prefix = 'runtime.local'): LocalRuntimeConfig {
  return parseConfigSection(localRuntimeConfigSchema, raw ?? {}, prefix);
}
