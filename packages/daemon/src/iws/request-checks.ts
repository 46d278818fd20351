import { readFile } from 'node:fs/promises';
import { FailedPreconditionError, InvalidArgumentError, isWorkbayError, NotFoundError } from '@workbay/api';
import type { IdMapping, NamespaceOps } from '@workbay/nsinsider';
import { isNsinsiderError } from '@workbay/nsinsider';
import type { IdRange, IwsConfig, IwsWorkspaceContext } from './context.js';
import { toIwsError } from './error-mapping.js';

/** PATH_MAX: longer targets cannot be mounted anyway. */
const MAX_TARGET_LENGTH = 4096;

/** Top-level directories a mount must not cover (the system the workspace's own programs run from). */
const systemTops = new Set(['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'usr', 'etc', 'dev']);

/** Runs one step of an operation; errors that are not already Workbay errors are mapped by {@link toIwsError}. */
export async function run<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (isWorkbayError(e)) throw e;
    throw toIwsError(e, what);
  }
}

export function assertNamespaceOps(config: IwsConfig, rpc: string): void {
  if (!config.namespaceOps) {
    throw new FailedPreconditionError(
      `${rpc}: namespace operations are turned off on this node (daemon config iws.namespaceOps)`,
    );
  }
}

export function assertPid(pid: number, field: string): void {
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw new InvalidArgumentError(field, `must be a positive pid, got ${String(pid)}`);
  }
}

export function assertTarget(target: string): void {
  if (typeof target !== 'string' || !target.startsWith('/')) {
    throw new InvalidArgumentError('target', 'must be an absolute path');
  }
  if (target.length > MAX_TARGET_LENGTH) {
    throw new InvalidArgumentError('target', `must be at most ${MAX_TARGET_LENGTH} characters`);
  }
  if (target.split('/').includes('..') || target.includes('\0')) {
    throw new InvalidArgumentError('target', "must not contain '..' or NUL");
  }
  // A proc or sysfs over the workspace's own system directories only breaks the workspace (and every later call
  // that must run a program in its namespaces): nested containers mount below a directory of their own.
  const top = target.split('/').filter(Boolean)[0];
  if (top === undefined || systemTops.has(top)) {
    throw new InvalidArgumentError('target', `must not be '/' or under /${top ?? ''} (a system directory)`);
  }
}

export function assertAllowedHostRange(config: IwsConfig, m: IdMapping, i: number): void {
  if (!Number.isSafeInteger(m.size) || m.size <= 0) {
    throw new InvalidArgumentError(`mapping[${i}].size`, 'must be at least 1');
  }
  const within = (r: IdRange): boolean => m.hostId >= r.start && m.hostId + m.size <= r.start + r.size;
  if (m.containerId === 0 && m.size === 1 && within(config.rootIdRange)) return;
  if (config.userIdRanges.some(within)) return;
  const allowed = [config.rootIdRange, ...config.userIdRanges]
    .map((r) => `[${r.start}, ${r.start + r.size})`)
    .join(', ');
  throw new InvalidArgumentError(
    `mapping[${i}].host_id`,
    `host ids ${m.hostId}..${m.hostId + m.size - 1} are outside the allowed ranges ${allowed} (the root range maps container id 0 only)`,
  );
}

/** Confines the pids a request names to one workspace: its pid namespace, its mount namespace, its uid. */
export class WorkspacePids {
  constructor(
    private readonly ops: NamespaceOps,
    private readonly workspace: IwsWorkspaceContext,
  ) {}

  async initPid(): Promise<number> {
    const p = typeof this.workspace.initPid === 'function' ? await this.workspace.initPid() : this.workspace.initPid;
    if (p === undefined || !Number.isSafeInteger(p) || p <= 0) {
      throw new FailedPreconditionError(`workspace ${this.workspace.workspaceId} has no running process`);
    }
    return p;
  }

  /**
   * The workspace's sandbox init: pid 1 of its pid namespace, root in the host's user namespace, in the workspace's
   * own mount namespace (made by the runtime, which the workspace cannot change). Namespace work goes through it,
   * never through a process the workspace runs: one of those can exec itself into a user and mount namespace of its
   * own between a check and the tools entering its namespaces, where `/usr/bin/umount` is the workspace's program
   * (red-team round 2: host root). A workspace without a pid namespace and init of its own has no sandbox to act in.
   */
  async sandboxInit(): Promise<number> {
    const pid = await this.hostPid(1, 'pid');
    const [userNs, pidNs, ownUserNs, ownPidNs] = await Promise.all([
      run('sandbox', () => this.ops.namespaceId({ pid, kind: 'user' })),
      run('sandbox', () => this.ops.namespaceId({ pid, kind: 'pid' })),
      run('sandbox', () => this.ops.namespaceId({ pid: process.pid, kind: 'user' })),
      run('sandbox', () => this.ops.namespaceId({ pid: process.pid, kind: 'pid' })),
    ]);
    if (userNs !== ownUserNs || pidNs === ownPidNs) {
      throw new FailedPreconditionError(
        `workspace ${this.workspace.workspaceId} has no sandbox of its own (namespace operations need an isolated workspace)`,
      );
    }
    return pid;
  }

  mountNsOf(hostPid: number): Promise<string> {
    return run('mount', () => this.ops.namespaceId({ pid: hostPid, kind: 'mount' }));
  }

  /** Translates a pid of the workspace's pid namespace; pids of other workspaces or the host never match. */
  async hostPid(nsPid: number, field: string): Promise<number> {
    const anchorPid = await this.initPid();
    try {
      return await this.ops.resolveHostPid({ nsPid, anchorPid });
    } catch (e) {
      if (isNsinsiderError(e) && e.kind === 'not-found') {
        throw new NotFoundError(`${field} ${nsPid} is not a process of workspace ${this.workspace.workspaceId}`, {
          cause: e,
        });
      }
      throw toIwsError(e, 'resolve pid');
    }
  }

  /**
   * A pid the namespace operations may act on: a process of the workspace ({@link hostPid}), running as the
   * workspace's uid, in the workspace's own mount namespace. The tools run as root inside the target's mount
   * namespace and are looked up there: in one the workspace made (an unprivileged user namespace may mount anything
   * over /usr/bin in its own mount namespace) they would be the workspace's programs, run as root. The uid keeps
   * out root processes that sit in the workspace's pid namespace for a moment (the daemon's own helpers). Returns
   * the sandbox init as well ({@link sandboxInit}), found on the way: the tools act through it.
   */
  async confinedPid(nsPid: number, field: string): Promise<{ hostPid: number; init: number }> {
    const hostPid = await this.hostPid(nsPid, field);
    // Both lookups are made before either is awaited: a rejection of one (its process gone meanwhile) must never be
    // left without a handler while the other is awaited (red-team round 2: that ended the daemon).
    const [own, [init, workspace]] = await Promise.all([
      this.mountNsOf(hostPid),
      this.sandboxInit().then(async (pid) => [pid, await this.mountNsOf(pid)] as const),
    ]);
    if (own !== workspace) {
      throw new FailedPreconditionError(
        `${field} ${nsPid} is in a mount namespace of its own; namespace operations act only in the workspace's own`,
      );
    }
    const expected = this.workspace.uid;
    if (expected !== undefined) {
      const uid = await processUid(hostPid);
      if (uid !== expected) {
        throw new FailedPreconditionError(`${field} ${nsPid} does not run as the workspace's user`);
      }
    }
    return { hostPid, init };
  }
}

/** The real uid of a host process (undefined when it is gone). */
async function processUid(hostPid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${hostPid}/status`, 'utf8');
    const line = /^Uid:\s+(\d+)/m.exec(status);
    return line ? Number(line[1]) : undefined;
  } catch {
    return undefined; // gone: refused as not the workspace's
  }
}
