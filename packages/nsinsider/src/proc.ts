import { readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { errnoCode, NsinsiderError, NsinsiderValidationError } from './errors.js';
import type { IdMapping, NamespaceKind } from './types.js';

/**
 * Host-side /proc work. No namespace needs entering: the caller's /proc sees every process, and the
 * kernel checks the id-map write against the writer's capabilities.
 */

/** The kernel accepts at most this many lines in a uid_map/gid_map (since Linux 4.15). */
export const MAX_ID_MAP_LINES = 340;

/**
 * A positive integer from a /proc file (a sysctl such as `nf_conntrack_max`), or undefined when the file cannot be read
 * or holds anything else: callers then keep their configured value.
 */
export async function readProcCount(file: string): Promise<number | undefined> {
  try {
    const value = Number((await readFile(file, 'utf8')).trim());
    return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  } catch {
    // Deliberate: no such file (a module not loaded yet, another kernel, a restricted /proc); said by undefined.
    return undefined;
  }
}
const U32 = 2 ** 32;

interface ProcStatus {
  ppid: number;
  nsPids: number[];
}

async function readStatus(procRoot: string, pid: number): Promise<ProcStatus | undefined> {
  let text: string;
  try {
    text = await readFile(`${procRoot}/${pid}/status`, 'utf8');
  } catch {
    // ENOENT/ESRCH: the process is gone; callers skip it.
    return undefined;
  }
  const field = (name: string): string | undefined =>
    text
      .split('\n')
      .find((l) => l.startsWith(`${name}:`))
      ?.slice(name.length + 1)
      .trim();
  const nsPids = (field('NSpid') ?? '').split(/\s+/).filter(Boolean).map(Number);
  return { ppid: Number(field('PPid') ?? 0), nsPids: nsPids.length > 0 ? nsPids : [pid] };
}

async function pidNamespace(procRoot: string, pid: number | 'self'): Promise<string | undefined> {
  try {
    return await readlink(`${procRoot}/${pid}/ns/pid`);
  } catch {
    // ENOENT/ESRCH: the process is gone; callers treat an unknown namespace as not the one they look for.
    return undefined;
  }
}

async function isDescendant(procRoot: string, pid: number, ancestor: number): Promise<boolean> {
  let cur = pid;
  for (let i = 0; i < 4096 && cur > 1; i++) {
    const st = await readStatus(procRoot, cur);
    if (!st) return false;
    if (st.ppid === ancestor) return true;
    cur = st.ppid;
  }
  return false;
}

/** Whether `pid` runs (zombies have no namespaces left to enter). @internal */
export async function processAlive(procRoot: string, pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`${procRoot}/${pid}/stat`, 'utf8');
    // The state follows the parenthesised command name.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    // ENOENT/ESRCH: the process is gone.
    return false;
  }
}

/** See {@link NamespaceOps.resolveHostPid}. */
export async function resolveHostPid(nsPid: number, anchorPid: number, procRoot = '/proc'): Promise<number> {
  const op = 'resolve-host-pid';
  for (const [field, v] of [
    ['nsPid', nsPid],
    ['anchorPid', anchorPid],
  ] as const) {
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new NsinsiderValidationError(op, field, `must be a positive integer pid, got ${String(v)}`);
    }
  }
  const anchor = await readStatus(procRoot, anchorPid);
  const anchorNs = await pidNamespace(procRoot, anchorPid);
  if (!anchor || !anchorNs) {
    throw new NsinsiderError(`anchor process ${anchorPid} does not exist`, { op, kind: 'not-found', code: 'ESRCH' });
  }
  const anchorSharesOurs = anchorNs === (await pidNamespace(procRoot, 'self'));
  // The anchor's pid namespace sits at this depth of every NSpid list below it.
  const level = anchor.nsPids.length - 1;
  if (nsPid === anchor.nsPids[level]) {
    return anchorPid;
  }
  const entries = await readdir(procRoot);
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const st = await readStatus(procRoot, pid);
    if (!st || st.nsPids.length <= level || st.nsPids[level] !== nsPid) continue;
    // Same depth is not enough: sibling namespaces (other workspaces) reuse pid numbers. And an anchor
    // that shares our own pid namespace owns only its descendants, not every process of the host.
    const sameNs = !anchorSharesOurs && (await pidNamespace(procRoot, pid)) === anchorNs;
    if (sameNs || (await isDescendant(procRoot, pid, anchorPid))) {
      return pid;
    }
  }
  throw new NsinsiderError(`no process ${nsPid} in the pid namespace of ${anchorPid}`, {
    op,
    kind: 'not-found',
    code: 'ESRCH',
  });
}

/** Checks the shape of an id map (sizes, overflow, overlaps); policy (which host ids) is the caller's. */
export function validateIdMappings(op: string, mappings: readonly IdMapping[]): void {
  if (mappings.length === 0) {
    throw new NsinsiderValidationError(op, 'mappings', 'must contain at least one mapping');
  }
  if (mappings.length > MAX_ID_MAP_LINES) {
    throw new NsinsiderValidationError(op, 'mappings', `must have at most ${MAX_ID_MAP_LINES} lines`);
  }
  mappings.forEach((m, i) => {
    for (const key of ['containerId', 'hostId', 'size'] as const) {
      const v = m[key];
      if (!Number.isSafeInteger(v) || v < 0 || v >= U32) {
        throw new NsinsiderValidationError(op, `mappings[${i}].${key}`, `must be a 32-bit unsigned integer`);
      }
    }
    if (m.size === 0) {
      throw new NsinsiderValidationError(op, `mappings[${i}].size`, 'must be at least 1');
    }
    if (m.containerId + m.size > U32 || m.hostId + m.size > U32) {
      throw new NsinsiderValidationError(op, `mappings[${i}].size`, 'range runs past 2^32');
    }
  });
  for (const key of ['containerId', 'hostId'] as const) {
    const sorted = mappings.map((m, i) => ({ m, i })).sort((a, b) => a.m[key] - b.m[key]);
    for (let j = 1; j < sorted.length; j++) {
      const prev = sorted[j - 1]!;
      if (prev.m[key] + prev.m.size > sorted[j]!.m[key]) {
        throw new NsinsiderValidationError(
          op,
          `mappings[${sorted[j]!.i}].${key}`,
          `overlaps the ${key} range of mappings[${prev.i}]`,
        );
      }
    }
  }
}

/** See {@link NamespaceOps.writeIdMapping}. */
export async function writeIdMapping(
  pid: number,
  kind: 'uid' | 'gid',
  mappings: readonly IdMapping[],
  procRoot = '/proc',
): Promise<void> {
  const op = 'write-id-mapping';
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw new NsinsiderValidationError(op, 'pid', `must be a positive integer pid, got ${String(pid)}`);
  }
  if (kind !== 'uid' && kind !== 'gid') {
    throw new NsinsiderValidationError(op, 'kind', "must be 'uid' or 'gid'");
  }
  validateIdMappings(op, mappings);
  const text = mappings.map((m) => `${m.containerId} ${m.hostId} ${m.size}\n`).join('');
  const path = `${procRoot}/${pid}/${kind}_map`;
  try {
    // One write(2): the kernel rejects maps split over several writes.
    await writeFile(path, text);
  } catch (e) {
    const code = errnoCode(e);
    throw new NsinsiderError(
      code === 'EPERM'
        ? `cannot write ${path}: the map was already written or the mapping is not permitted`
        : `cannot write ${path}: ${(e as Error).message}`,
      { op, kind: code === 'ENOENT' ? 'not-found' : 'failed', code, cause: e },
    );
  }
}

const nsFiles: Record<NamespaceKind, string> = {
  mount: 'mnt',
  net: 'net',
  pid: 'pid',
  uts: 'uts',
  ipc: 'ipc',
  user: 'user',
};

/** nsenter's option for entering each kind of namespace. @internal */
export const nsenterFlags: Record<NamespaceKind, string> = {
  mount: '--mount',
  net: '--net',
  pid: '--pid',
  uts: '--uts',
  ipc: '--ipc',
  user: '--user',
};

/** See {@link NamespaceOps.namespaceId}. */
export async function namespaceId(pid: number, kind: NamespaceKind, procRoot = '/proc'): Promise<string> {
  const op = 'namespace-id';
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw new NsinsiderValidationError(op, 'pid', `must be a positive integer pid, got ${String(pid)}`);
  }
  if (!Object.prototype.hasOwnProperty.call(nsFiles, kind)) {
    throw new NsinsiderValidationError(op, 'kind', `must be one of ${Object.keys(nsFiles).join(', ')}`);
  }
  try {
    return await readlink(`${procRoot}/${pid}/ns/${nsFiles[kind]}`);
  } catch (e) {
    throw new NsinsiderError(`process ${pid} does not exist`, {
      op,
      kind: 'not-found',
      code: errnoCode(e) ?? 'ESRCH',
      cause: e,
    });
  }
}
