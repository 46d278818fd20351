import { spawn } from 'node:child_process';

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Set when the command could not be started at all (ENOENT, EACCES, …). */
  spawnError?: NodeJS.ErrnoException;
}

export interface CommandOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * Run the command in its own process group and kill the whole group on timeout. nsenter forks when it
   * enters a pid namespace, and killing only nsenter would leave that child running.
   */
  killGroup?: boolean;
}

/** Runs a command to completion, never throwing, as {@link spawnCommand} does. */
export type CommandSpawner = (file: string, args: readonly string[], options: CommandOptions) => Promise<CommandResult>;

let spawner: CommandSpawner | undefined;

/**
 * Routes every command this library runs through `next` instead of forking it from this process. A fork costs more
 * the more memory the process holds (tens of ms for a few hundred MB, with the event loop stopped): a large process
 * hands its commands to a small one, as @workbay/manager's local runtime does. Returns the undo: back to forking here,
 * unless another route was set since.
 */
export function routeCommands(next: CommandSpawner): () => void {
  spawner = next;
  return () => {
    if (spawner === next) spawner = undefined;
  };
}

/** Runs a command to completion, never throwing: the caller decides what a failure means. */
export function runCommand(
  file: string,
  args: readonly string[],
  options: CommandOptions = {},
): Promise<CommandResult> {
  return spawner ? spawner(file, args, options) : spawnCommand(file, args, options);
}

/** {@link runCommand} in this process, whatever {@link routeCommands} set. */
export function spawnCommand(
  file: string,
  args: readonly string[],
  options: CommandOptions = {},
): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      detached: options.killGroup === true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let spawnError: NodeJS.ErrnoException | undefined;
    let settled = false;
    const finish = (exitCode: number | null, signal: NodeJS.Signals | null): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        exitCode,
        signal,
        timedOut,
        spawnError,
      });
    };
    // First, before anything that can throw: out of file descriptors (EMFILE), spawn gives a child without stdio
    // and reports the failure as an 'error' event, which with no listener would end the whole process.
    child.on('error', (e: NodeJS.ErrnoException) => {
      spawnError = e;
      // Never started: there will be no 'close' to wait for when it had no stdio.
      if (child.pid === undefined && !child.stdout) finish(null, null);
    });
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            if (options.killGroup && child.pid !== undefined) {
              try {
                process.kill(-child.pid, 'SIGKILL');
              } catch {
                // ESRCH: the group is gone (or never formed); the child itself is still killed.
                child.kill('SIGKILL');
              }
            } else {
              child.kill('SIGKILL');
            }
          }, options.timeoutMs);
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    // A child that exits before reading its stdin must not crash us with EPIPE.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(options.input ?? '');
    child.on('close', finish);
  });
}
