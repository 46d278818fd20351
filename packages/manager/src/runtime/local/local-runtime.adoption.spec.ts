// A new LocalRuntime on the same state directory re-adopts, reports or disowns the workspaces it finds recorded.
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalRuntime } from './local-runtime.js';
import { readProcStat } from './proc.js';
import {
  alive,
  base,
  contentDir,
  nextEvent,
  runtimes,
  shellImages,
  spec,
  useLocalRuntimeFixtures,
  waitForFile,
} from '../../test-support/local-runtime.js';

/** Numbers this file's state directories. */
let counter = 0;

useLocalRuntimeFixtures();

describe('LocalRuntime: re-adoption after a restart', () => {
  it('a new runtime instance finds running workspaces, reports their exit and can stop them', async () => {
    const stateDir = path.join(base, `state-adopt-${++counter}`);
    const images = shellImages({
      waiter: 'echo up > up.txt; while [ ! -f quit ]; do sleep 0.05; done; exit 4',
      sleeper: 'echo up > up.txt; exec sleep 600',
    });
    const first = await LocalRuntime.create({ config: { stateDir, images } });
    const dirA = await contentDir();
    const dirB = await contentDir();
    const a = spec({ contentDir: dirA, image: 'waiter' });
    const b = spec({ contentDir: dirB, image: 'sleeper' });
    const readyA = nextEvent(first, 'ready', a.instanceId);
    const stA = await first.start(a);
    const stB = await first.start(b);
    await waitForFile(path.join(dirA, 'up.txt'));
    await waitForFile(path.join(dirB, 'up.txt'));
    await readyA;
    await first.close();

    const second = await LocalRuntime.create({ config: { stateDir, images, exitPollIntervalMs: 50 } });
    runtimes.push(second);
    const listed = await second.list();
    expect(listed.map((s) => s.instanceId).sort()).toEqual([a.instanceId, b.instanceId].sort());
    expect(listed.find((s) => s.instanceId === a.instanceId)).toMatchObject({
      pid: stA.pid,
      status: 'running',
      ready: true,
    });

    // A exits on its own: the adopted-process watcher reports it with the code the wrapper recorded.
    const exited = nextEvent(second, 'exited', a.instanceId);
    await writeFile(path.join(dirA, 'quit'), '');
    const exit = await exited;
    expect(exit.state.exitCode).toBe(4);
    expect(exit.state.failure).toMatch(/exited with code 4/);

    // B is stopped through the new instance.
    await second.stop(b.instanceId, { gracePeriodMs: 5_000 });
    expect(await alive(stB.pid!)).toBe(false);
    expect((await second.list()).map((s) => s.instanceId)).toEqual([a.instanceId]);
  });

  it('reports a workspace that exited while no runtime watched it', async () => {
    const stateDir = path.join(base, `state-gone-${++counter}`);
    const images = shellImages({ waiter: 'echo up > up.txt; while [ ! -f quit ]; do sleep 0.05; done; exit 0' });
    const first = await LocalRuntime.create({ config: { stateDir, images } });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'waiter' });
    const st = await first.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    await first.close();
    await writeFile(path.join(dir, 'quit'), '');
    while (await alive(st.pid!)) await new Promise((r) => setTimeout(r, 20));

    const second = await LocalRuntime.create({ config: { stateDir, images } });
    runtimes.push(second);
    expect(await second.inspect(s.instanceId)).toMatchObject({ status: 'exited', exitCode: 0 });
  });

  it('does not mistake a reused pid for the workspace, and never signals it', async () => {
    const stateDir = path.join(base, `state-reuse-${++counter}`);
    const runtime0 = await LocalRuntime.create({ config: { stateDir } });
    await runtime0.close();
    // An unrelated process, recorded as if it were a workspace started at another time.
    const stranger = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
    stranger.unref();
    const realStart = (await readProcStat(stranger.pid!))!.startTime;
    const record = {
      version: 1,
      instanceId: 'reused-1',
      workspaceId: 'ws-reused',
      owner: 'o',
      image: 'x',
      className: 'default',
      command: ['x'],
      pid: stranger.pid,
      pgid: stranger.pid,
      startTime: String(Number(realStart) - 12345),
      namespaced: false,
      host: '127.0.0.1',
      idePort: 1,
      portMap: {},
      nodeName: 'n',
      startedAt: new Date().toISOString(),
      readiness: { kind: 'none', path: '/', intervalMs: 100, probeTimeoutMs: 1000 },
      ready: true,
      stopRequested: false,
    };
    await writeFile(path.join(stateDir, 'instances', 'reused-1.json'), JSON.stringify(record));
    try {
      const runtime = await LocalRuntime.create({ config: { stateDir } });
      runtimes.push(runtime);
      const state = await runtime.inspect('reused-1');
      expect(state?.status).toBe('exited');
      expect(state?.failure).toMatch(/exit status is unknown/);
      await runtime.stop('reused-1', { gracePeriodMs: 0 });
      expect(await alive(stranger.pid!)).toBe(true);
    } finally {
      stranger.kill('SIGKILL');
    }
  });
});
