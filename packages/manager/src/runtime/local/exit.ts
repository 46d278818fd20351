import { constants as osConstants } from 'node:os';

/** The exit status of a child as a shell would report it (128 + signal number when killed). */
export function childExitCode(
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined,
): number | undefined {
  if (!exit) return undefined;
  if (exit.code !== null) return exit.code;
  if (exit.signal) return 128 + (osConstants.signals[exit.signal] ?? 0);
  return undefined;
}

export function signalName(n: number): string {
  const entry = Object.entries(osConstants.signals).find(([, v]) => v === n);
  return entry ? entry[0] : `signal ${n}`;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

/** Why a workspace ended, for `conditions.failed`; undefined for a clean exit. */
export function describeExit(options: {
  readonly exitCode: number | undefined;
  readonly oomKills: number;
  readonly memoryLimitBytes?: number;
  readonly command: readonly string[];
  readonly lastLogLine?: string;
}): string | undefined {
  const { exitCode, oomKills } = options;
  if (oomKills > 0) {
    const limit = options.memoryLimitBytes !== undefined ? ` of ${formatBytes(options.memoryLimitBytes)}` : '';
    return `out of memory: the workspace exceeded its memory limit${limit} and the kernel's OOM killer ended it (exit code ${exitCode ?? 'unknown'})`;
  }
  if (exitCode === undefined) {
    return 'the workspace process ended while nobody watched it; its exit status is unknown';
  }
  if (exitCode === 0) return undefined;
  const tail = options.lastLogLine ? `: ${options.lastLogLine}` : '';
  if (exitCode === 125) return `the workspace sandbox could not be set up${tail}`;
  if (exitCode === 126 || exitCode === 127) {
    return `the workspace command '${options.command[0] ?? ''}' could not be run (exit code ${exitCode})${tail}`;
  }
  if (exitCode > 128) {
    return `the workspace process was killed by ${signalName(exitCode - 128)} (exit code ${exitCode})${tail}`;
  }
  return `the workspace process exited with code ${exitCode}${tail}`;
}
