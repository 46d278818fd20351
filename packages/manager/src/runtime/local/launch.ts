import { existsSync, readFileSync, realpathSync } from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import type { RuntimeWorkspaceSpec } from '@workbay/api';
import type { LocalRuntimeConfig, ReadinessConfig } from './config.js';
import { builtScript } from './built-scripts.js';
import { expandCommand, resolveImage } from './images.js';
import {
  hideDirsFor,
  hostIdentity,
  hostSharedWritableDirs,
  iwsDirFor,
  privateDirsFor,
  sandboxEnv,
  workspaceMount,
} from './sandbox.js';
import type { HostIdentity } from './sandbox.js';
import type { NestedNamespaces } from './sandbox-init.js';
import { syscallFilterArgument } from '@workbay/nsinsider';

const defaultPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** The IDE port an isolated workspace gets when the spec asks for 0 (it has an address of its own). */
export const defaultIsolatedIdePort = 23000;

/** Everything about one launch that follows from the spec and the config, before anything is created. */
export interface LaunchPlan {
  readonly command: string[];
  readonly env: Record<string, string>;
  readonly readiness: ReadinessConfig;
  readonly idePort: number;
  /** Spec port → port where it is reachable. */
  readonly portMap: Record<string, number>;
  /** Which `images` entry matched; undefined = the built-in default workspace. */
  readonly mappedPattern?: string;
  /** Isolated only: the workspace's host identity, its service dir and the host directories to hide. */
  readonly identity?: HostIdentity;
  readonly iwsDir?: string;
  readonly hideDirs?: readonly string[];
  /** Isolated only: directories that get a private tmpfs (/tmp and every other one anyone may write). */
  readonly privateDirs?: readonly string[];
  /** Isolated only: the real paths of the hidden and private directories, below which host mounts are detached. */
  readonly detachDirs?: readonly string[];
  /** Isolated only: whether it may create namespaces inside its own (config `nestedNamespaces`). */
  readonly nestedNamespaces?: NestedNamespaces;
  /** Isolated only: the syscall filter's loader argument (config `syscallFilter`), absent when off. */
  readonly syscallFilter?: string;
}

/**
 * Works out the command, env, ports and (isolated) identity of a workspace. Isolated, the workspace listens on its
 * own address, so every spec port is its own (portMap identity) and the default workspace binds 0.0.0.0 inside its
 * network namespace; otherwise `idePort` is the host port the runtime's allocator handed out.
 */
export async function planLaunch(options: {
  readonly spec: RuntimeWorkspaceSpec;
  readonly config: LocalRuntimeConfig;
  readonly contentDir: string;
  /** The content directory's: an isolated workspace runs as its owner (not needed otherwise). */
  readonly contentStat?: Stats;
  readonly isolated: boolean;
  /** Non-isolated only: the allocated host port for the IDE. */
  readonly allocatedIdePort?: number;
}): Promise<LaunchPlan> {
  const { spec, config, contentDir, isolated } = options;
  const mapped = resolveImage(config.images, spec.image);
  const readiness: ReadinessConfig = { ...config.readiness, ...(mapped?.config.readiness ?? {}) };
  const requested = spec.ports[0] ?? 0;
  const idePort = isolated ? requested || defaultIsolatedIdePort : options.allocatedIdePort!;
  const portMap: Record<string, number> = {};
  spec.ports.forEach((p, index) => (portMap[String(p)] = index === 0 ? idePort : p));

  const iwsDir = isolated ? await iwsDirFor(contentDir) : undefined;
  let env: Record<string, string> = {
    PATH: process.env['PATH'] ?? defaultPath,
    ...(mapped?.config.env ?? {}),
    ...spec.env,
    PORT: String(idePort),
    WORKBAY_IDE_PORT: String(idePort),
  };
  if (isolated) env = sandboxEnv(env, contentDir, iwsDir);
  const command = mapped
    ? expandCommand(mapped.config.command, env)
    : [
        process.execPath,
        // Isolated, the workspace user may not be able to read the installed package (npm installs under
        // /root or a 0700 directory): the script travels as its source instead of as a path.
        ...(isolated
          ? ['--input-type=module', '-e', readFileSync(defaultWorkspaceScript(), 'utf8'), '--']
          : [defaultWorkspaceScript()]),
        '--port',
        String(idePort),
        '--host',
        isolated ? '0.0.0.0' : config.host,
        '--workspace-id',
        spec.workspaceId,
        '--instance-id',
        spec.instanceId,
        '--owner',
        spec.owner,
      ];
  if (!isolated) return { command, env, readiness, idePort, portMap, mappedPattern: mapped?.pattern };
  if (!options.contentStat) throw new Error('an isolated launch is planned with the content directory it runs as');
  const needed = [process.execPath, command[0] ?? ''];
  const hideDirs = hideDirsFor(
    [path.dirname(contentDir), config.stateDir, ...hostListings.filter((d) => existsSync(d))],
    needed,
  );
  const privateDirs = privateDirsFor(hostSharedWritableDirs(), needed);
  return {
    command,
    env,
    readiness,
    idePort,
    portMap,
    mappedPattern: mapped?.pattern,
    identity: hostIdentity(options.contentStat),
    iwsDir,
    hideDirs,
    privateDirs,
    detachDirs: [...new Set([...hideDirs, ...privateDirs].map(realPath))],
    nestedNamespaces: config.nestedNamespaces,
    syscallFilter: config.syscallFilter === 'default' ? syscallFilterArgument() : undefined,
  };
}

/**
 * Host directories that list what other workspaces are: `/run/netns` names every workspace's network namespace, and
 * with it other owners' instance ids (red team, round 5). Hidden like the state directories.
 */
const hostListings = ['/run/netns'];

/**
 * The path the kernel lists mounts below `dir` by (/proc/self/mountinfo resolves links); `dir` itself when it does
 * not exist (yet): nothing is mounted below a missing directory.
 */
function realPath(dir: string): string {
  try {
    return realpathSync(dir);
  } catch {
    return path.resolve(dir);
  }
}

/** The built default workspace (see built-scripts.ts). */
export function defaultWorkspaceScript(): string {
  return builtScript('default-workspace.js');
}

/** A UTS hostname is at most 64 bytes; keep it a valid label-ish string. */
export function hostnameFor(workspaceId: string): string {
  const cleaned = workspaceId.replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 63);
  return cleaned || 'workspace';
}

/** Where the workspace's cwd is, as it sees it. */
export const workspaceCwd = (isolated: boolean, contentDir: string): string => (isolated ? workspaceMount : contentDir);
