import { readdir, readFile } from 'node:fs/promises';

/** What /proc/<pid>/stat tells us about one process. */
export interface ProcStat {
  readonly pid: number;
  /** Single-letter state: R, S, D, Z (zombie), T, … */
  readonly state: string;
  readonly ppid: number;
  readonly pgid: number;
  /** Start time in clock ticks after boot: together with the pid it names a process uniquely. */
  readonly startTime: string;
}

/** Parses /proc/<pid>/stat. The command name may contain spaces and parentheses, so fields are counted after the last ')'. */
export function parseProcStat(text: string): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`unexpected /proc stat format: ${text.slice(0, 80)}`);
  const pid = Number(text.slice(0, open).trim());
  // Fields after the command name start at field 3 (state); starttime is field 22.
  const rest = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const state = rest[0] ?? '?';
  const startTime = rest[19];
  if (!Number.isInteger(pid) || startTime === undefined) {
    throw new Error(`unexpected /proc stat format: ${text.slice(0, 80)}`);
  }
  return { pid, state, ppid: Number(rest[1]), pgid: Number(rest[2]), startTime };
}

export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ESRCH')) return undefined;
    throw e;
  }
}

/**
 * True when the process with this pid is still the one that was recorded (same start time) and has not
 * exited. A zombie counts as exited. A different start time means the pid was reused by an unrelated process.
 */
export async function isSameProcessAlive(pid: number, startTime: string | undefined): Promise<boolean> {
  // Without a recorded start time the pid cannot be told from a reused one: never claim it.
  if (startTime === undefined) return false;
  const stat = await readProcStat(pid);
  if (!stat || stat.state === 'Z' || stat.state === 'X') return false;
  return stat.startTime === startTime;
}

/** Sends a signal; returns false when there is no such process (or group). */
export function signal(target: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(target, sig);
    return true;
  } catch (e) {
    if (isErrno(e, 'ESRCH')) return false;
    throw e;
  }
}

/**
 * True while a live (non-zombie) process is in the group. `kill(-pgid, 0)` alone is not enough: orphaned
 * members linger as zombies until the machine's init reaps them, which some inits only do every second or so.
 */
export async function groupAlive(pgid: number): Promise<boolean> {
  if (!signal(-pgid, 0)) return false;
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    // ENOENT: the process exited since the listing, so it is not a live member.
    const stat = await readProcStat(Number(name)).catch(() => undefined);
    if (stat && stat.pgid === pgid && stat.state !== 'Z' && stat.state !== 'X') return true;
  }
  return false;
}

export function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as NodeJS.ErrnoException).code === code;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
