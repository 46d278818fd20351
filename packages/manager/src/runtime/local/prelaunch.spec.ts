// The wrapper spawned ahead of a start (prepare, not isolated): nothing of the workspace runs before its start, the
// start uses it, a start that asks for something else gets a wrapper of its own, and a start that never comes (or a
// manager that is gone) leaves nothing behind. Real processes through LocalRuntime.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '@workbay/api';
import { describe, expect, it } from 'vitest';
import {
  alive,
  base,
  newRuntime,
  nextEvent,
  shellImages,
  spec,
  useLocalRuntimeFixtures,
  waitForFile,
} from '../../test-support/local-runtime.js';
import { Prelaunched } from './prelaunch.js';
import { WrapperSpawner } from './spawner.js';
import { wrapperInvocation } from './wrapper.js';

useLocalRuntimeFixtures();

/** Writes where it runs, its `MARK` and whether the gate's variable reached it, then stays. */
const marking = shellImages({
  mark: 'printf "%s %s %s\\n" "$(pwd)" "$MARK" "${WORKBAY_GATE_DIR-none}" > ran.txt; exec sleep 300',
});

/** Pids whose command line names `needle`: the wrappers spawned ahead are found by their gate's variable. */
async function wrappersWaiting(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await import('node:fs/promises').then((fs) => fs.readdir('/proc'))) {
    if (!/^\d+$/.test(name)) continue;
    const environ = await readFile(`/proc/${name}/environ`, 'utf8').catch(() => '');
    if (environ.includes(needle)) pids.push(Number(name));
  }
  return pids;
}

describe('LocalRuntime: the wrapper spawned ahead of a start (not isolated)', () => {
  it('runs nothing before the start, which then uses it, in the content the daemon made meanwhile', async () => {
    const runtime = await newRuntime({ isolation: 'none', images: marking });
    const dir = path.join(base, `ahead-${Date.now()}`);
    const s = spec({ contentDir: dir, image: 'mark', env: { MARK: 'first' } });
    // The content does not exist yet: the wrapper waits outside it.
    await runtime.prepare(s);
    const waiting = await wrappersWaiting(`WORKBAY_GATE_DIR=${dir}`);
    expect(waiting).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await alive(waiting[0]!)).toBe(true);
    await mkdir(dir, { recursive: true });
    expect(existsSync(path.join(dir, 'ran.txt'))).toBe(false);

    const ready = nextEvent(runtime, 'ready', s.instanceId);
    const started = await runtime.start(s);
    await ready;
    expect(started.pid).toBe(waiting[0]);
    // In its content, with its environment, without the gate's variable.
    expect(await waitForFile(path.join(dir, 'ran.txt'))).toBe(`${dir} first none\n`);
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.stop(s.instanceId, { gracePeriodMs: 0 });
    await exited;
  });

  it('gives a start that asks for something else a wrapper of its own, and ends the one spawned ahead', async () => {
    const runtime = await newRuntime({ isolation: 'none', images: marking });
    const dir = path.join(base, `changed-${Date.now()}`);
    const s = spec({ contentDir: dir, image: 'mark', env: { MARK: 'before' } });
    await runtime.prepare(s);
    const [ahead] = await wrappersWaiting(`WORKBAY_GATE_DIR=${dir}`);
    expect(ahead).toBeDefined();
    await mkdir(dir, { recursive: true });
    const ready = nextEvent(runtime, 'ready', s.instanceId);
    const started = await runtime.start({ ...s, env: { MARK: 'after' } });
    await ready;
    expect(started.pid).not.toBe(ahead);
    expect(await waitForFile(path.join(dir, 'ran.txt'))).toBe(`${dir} after none\n`);
    await expect.poll(() => alive(ahead!), { timeout: 5_000 }).toBe(false);
    await runtime.stop(s.instanceId, { gracePeriodMs: 0 });
  });

  it('leaves nothing behind for a start that never comes', async () => {
    const runtime = await newRuntime({ isolation: 'none', images: marking });
    const dir = path.join(base, `never-${Date.now()}`);
    const s = spec({ contentDir: dir, image: 'mark' });
    await runtime.prepare(s);
    const [ahead] = await wrappersWaiting(`WORKBAY_GATE_DIR=${dir}`);
    expect(ahead).toBeDefined();
    await mkdir(dir, { recursive: true });
    // The content failed: the manager stops the workspace, which was never started.
    await runtime.stop(s.instanceId, { gracePeriodMs: 0 });
    await expect.poll(() => alive(ahead!), { timeout: 5_000 }).toBe(false);
    expect(existsSync(path.join(dir, 'ran.txt'))).toBe(false);
    // No exit status and no log of a run that never was.
    const instances = path.join(base, 'state');
    const leftovers = (await import('node:fs/promises').then((fs) => fs.readdir(instances, { recursive: true })))
      .map(String)
      .filter((name) => name.includes(s.instanceId));
    expect(leftovers).toEqual([]);
  });
});

describe('Prelaunched: the gate', () => {
  it('never runs the command when its gate closes unopened, as when the manager is killed', async () => {
    const dir = path.join(base, `gate-${Date.now()}`);
    await mkdir(dir, { recursive: true });
    const marker = path.join(dir, 'ran.txt');
    const options = {
      exitFile: path.join(dir, 'exit'),
      cgroupProcsFiles: [],
      command: ['/bin/sh', '-c', `echo ran > ${marker}`],
      env: { PATH: '/usr/bin:/bin' },
    };
    const ungated = wrapperInvocation(options);
    const gated = wrapperInvocation({ ...options, gated: { contentDir: dir } });
    // A manager that spawned one ahead and was killed: its spawner sees the manager go, and the gate closes.
    const spawnerModule = fileURLToPath(new URL('../../../dist/runtime/local/spawner.js', import.meta.url));
    const manager = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { WrapperSpawner } = await import(${JSON.stringify(spawnerModule)});
         const spawner = new WrapperSpawner({ error() {}, warn() {}, info() {}, debug() {} });
         const wrapper = await spawner.spawn(${JSON.stringify(gated)}, { cwd: '/', logFile: ${JSON.stringify(path.join(dir, 'killed.log'))}, gate: true });
         console.log('PID ' + wrapper.pid);
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    // The pid on a line of its own, whatever else the child prints first (CI read NaN from a first chunk).
    const pid = await new Promise<number>((resolve, reject) => {
      let text = '';
      manager.stdout.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        const line = /^PID (\d+)$/m.exec(text);
        if (line) resolve(Number(line[1]));
      });
      manager.once('exit', (code) => reject(new Error(`the manager exited (${code}): ${text.slice(0, 500)}`)));
    });
    expect(await alive(pid)).toBe(true);
    manager.kill('SIGKILL');
    await expect.poll(() => alive(pid), { timeout: 5_000 }).toBe(false);
    expect(existsSync(marker)).toBe(false);
    expect(existsSync(options.exitFile)).toBe(false);

    // Opened, the same wrapper runs the command and records its status; a second open is refused.
    const log = path.join(dir, 'log');
    const spawner = new WrapperSpawner(silentLogger);
    const ahead = await Prelaunched.spawn(spawner, ungated, gated, log);
    const child = ahead.open(ungated)!;
    expect(child).toBeDefined();
    expect(ahead.open(ungated)).toBeUndefined();
    expect((await waitForFile(options.exitFile)).trim()).toBe('0');
    expect(await readFile(marker, 'utf8')).toBe('ran\n');
    // Another invocation is not what it was spawned for: refused, and abandoning it removes its (empty) log.
    await rm(marker);
    const other = await Prelaunched.spawn(spawner, ungated, gated, `${log}2`);
    expect(other.open(wrapperInvocation({ ...options, command: ['/bin/true'] }))).toBeUndefined();
    await other.abandon();
    expect(existsSync(`${log}2`)).toBe(false);
    expect(existsSync(marker)).toBe(false);
    spawner.close();
  });
});
