// LocalRuntime start, readiness, stop and exit reporting, and its plugin registration.
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AlreadyExistsError, FailedPreconditionError, PluginHost } from '@workbay/api';
import { listLinks } from '@workbay/nsinsider';
import type { LocalWorkspaceState } from './local-runtime.js';
import { localRuntimePlugin } from './plugin.js';
import {
  alive,
  base,
  contentDir,
  cwdOf,
  isRoot,
  newRuntime,
  nextEvent,
  shellImages,
  spec,
  useLocalRuntimeFixtures,
  waitForFile,
} from '../../test-support/local-runtime.js';

useLocalRuntimeFixtures();

describe('LocalRuntime: the default workspace', () => {
  it('starts, becomes ready, serves the workspace page over HTTP, and stops', async () => {
    const runtime = await newRuntime();
    const dir = await contentDir({ 'README.md': '# hello\n', 'main.go': 'package main\n' });
    const s = spec({ contentDir: dir, workspaceId: 'ws-default-1' });
    const ready = nextEvent(runtime, 'ready', s.instanceId);
    const started = await runtime.start(s);
    expect(started.status).toBe('starting');
    // Isolated, the workspace has an address of its own (its veth); otherwise it shares the host's loopback.
    if (isRoot) expect(started.host).toBe(started.net!.address);
    else expect(started.host).toBe('127.0.0.1');
    const event = await ready;
    expect(event.state.ready).toBe(true);
    expect(event.state.status).toBe('running');

    const { host, idePort: port } = event.state as LocalWorkspaceState;
    const html = await (await fetch(`http://${host}:${port}/`)).text();
    expect(html).toContain('ws-default-1');
    expect(html).toContain('README.md');
    expect(html).toContain('main.go');
    const info = (await (await fetch(`http://${host}:${port}/api/info`)).json()) as { contentDir: string };
    expect(info.contentDir).toBe(cwdOf(dir));

    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.stop(s.instanceId, { gracePeriodMs: 10_000 });
    const exit = await exited;
    expect(exit.state.status).toBe('exited');
    expect(exit.state.failure).toBeUndefined();
    expect(await alive(started.pid!)).toBe(false);
    expect(await runtime.inspect(s.instanceId)).toBeUndefined();
    if (isRoot) {
      // Its address may already be another runtime's (tests share the machine): check its veth is gone instead.
      const links = await listLinks('wbv');
      expect(links.filter((l) => l.alias.endsWith(` ${s.instanceId}`))).toEqual([]);
    } else {
      await expect(fetch(`http://${host}:${port}/`)).rejects.toThrow();
    }
  });

  it('gives each workspace its own IDE port when they all ask for the same one (not isolated)', async () => {
    const runtime = await newRuntime({ isolation: 'none' });
    const wanted = await freePort();
    const a = spec({ contentDir: await contentDir(), ports: [wanted] });
    const b = spec({ contentDir: await contentDir(), ports: [wanted] });
    const readyA = nextEvent(runtime, 'ready', a.instanceId);
    const readyB = nextEvent(runtime, 'ready', b.instanceId);
    const [sa, sb] = await Promise.all([runtime.start(a), runtime.start(b)]);
    expect(new Set([sa.idePort, sb.idePort]).size).toBe(2);
    expect([sa.idePort, sb.idePort]).toContain(wanted);
    expect(sa.portMap[wanted]).toBe(sa.idePort);
    await Promise.all([readyA, readyB]);
    for (const st of [sa, sb]) {
      const info = (await (await fetch(`http://127.0.0.1:${st.idePort}/api/info`)).json()) as { instanceId: string };
      expect(info.instanceId).toBe(st.instanceId);
    }
  });
});

describe('LocalRuntime: process environment and lifecycle', () => {
  it('runs a mapped image with cwd = content and env = spec env plus PORT/WORKBAY_IDE_PORT', async () => {
    const runtime = await newRuntime({
      images: {
        'example.com/env:*': {
          command: [
            '/bin/sh',
            '-c',
            'env > env.txt; pwd > cwd.txt; echo "$1" > arg.txt; exec sleep 600',
            'sh',
            'port=${PORT}',
          ],
          readiness: { kind: 'none' },
        },
      },
    });
    const dir = await contentDir();
    const s = spec({
      contentDir: dir,
      image: 'example.com/env:v1',
      env: { GREETING: 'hello world', WORKBAY_OWNER: 'owner-1' },
    });
    const ready = nextEvent(runtime, 'ready', s.instanceId);
    const st = await runtime.start(s);
    await ready;
    const env = await waitForFile(path.join(dir, 'env.txt'));
    expect(env).toContain('GREETING=hello world\n');
    expect(env).toContain('WORKBAY_OWNER=owner-1\n');
    expect(env).toContain(`PORT=${st.idePort}\n`);
    expect(env).toContain(`WORKBAY_IDE_PORT=${st.idePort}\n`);
    expect((await waitForFile(path.join(dir, 'cwd.txt'))).trim()).toBe(cwdOf(dir));
    expect((await waitForFile(path.join(dir, 'arg.txt'))).trim()).toBe(`port=${st.idePort}`);
  });

  it('honours the grace period: a workspace that traps SIGTERM exits cleanly', async () => {
    const runtime = await newRuntime({
      images: shellImages({
        trapper: "trap 'echo clean > stopped.txt; exit 0' TERM; echo up > up.txt; while :; do sleep 0.05; done",
      }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'trapper' });
    await runtime.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.stop(s.instanceId, { gracePeriodMs: 30_000 });
    const exit = await exited;
    expect(await readFile(path.join(dir, 'stopped.txt'), 'utf8')).toBe('clean\n');
    expect(exit.state.exitCode).toBe(0);
    expect(exit.state.failure).toBeUndefined();
  });

  it('kills a workspace that ignores SIGTERM once the grace period is over, not before', async () => {
    const runtime = await newRuntime({
      images: shellImages({ stubborn: "trap '' TERM; echo up > up.txt; while :; do sleep 0.05; done" }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'stubborn' });
    const st = await runtime.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    const began = Date.now();
    await runtime.stop(s.instanceId, { gracePeriodMs: 700 });
    expect(Date.now() - began).toBeGreaterThanOrEqual(650);
    const exit = await exited;
    expect(exit.state.failure).toBeUndefined(); // we asked for it
    expect(await alive(st.pid!)).toBe(false);
  });

  it('a later, shorter stop cuts the grace period short', async () => {
    const runtime = await newRuntime({
      images: shellImages({ stubborn: "trap '' TERM; echo up > up.txt; while :; do sleep 0.05; done" }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'stubborn' });
    await runtime.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    const slow = runtime.stop(s.instanceId, { gracePeriodMs: 120_000 });
    await new Promise((r) => setTimeout(r, 100));
    await runtime.stop(s.instanceId, { gracePeriodMs: 0 });
    await slow;
    expect(await runtime.list()).toEqual([]);
  });

  it('reports a workspace that exits on its own with its exit code and last output line', async () => {
    const runtime = await newRuntime({ images: shellImages({ failing: 'echo "config file missing" >&2; exit 3' }) });
    const s = spec({ contentDir: await contentDir(), image: 'failing' });
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.start(s);
    const exit = await exited;
    expect(exit.state.exitCode).toBe(3);
    expect(exit.state.failure).toBe('the workspace process exited with code 3: config file missing');
    // It stays listed until stop() forgets it.
    expect((await runtime.inspect(s.instanceId))?.status).toBe('exited');
    await runtime.stop(s.instanceId, { gracePeriodMs: 1000 });
    expect(await runtime.inspect(s.instanceId)).toBeUndefined();
  });

  it('reports a command that does not exist', async () => {
    const runtime = await newRuntime({
      images: { nope: { command: ['/nonexistent/ide'], readiness: { kind: 'none' } } },
    });
    const s = spec({ contentDir: await contentDir(), image: 'nope' });
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.start(s);
    const exit = await exited;
    expect(exit.state.exitCode).toBe(127);
    expect(exit.state.failure).toMatch(
      /^the workspace command '\/nonexistent\/ide' could not be run \(exit code 127\)/,
    );
  });

  it('refuses a duplicate instance and a missing content directory', async () => {
    const runtime = await newRuntime({ images: shellImages({ sleeper: 'exec sleep 600' }) });
    const s = spec({ contentDir: await contentDir(), image: 'sleeper' });
    await runtime.start(s);
    await expect(runtime.start(s)).rejects.toBeInstanceOf(AlreadyExistsError);
    await expect(
      runtime.start(spec({ contentDir: path.join(base, 'missing'), image: 'sleeper' })),
    ).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(runtime.start(spec({ contentDir: base, instanceId: '../escape' }))).rejects.toThrow(/instanceId/);
  });

  it('takes background processes of the workspace down with it (no namespaces)', async () => {
    const runtime = await newRuntime({
      isolation: 'none',
      cgroups: 'off',
      images: shellImages({ forker: 'sleep 600 & echo $! > bg.txt; echo up > up.txt; wait' }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'forker' });
    await runtime.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    const bg = Number((await waitForFile(path.join(dir, 'bg.txt'))).trim());
    expect(await alive(bg)).toBe(true);
    await runtime.stop(s.instanceId, { gracePeriodMs: 5_000 });
    expect(await alive(bg)).toBe(false);
  });
});

describe('localRuntimePlugin', () => {
  it('registers the local runtime kind and validates its config naming the bad key', async () => {
    const host = new PluginHost().use(localRuntimePlugin);
    expect(host.runtimeKinds()).toEqual(['local']);
    await expect(
      host.createRuntime('local', { stateDir: path.join(base, 'p'), isolaton: 'none' }),
    ).rejects.toMatchObject({
      field: 'runtime.local.isolaton',
    });
    await expect(host.createRuntime('local', { readiness: { kind: 'udp' } })).rejects.toMatchObject({
      field: 'runtime.local.readiness.kind',
    });
    const runtime = await host.createRuntime('local', {
      stateDir: path.join(base, 'p2'),
      isolation: 'none',
      cgroups: 'off',
    });
    expect(runtime.kind).toBe('local');
    await runtime.close();
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}
