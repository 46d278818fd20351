// The wrapper spawner (spawner.ts): the manager's wrappers are forked by a helper process; one that dies leaves its
// wrappers running, watched by polling, and the next start has a new helper. Real processes through LocalRuntime.
import { readdir, readFile } from 'node:fs/promises';
import { runCommand } from '@workbay/nsinsider/exec';
import { describe, expect, it } from 'vitest';
import {
  alive,
  contentDir,
  newRuntime,
  nextEvent,
  runtimes,
  shellImages,
  spec,
  useLocalRuntimeFixtures,
} from '../../test-support/local-runtime.js';
import { readProcStat } from './proc.js';

useLocalRuntimeFixtures();

const images = shellImages({ wait: 'exec sleep 300', quick: 'exit 3' });

/** This process's spawner helpers: children of this process running spawner-main.js. */
async function spawners(): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || (await readProcStat(Number(name)))?.ppid !== process.pid) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes('spawner-main.js')) found.push(Number(name));
  }
  return found;
}

/** The parent pid of `pid` (undefined once it is gone). */
async function parentOf(pid: number): Promise<number | undefined> {
  return (await readProcStat(pid))?.ppid;
}

describe('LocalRuntime: the wrapper spawner', () => {
  it('forks the wrappers in a helper process, not in the manager, and reports their exit status', async () => {
    const runtime = await newRuntime({ isolation: 'none', images });
    const started = await runtime.start(spec({ contentDir: await contentDir(), image: 'wait' }));
    // Its parent is a spawner helper (a helper of an earlier test may still be on its way out: not counted).
    const parent = await parentOf(started.pid!);
    expect(parent).not.toBe(process.pid);
    expect(await spawners()).toContain(parent);
    const quick = spec({ contentDir: await contentDir(), image: 'quick' });
    const exited = nextEvent(runtime, 'exited', quick.instanceId);
    await runtime.start(quick);
    expect((await exited).state.exitCode).toBe(3);
  });

  it('leaves the wrappers running when the helper dies, sees their exit by polling, and starts a new helper', async () => {
    const runtime = await newRuntime({ isolation: 'none', images, exitPollIntervalMs: 50 });
    const s = spec({ contentDir: await contentDir(), image: 'wait' });
    const ready = nextEvent(runtime, 'ready', s.instanceId);
    const started = await runtime.start(s);
    const pid = started.pid!;
    await ready;
    const helper = await parentOf(pid);
    expect(await spawners()).toContain(helper);
    process.kill(helper!, 'SIGKILL');
    await expect.poll(() => alive(helper!), { timeout: 5_000 }).toBe(false);
    // The workspace runs on, no longer anyone's child here.
    await expect.poll(() => parentOf(pid), { timeout: 5_000 }).not.toBe(helper);
    expect(await alive(pid)).toBe(true);

    // Its stop still ends in an exit event, found by polling (not after the kill timeout, as for a stuck process).
    const exited = nextEvent(runtime, 'exited', s.instanceId, 5_000);
    await runtime.stop(s.instanceId, { gracePeriodMs: 1_000 });
    await exited;
    await expect.poll(() => alive(pid), { timeout: 5_000 }).toBe(false);

    // The next start has a helper again.
    const next = await runtime.start(spec({ contentDir: await contentDir(), image: 'wait' }));
    const nextHelper = await parentOf(next.pid!);
    expect(nextHelper).not.toBe(helper);
    expect(await spawners()).toContain(nextHelper);
  });

  it("runs nsinsider's commands (the networks' ip, nft, nsenter) in the helper while the runtime is open", async () => {
    const runtime = await newRuntime({ isolation: 'none', images });
    const routed = await runCommand('/bin/sh', ['-c', 'echo $PPID']);
    const helper = Number(routed.stdout.trim());
    expect(helper).not.toBe(process.pid);
    expect(await spawners()).toContain(helper);
    // A command that cannot start says why, as when it is forked here.
    const missing = await runCommand('/nonexistent/tool', []);
    expect(missing.spawnError?.code).toBe('ENOENT');
    await runtime.close();
    const local = await runCommand('/bin/sh', ['-c', 'echo $PPID']);
    expect(Number(local.stdout.trim())).toBe(process.pid);
  });

  it('ends its helper when the runtime closes; the running wrappers stay', async () => {
    const runtime = await newRuntime({ isolation: 'none', images });
    const s = spec({ contentDir: await contentDir(), image: 'wait' });
    const started = await runtime.start(s);
    const pid = started.pid!;
    const helper = await parentOf(pid);
    expect(await spawners()).toContain(helper);
    await runtime.close();
    await expect.poll(() => alive(helper!), { timeout: 5_000 }).toBe(false);
    expect(await alive(pid)).toBe(true);
    // A closed runtime stops nothing: the workspace is ended here, and the fixtures leave the runtime alone.
    runtimes.splice(runtimes.indexOf(runtime), 1);
    process.kill(-pid, 'SIGKILL');
    await expect.poll(() => alive(pid), { timeout: 5_000 }).toBe(false);
  });
});
