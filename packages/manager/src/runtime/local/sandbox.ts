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
  // A probe: no such directory (or not ours to see) means the workspace has no IWS socket directory.
  const st = await lstat(dir).catch(() => undefined);
  return st?.isDirectory() ? dir : undefined;
}

// Covering any of these (or an ancestor of what the workspace must run) would break the sandbox itself.
const neverHidden = ['/', '/usr', '/bin', '/sbin', '/lib', '/lib64', '/etc', '/proc', '/sys', '/dev', '/run', '/var'];
const coveredAnyway = ['/tmp', '/var/tmp', '/dev/shm'];

/**
 * Host directories to cover with an empty tmpfs inside the workspace: the one holding every workspace's content
 * (the daemon's working area: neighbours' content and service sockets) and the runtime's state directory
 * (records, every workspace's log). Leaves out a directory whose covering would hide
 * something the workspace needs (`needed`: its command, node, the default workspace script) or a system directory,
 * and one the private /tmp covers anyway; drops any that lies below another.
 */
export function hideDirsFor(candidates: readonly string[], needed: readonly string[]): string[] {
  const inside = (dir: string, p: string): boolean => p === dir || p.startsWith(`${dir}/`);
  const usable = candidates
    .map((c) => path.resolve(c))
    .filter((dir) => !neverHidden.includes(dir) && !coveredAnyway.some((c) => inside(c, dir)))
    .filter((dir) => !needed.some((p) => path.isAbsolute(p) && inside(dir, path.resolve(p))))
    .filter((dir) => ![workspaceMount, iwsMount].some((m) => inside(dir, m)));
  const unique = [...new Set(usable)];
  return unique.filter((dir) => !unique.some((other) => other !== dir && inside(other, dir))).sort();
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
