import type { Stats } from 'node:fs';
import { lstat } from 'node:fs/promises';
import path from 'node:path';
import { workspaceUid } from './wrapper.js';

/** Where an isolated workspace sees its content, and the env of the in-workspace service socket. */
export const workspaceMount = '/workspace';
export const iwsMount = '/.workbay';
export const iwsSocketEnv = 'WORKBAY_IWS_SOCKET';

/** Host uid/gid that stand in when the content is owned by root (never map host root into a workspace). */
export const fallbackHostId = 65534;

/** The workspace's host identity: the content directory's owner (see the isolation contract). */
export interface HostIdentity {
  readonly uid: number;
  readonly gid: number;
  /** Set when the owner could not be used and a fallback was taken; said in the workspace's status. */
  readonly notice?: string;
}

/**
 * The owner of the content directory IS the workspace's host identity. Root never is: a workspace mapped to host
 * uid 0 would own every root-owned file on the machine. Until the daemon gives the content a workspace uid, such a
 * workspace runs as nobody (65534), which can read but not write content owned by root, and its status says so.
 */
export function hostIdentity(contentStat: Stats): HostIdentity {
  if (contentStat.uid !== 0 && contentStat.gid !== 0) return { uid: contentStat.uid, gid: contentStat.gid };
  return {
    uid: contentStat.uid === 0 ? fallbackHostId : contentStat.uid,
    gid: contentStat.gid === 0 ? fallbackHostId : contentStat.gid,
    notice:
      `the content directory is owned by root, not by a workspace uid: the workspace runs as nobody ` +
      `(${fallbackHostId}, ${workspaceUid} inside) and cannot write its content`,
  };
}

/** `<dirname(contentDir)>/.iws/<basename(contentDir)>` when it is a real directory (not a link). */
export async function iwsDirFor(contentDir: string): Promise<string | undefined> {
  const dir = path.join(path.dirname(contentDir), '.iws', path.basename(contentDir));
  const st = await lstat(dir).catch(() => undefined);
  return st?.isDirectory() ? dir : undefined;
}

// Covering any of these (or an ancestor of what the workspace must run) would break the sandbox itself.
const neverHidden = ['/', '/usr', '/bin', '/sbin', '/lib', '/lib64', '/etc', '/proc', '/sys', '/dev', '/run', '/var'];
const coveredAnyway = ['/tmp', '/var/tmp', '/dev/shm'];

/**
 * The directory holding every workspace's content (the daemon's working area), to be covered by an empty tmpfs
 * inside the workspace so that it cannot read its neighbours' content through the host path. Undefined when
 * covering it would hide something the workspace needs (`needed`: its command, node, the default workspace script)
 * or a system directory, or when the private /tmp covers it anyway.
 */
export function hideDirFor(contentDir: string, needed: readonly string[]): string | undefined {
  const dir = path.dirname(path.resolve(contentDir));
  if (neverHidden.includes(dir) || coveredAnyway.includes(dir)) return undefined;
  const inside = (p: string): boolean => p === dir || p.startsWith(`${dir}/`);
  if (needed.some((p) => path.isAbsolute(p) && inside(path.resolve(p)))) return undefined;
  if ([workspaceMount, iwsMount].some(inside)) return undefined;
  return dir;
}

/**
 * The environment as the workspace sees it: values naming the content directory by its host path (such as
 * WORKBAY_REPO_ROOT) are rewritten to /workspace, HOME is the content unless the spec sets one, and the service
 * socket is announced when the service dir is mounted.
 */
export function sandboxEnv(
  env: Readonly<Record<string, string>>,
  contentDir: string,
  iwsDir: string | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    out[name] =
      value === contentDir
        ? workspaceMount
        : value.startsWith(`${contentDir}/`)
          ? `${workspaceMount}${value.slice(contentDir.length)}`
          : value;
  }
  out['HOME'] ??= workspaceMount;
  if (iwsDir) out[iwsSocketEnv] = `${iwsMount}/daemon.sock`;
  else delete out[iwsSocketEnv];
  return out;
}
