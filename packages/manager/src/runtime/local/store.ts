import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { ReadinessConfig } from './config.js';
import { rotatedLogFile } from './log-cap.js';
import type { WorkspaceNet } from './network.js';

/** A workspace's cgroup as recorded: its path below the hierarchy roots and its directories (one per v1 hierarchy). */
export interface RecordedCgroup {
  /** Relative to the hierarchy roots; absent in records written before the cgroup code moved to nsinsider. */
  readonly path?: string;
  readonly dirs: readonly string[];
}

/** What the runtime remembers about one instance on disk, so that a new runtime instance can adopt it. */
export interface InstanceRecord {
  readonly version: 1;
  readonly instanceId: string;
  readonly workspaceId: string;
  readonly owner: string;
  readonly image: string;
  readonly className: string;
  readonly command: readonly string[];
  /** The wrapper process (leader of the workspace's process group). */
  readonly pid: number;
  readonly pgid: number;
  /** /proc/<pid>/stat starttime: a pid with another start time is somebody else's process. */
  readonly startTime?: string;
  /** Runs isolated: own user, network, pid, mount and uts namespaces, as `hostUid`/`hostGid` (33333 inside). */
  readonly namespaced: boolean;
  readonly hostUid?: number;
  readonly hostGid?: number;
  /** The isolated workspace's network: where its ports are, and what to take down when it is gone. */
  readonly net?: WorkspaceNet;
  /** Why it is not (fully) isolated, for its status. */
  readonly notice?: string;
  /** Its log writer caps its log (log-writer.ts); absent (also in records of older runtimes): the LogCap does. */
  readonly logWriter?: boolean;
  readonly cgroup?: RecordedCgroup;
  readonly memoryLimitBytes?: number;
  readonly host: string;
  readonly idePort: number;
  /** Spec port → host port (identity when isolated: the workspace has its own address). */
  readonly portMap: Readonly<Record<string, number>>;
  readonly nodeName: string;
  readonly startedAt: string;
  readonly readiness: ReadinessConfig;
  ready: boolean;
  stopRequested: boolean;
  exit?: { readonly exitCode?: number; readonly failure?: string; readonly at: string };
}

/**
 * One JSON file per instance under `<stateDir>/instances`, each written atomically (temp file, fsync, rename),
 * plus the exit-code file the wrapper writes and the workspace's log.
 */
export class InstanceStore {
  readonly instancesDir: string;
  readonly logsDir: string;
  private readonly chains = new Map<string, Promise<void>>();

  constructor(readonly stateDir: string) {
    this.instancesDir = path.join(stateDir, 'instances');
    this.logsDir = path.join(stateDir, 'logs');
  }

  /** Records and logs are for root's eyes only: a workspace's log may carry whatever it printed. */
  async init(): Promise<void> {
    for (const dir of [this.instancesDir, this.logsDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await chmod(dir, 0o700);
    }
  }

  recordFile(instanceId: string): string {
    return path.join(this.instancesDir, `${instanceId}.json`);
  }

  exitFile(instanceId: string): string {
    return path.join(this.instancesDir, `${instanceId}.exit`);
  }

  logFile(instanceId: string): string {
    return path.join(this.logsDir, `${instanceId}.log`);
  }

  /** Writes are serialized per instance so that an older snapshot never overwrites a newer one. */
  save(record: InstanceRecord): Promise<void> {
    const snapshot = JSON.stringify(record, null, 2);
    const previous = this.chains.get(record.instanceId) ?? Promise.resolve();
    // The previous save's failure was its caller's to handle; this save must still run after it.
    const next = previous.catch(() => undefined).then(() => writeAtomic(this.recordFile(record.instanceId), snapshot));
    this.chains.set(record.instanceId, next);
    return next;
  }

  async loadAll(): Promise<{ records: InstanceRecord[]; broken: string[] }> {
    const records: InstanceRecord[] = [];
    const broken: string[] = [];
    for (const name of await readdir(this.instancesDir)) {
      if (!name.endsWith('.json')) continue;
      const file = path.join(this.instancesDir, name);
      try {
        const record = JSON.parse(await readFile(file, 'utf8')) as InstanceRecord;
        if (record.version !== 1 || typeof record.pid !== 'number' || !record.instanceId) throw new Error('bad record');
        records.push(record);
      } catch {
        // Reported by the caller (loadAll returns it as broken, and the runtime logs each one).
        broken.push(file);
      }
    }
    return { records, broken };
  }

  /** The exit status the wrapper recorded, if it got to write one. */
  async readExitCode(instanceId: string): Promise<number | undefined> {
    // No exit file (the wrapper was killed before it could write one) means an unknown exit code, not an error.
    const text = await readFile(this.exitFile(instanceId), 'utf8').catch(() => undefined);
    const code = text === undefined ? NaN : Number(text.trim());
    return Number.isInteger(code) ? code : undefined;
  }

  /**
   * The last non-empty line of the workspace's output, for failure messages: from the log, or from the part the last
   * rotation kept when the log has nothing since.
   */
  async lastLogLine(instanceId: string): Promise<string | undefined> {
    const file = this.logFile(instanceId);
    return (await lastLineOf(file)) ?? (await lastLineOf(rotatedLogFile(file)));
  }

  async remove(instanceId: string): Promise<void> {
    // Only waits for a pending save to settle; its failure was reported to whoever saved.
    await this.chains.get(instanceId)?.catch(() => undefined);
    this.chains.delete(instanceId);
    const log = this.logFile(instanceId);
    await Promise.all([
      rm(this.recordFile(instanceId), { force: true }),
      rm(this.exitFile(instanceId), { force: true }),
      rm(`${this.exitFile(instanceId)}.tmp`, { force: true }),
      rm(log, { force: true }),
      rm(rotatedLogFile(log), { force: true }),
      rm(`${rotatedLogFile(log)}.tmp`, { force: true }),
    ]);
  }
}

async function lastLineOf(file: string): Promise<string | undefined> {
  let handle;
  try {
    handle = await open(file, 'r');
    const { size } = await handle.stat();
    const length = Math.min(size, 4096);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    const lines = buffer
      .toString('utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    const last = lines.at(-1);
    return last && last.length > 300 ? `${last.slice(0, 300)}…` : last;
  } catch {
    // Deliberate: the last log line only adds context to an exit reason that stands without it.
    return undefined;
  } finally {
    await handle?.close();
  }
}

async function writeAtomic(file: string, content: string): Promise<void> {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  const handle = await open(tmp, 'w', 0o600);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
}
