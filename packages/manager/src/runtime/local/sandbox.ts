import type { Stats } from 'node:fs';
import { lstatSync, readdirSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import path from 'node:path';
import { workspaceUid } from './sandbox-init.js';

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

/** Where a host may keep directories anyone can write, one level deep (beside the always private /tmp family). */
const writableParents = [
  '/',
  '/run',
  '/var',
  '/var/lib',
  '/var/cache',
  '/var/spool',
  '/var/local',
  '/var/mail',
  '/dev',
  '/srv',
  '/opt',
  '/home',
  '/mnt',
  '/media',
  '/usr/local',
  '/etc',
];

/**
 * World-writable host directories (mode o+w, not links) in the usual places, such as `/run/lock` or `/dev/mqueue`:
 * the workspace's uid may write them like anyone, so without a private tmpfs of its own every workspace would share
 * them with the others and with the host, and what it leaves there would outlive it (a channel between owners, and
 * disk outside its quota). A few directory reads: the runtime looks once per process ({@link hostSharedWritableDirs}).
 */
export function sharedWritableDirs(parents: readonly string[] = writableParents): string[] {
  const found: string[] = [];
  for (const parent of parents) {
    let names: string[];
    try {
      names = readdirSync(parent);
    } catch {
      continue; // Not on this host (or not readable): nothing there to cover.
    }
    for (const name of [...names.map((n) => path.join(parent, n)), parent]) {
      const st = (() => {
        try {
          return lstatSync(name);
        } catch {
          return undefined; // Gone since the listing.
        }
      })();
      if (st?.isDirectory() && (st.mode & 0o002) !== 0) found.push(name);
    }
  }
  return [...new Set(found)].sort();
}

let hostShared: string[] | undefined;

/** {@link sharedWritableDirs} of this host, looked up on first use. */
export function hostSharedWritableDirs(): readonly string[] {
  hostShared ??= sharedWritableDirs();
  return hostShared;
}

/**
 * Directories that get a private, writable tmpfs inside the workspace: /tmp, /var/tmp and /dev/shm, and the host's
 * other world-writable directories (`shared`, from {@link sharedWritableDirs}) except system directories, ones that
 * hold what the workspace must run (`needed`) or the workspace's own mounts, and ones below another private one.
 */
export function privateDirsFor(shared: readonly string[], needed: readonly string[]): string[] {
  const inside = (dir: string, p: string): boolean => p === dir || p.startsWith(`${dir}/`);
  const usable = shared
    .map((d) => path.resolve(d))
    .filter((dir) => !neverHidden.includes(dir))
    .filter((dir) => !needed.some((p) => path.isAbsolute(p) && inside(dir, path.resolve(p))))
    .filter((dir) => ![workspaceMount, iwsMount].some((m) => inside(dir, m) || inside(m, dir)));
  const all = [...new Set([...coveredAnyway, ...usable])];
  return all.filter((dir) => !all.some((other) => other !== dir && inside(other, dir)));
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
