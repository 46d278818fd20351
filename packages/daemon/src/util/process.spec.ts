import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runProcess } from './process.js';

/** Whether a process with this pid exists (and is not a zombie waiting for its parent). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return check();
}

describe('runProcess', () => {
  it('collects output and the exit code', async () => {
    const result = await runProcess('sh', ['-c', 'echo out; echo err >&2; exit 3']);
    expect(result).toEqual({ code: 3, signal: null, stdout: 'out\n', stderr: 'err\n' });
  });

  it('kills the whole process group when aborted, not only the program it started', async () => {
    // The `sleep` stands for git-remote-http under git: it holds the output open and would outlive a kill of its
    // parent alone (red team round 12, G2).
    const controller = new AbortController();
    const run = runProcess('sh', ['-c', 'sleep 302 & wait'], { signal: controller.signal });
    expect(await waitUntil(() => sleepers('302').length === 1, 5_000)).toBe(true);
    const [pid] = sleepers('302');
    controller.abort(new Error('stopped'));
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(await waitUntil(() => !alive(pid!), 5_000)).toBe(true);
  });

  it('does not wait for processes the program left holding its output', async () => {
    const started = Date.now();
    const result = await runProcess('sh', ['-c', 'sleep 301 & echo done']);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe('done\n');
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(await waitUntil(() => sleepers('301').length === 0, 5_000)).toBe(true);
  });

  it('rejects at once when the signal is already aborted', async () => {
    await expect(runProcess('true', [], { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
  });
});

/** Pids of `sleep <seconds>` processes of this test (descendants of this process). */
function sleepers(seconds: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (cmdline[0] === 'sleep' && cmdline[1] === seconds && state !== 'Z') found.push(Number(entry));
    } catch {
      // Deliberate: the process ended while we looked.
    }
  }
  return found;
}
