import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

// Children still running when this process exits are killed, and their temporary directories removed, so a failed
// or interrupted test leaves neither an etcd nor an API server behind.
const live = new Set<ServerProcess>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const server of live) server.killNow();
    for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** Registers a temporary directory to be removed at process exit (unless {@link releaseTempDir} ran first). */
export function trackTempDir(dir: string): void {
  installExitHook();
  liveDirs.add(dir);
}

export function releaseTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
}

// With setpriv the kernel kills the server when this process dies without running its exit hook (SIGKILL, crash).
let setprivAvailable: boolean | undefined;
function hasSetpriv(): boolean {
  setprivAvailable ??= spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true'], { stdio: 'ignore' }).status === 0;
  return setprivAvailable;
}

const logLimit = 64 * 1024;

/** One server child process with a bounded log; `stop()` is SIGTERM, then SIGKILL after `killAfterMs`. */
export class ServerProcess {
  private log = '';
  private readonly child: ChildProcess;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private spawnError: Error | undefined;
  readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    binary: string,
    args: readonly string[],
  ) {
    installExitHook();
    const [command, argv] = hasSetpriv()
      ? ['setpriv', ['--pdeathsig', 'KILL', '--', binary, ...args]]
      : [binary, [...args]];
    this.child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const append = (chunk: Buffer): void => {
      this.log = (this.log + chunk.toString('utf8')).slice(-logLimit);
    };
    this.child.stdout?.on('data', append);
    this.child.stderr?.on('data', append);
    live.add(this);
    this.exited = new Promise<void>((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        live.delete(this);
        resolve();
      });
      // A child that cannot be spawned emits 'error' and never 'exit'.
      this.child.once('error', (error) => {
        this.spawnError = error;
        live.delete(this);
        resolve();
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Why the process is gone, or undefined while it runs. */
  deathReason(): string | undefined {
    if (this.spawnError) return `could not be started: ${this.spawnError.message}`;
    if (this.exitInfo) return `exited (code ${this.exitInfo.code}, signal ${this.exitInfo.signal})`;
    return undefined;
  }

  logTail(chars = 4000): string {
    return this.log.slice(-chars);
  }

  killNow(): void {
    try {
      this.child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }

  async stop(killAfterMs = 10_000): Promise<void> {
    if (this.deathReason()) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.killNow(), killAfterMs);
    await this.exited;
    clearTimeout(timer);
  }
}
