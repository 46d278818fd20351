import { readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedPreconditionError } from '@workbay/api';

/** Where a workspace's processes are, as the in-workspace service needs it. */
export interface WorkspaceProcessSource {
  /** Host pid of the workspace's topmost process, undefined while none runs. */
  initPid(): Promise<number | undefined>;
  /** The workspace's own cgroup relative to the hierarchy roots, undefined when it has none. */
  cgroupPath(): Promise<string | undefined>;
}

export interface WorkspaceProcessLocatorOptions {
  /** The workspace's host uid: the owner of its content directory. */
  readonly uid: number;
  readonly instanceId: string;
  /** Which hierarchy `/proc/<pid>/cgroup` is read from (default v1). */
  readonly cgroupVersion?: 'v1' | 'v2';
  readonly procRoot?: string;
  /** The daemon's own uid (default `process.getuid()`). */
  readonly selfUid?: number;
  /** The daemon's own pid, whose cgroup a workspace cgroup must never contain (default `process.pid`). */
  readonly selfPid?: number;
  /** How long "no process" is remembered before /proc is scanned again (default 1 s). */
  readonly rescanMs?: number;
  readonly now?: () => number;
}

interface ProcStatus {
  readonly uid: number;
  readonly ppid: number;
}

interface Found {
  readonly pid: number;
  readonly startTime: string;
  cgroup?: string | null;
  ownMountNs?: boolean;
}

/**
 * Finds a workspace's processes on the host by its host uid. The isolation contract gives every workspace a
 * host uid of its own (the owner of its content directory, unique among the daemon's live workspaces) and runs
 * its processes with it (33333 inside its user namespace maps to it), so a process with that real uid is that
 * workspace's, and the topmost of them (its parent has another uid) is the anchor that pids in requests are
 * resolved against. Nothing a request says chooses the workspace.
 *
 * uid 0 and the daemon's own uid identify no workspace (content owned by them means "not isolated"): then no
 * process is found and pid-based calls answer FAILED_PRECONDITION.
 */
export class WorkspaceProcessLocator implements WorkspaceProcessSource {
  private readonly procRoot: string;
  private readonly enabled: boolean;
  private found: Found | undefined;
  private missingSince: number | undefined;
  private scanning: Promise<Found | undefined> | undefined;

  constructor(private readonly options: WorkspaceProcessLocatorOptions) {
    this.procRoot = options.procRoot ?? '/proc';
    const selfUid = options.selfUid ?? process.getuid?.() ?? 0;
    this.enabled = Number.isSafeInteger(options.uid) && options.uid > 0 && options.uid !== selfUid;
  }

  /**
   * Throws FAILED_PRECONDITION when the workspace's process shares the daemon's mount namespace: mounts made
   * "in the workspace" (MountProc, MountSysfs, /dev) would then land on the host.
   */
  async initPid(): Promise<number | undefined> {
    const found = await this.locate();
    if (!found) return undefined;
    if (found.ownMountNs === undefined) {
      // Probes of /proc: an unreadable link (process gone, no /proc) means "not known to be its own namespace".
      const [theirs, ours] = await Promise.all([
        readlink(join(this.procRoot, String(found.pid), 'ns', 'mnt')).catch(() => undefined),
        readlink(join(this.procRoot, String(this.options.selfPid ?? process.pid), 'ns', 'mnt')).catch(() => undefined),
      ]);
      found.ownMountNs = theirs !== undefined && theirs !== ours;
    }
    if (!found.ownMountNs) {
      throw new FailedPreconditionError(
        `the process of workspace ${this.options.instanceId} shares the daemon's mount namespace (it is not isolated)`,
      );
    }
    return found.pid;
  }

  /**
   * The cgroup of the workspace's init, cut at the segment named by the instance id: runtimes name a workspace's
   * cgroup by its instance id (the local runtime's `<cgroupParent>/<runtime tag>-<instanceId>`, see
   * {@link namesInstance}), and EvacuateCGroup later moves
   * the processes below it (`<id>/workspace/user`). A cgroup without that segment, or one that holds the daemon
   * itself (the root, a shared parent), is not the workspace's own: moving its processes or reporting its usage
   * would touch the host.
   */
  async cgroupPath(): Promise<string | undefined> {
    const found = await this.locate();
    if (!found) return undefined;
    if (found.cgroup === undefined) {
      const path = await this.cgroupOf(found.pid);
      found.cgroup = path !== undefined ? await this.ownCgroup(path) : null;
    }
    return found.cgroup ?? undefined;
  }

  private async ownCgroup(path: string): Promise<string | null> {
    const segments = path.split('/').filter(Boolean);
    const at = segments.findLastIndex((segment) => namesInstance(segment, this.options.instanceId));
    if (at < 0) return null;
    const own = segments.slice(0, at + 1).join('/');
    const daemon = (await this.cgroupOf(this.options.selfPid ?? process.pid)) ?? '';
    const daemonRel = daemon.split('/').filter(Boolean).join('/');
    if (daemonRel === own || daemonRel.startsWith(`${own}/`)) return null;
    return own;
  }

  private async locate(): Promise<Found | undefined> {
    if (!this.enabled) return undefined;
    if (this.found && (await this.stillValid(this.found))) return this.found;
    this.found = undefined;
    const now = (this.options.now ?? Date.now)();
    // A workspace without a process asking again and again costs one /proc scan per interval, not one per call.
    if (this.missingSince !== undefined && now - this.missingSince < (this.options.rescanMs ?? 1000)) return undefined;
    this.scanning ??= this.scan().finally(() => (this.scanning = undefined));
    const found = await this.scanning;
    this.found = found;
    this.missingSince = found ? undefined : now;
    return found;
  }

  private async stillValid(found: Found): Promise<boolean> {
    // A recycled pid has another start time; a process that changed its uid is no longer the workspace's.
    const [status, startTime] = await Promise.all([this.status(found.pid), this.startTime(found.pid)]);
    return status?.uid === this.options.uid && startTime === found.startTime;
  }

  private async scan(): Promise<Found | undefined> {
    // Deliberate: no /proc to read means no workspace process can be found; callers answer "not running".
    const names = await readdir(this.procRoot).catch(() => [] as string[]);
    const ours = new Map<number, ProcStatus>();
    for (const name of names) {
      if (!/^\d+$/.test(name)) continue;
      const status = await this.status(Number(name));
      if (status?.uid === this.options.uid) ours.set(Number(name), status);
    }
    let best: { found: Found; start: number; named: boolean } | undefined;
    for (const [pid, status] of ours) {
      if (ours.has(status.ppid)) continue;
      const startTime = await this.startTime(pid);
      if (startTime === undefined) continue;
      // A process in a cgroup named by the instance id beats one that is not (the uid alone is unique only among
      // one daemon's workspaces); then the oldest wins (a daemonized child re-parented elsewhere is younger).
      const cgroup = await this.cgroupOf(pid);
      const named =
        cgroup !== undefined && cgroup.split('/').some((segment) => namesInstance(segment, this.options.instanceId));
      const start = Number(startTime);
      if (!best || (named && !best.named) || (named === best.named && start < best.start)) {
        best = { found: { pid, startTime }, start, named };
      }
    }
    return best?.found;
  }

  private async status(pid: number): Promise<ProcStatus | undefined> {
    // ENOENT/ESRCH: the process is gone; callers treat undefined as "not this workspace's process".
    const text = await readFile(join(this.procRoot, String(pid), 'status'), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    const uid = /^Uid:\s+(\d+)/m.exec(text);
    const ppid = /^PPid:\s+(\d+)/m.exec(text);
    if (!uid || !ppid) return undefined;
    return { uid: Number(uid[1]), ppid: Number(ppid[1]) };
  }

  private async startTime(pid: number): Promise<string | undefined> {
    // ENOENT/ESRCH: the process is gone; callers treat undefined as "not this workspace's process".
    const text = await readFile(join(this.procRoot, String(pid), 'stat'), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  }

  private async cgroupOf(pid: number): Promise<string | undefined> {
    // ENOENT/ESRCH: the process is gone; callers treat undefined as "not this workspace's process".
    const text = await readFile(join(this.procRoot, String(pid), 'cgroup'), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    const byController = new Map<string, string>();
    for (const line of text.split('\n')) {
      const first = line.indexOf(':');
      const second = line.indexOf(':', first + 1);
      if (first < 0 || second < 0) continue;
      const path = line.slice(second + 1);
      if (this.options.cgroupVersion === 'v2') {
        if (line.startsWith('0::')) return path;
        continue;
      }
      for (const c of line.slice(first + 1, second).split(',')) byController.set(c, path);
    }
    // nsinsider's v1 cgroups use one path in every hierarchy; memory (else cpu) is the one that holds usage.
    return byController.get('memory') ?? byController.get('cpu');
  }
}

/**
 * Whether a cgroup path segment is named by the instance: the id itself, or `<tag>-<id>` with the local runtime's
 * 12-hex-digit tag (it prefixes it, so that two runtimes' leftovers are told apart). Cgroups are made by runtimes as
 * root; a workspace cannot name one on the host.
 */
function namesInstance(segment: string, instanceId: string): boolean {
  return segment === instanceId || (segment.slice(13) === instanceId && /^[0-9a-f]{12}-/.test(segment));
}
