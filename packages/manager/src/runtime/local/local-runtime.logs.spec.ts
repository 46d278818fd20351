// What a workspace can do to the host through its output and the descriptors it inherits, as root with real
// isolated workspaces: its log stays under the cap while it writes as fast as it can (across a restart), it writes into
// a pipe rather than the log file, and it holds no descriptor of whatever started the manager.
import { spawn } from 'node:child_process';
import { open, readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LocalRuntime } from './local-runtime.js';
import { rotatedLogFile } from './log-cap.js';
import {
  alive,
  base,
  contentDir,
  isRoot,
  nextEvent,
  runtimes,
  spec,
  useLocalRuntimeFixtures,
} from '../../test-support/local-runtime.js';

useLocalRuntimeFixtures();

const maxBytes = 1024 * 1024;
/**
 * The workspace is isolated, so its log writer caps the log itself and never lets it pass half the cap (log-writer.ts).
 * The copy-truncate from outside that capped it before overshot by what a flood wrote while the manager reacted: 214 MiB
 * at most with a 16 MiB cap, tens of MiB with this one, on a 2-core machine; and it could lose the last line written
 * right after a flood (a CI run).
 */
const overshootBound = maxBytes / 2;
/**
 * Floods its output while `phase` names a flood (`yes <phase>`: as fast as it can), and says `phase <name>` on any
 * other phase; acknowledges each phase in `ack.txt` once it is in it.
 */
const flooder = [
  'flood=; seen=',
  'while :; do',
  '  p=$(cat phase 2>/dev/null || true)',
  '  if [ "$p" != "$seen" ]; then',
  '    if [ -n "$flood" ]; then kill "$flood"; wait "$flood" 2>/dev/null; flood=; fi',
  '    case "$p" in flood-*) yes "$p" & flood=$! ;; *) echo "phase $p" ;; esac',
  '    seen=$p; echo "$p" > ack.tmp && mv ack.tmp ack.txt',
  '  fi',
  '  sleep 0.02',
  'done',
].join('\n');

async function enterPhase(dir: string, phase: string): Promise<void> {
  // Through a rename: the flooder polls the file, and a write it catches half done (truncated, empty) would be a phase
  // of its own ("phase " in the log).
  await writeFile(path.join(dir, 'phase.tmp'), phase);
  await rename(path.join(dir, 'phase.tmp'), path.join(dir, 'phase'));
  const until = Date.now() + 15_000;
  while ((await readFile(path.join(dir, 'ack.txt'), 'utf8').catch(() => '')).trim() !== phase) {
    if (Date.now() > until) throw new Error(`the workspace did not enter phase ${phase}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sizeOf = async (file: string): Promise<number> => (await stat(file).catch(() => undefined))?.size ?? 0;

/** Samples the log's size for `ms`; fails as soon as it passes the bound (the flood then stops with the test). */
async function largestLog(logFile: string, ms: number): Promise<number> {
  let largest = 0;
  const until = Date.now() + ms;
  while (Date.now() < until) {
    largest = Math.max(largest, await sizeOf(logFile));
    expect(largest).toBeLessThanOrEqual(overshootBound);
    await new Promise((r) => setTimeout(r, 2));
  }
  return largest;
}

/**
 * The newest lines of the workspace's output (the part the last rotation kept, then the log) once they are `expected`:
 * a rotation still under way between the two reads may hide the newest ones for a moment.
 */
async function newestLines(logFile: string, expected: string[]): Promise<string[]> {
  const until = Date.now() + 5_000;
  for (;;) {
    const kept = await readFile(rotatedLogFile(logFile), 'utf8').catch(() => '');
    const lines = (kept + (await readFile(logFile, 'utf8'))).split('\n').filter(Boolean).slice(-expected.length);
    if (Date.now() > until || lines.join('\n') === expected.join('\n')) return lines;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The part the last rotation kept. The writer removes the old `.1` just before it renames the log to it, so while the
 * flood goes on a read can fall in that instant (a CI run did): read again until it is there.
 */
async function keptPart(logFile: string): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await readFile(rotatedLogFile(logFile), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 50) throw err;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

describe.runIf(isRoot)('LocalRuntime: what a workspace gets to hold on the host', () => {
  it('caps the log of a workspace writing as fast as it can, keeps its newest output, and does not kill it', async () => {
    const stateDir = path.join(base, 'state-log-cap');
    const images = { flood: { command: ['/bin/sh', '-c', flooder], readiness: { kind: 'none' as const } } };
    const config = { stateDir, images, logs: { maxBytes } };
    const first = await LocalRuntime.create({ config });
    runtimes.push(first);
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'flood' });
    const st = await first.start(s);
    // Its log writer caps it; the manager does not watch it (a check at every write cost ~14% of a core).
    const record = JSON.parse(await readFile(path.join(stateDir, 'instances', `${s.instanceId}.json`), 'utf8'));
    expect(record.logWriter).toBe(true);
    await enterPhase(dir, 'flood-1');
    const largest1 = await largestLog(st.logFile, 3_000);
    // It really flooded: the part kept by a rotation is its output.
    expect((await keptPart(st.logFile)).split('\n').slice(-2)[0]).toBe('flood-1');
    await enterPhase(dir, 'quiet-1');
    expect(await newestLines(st.logFile, ['flood-1', 'phase quiet-1'])).toEqual(['flood-1', 'phase quiet-1']);
    expect((await first.inspect(s.instanceId))?.status).not.toBe('exited');
    expect(await alive(st.pid!)).toBe(true);
    // Root's only, like the log.
    for (const file of [st.logFile, rotatedLogFile(st.logFile)]) {
      const { mode, uid } = await stat(file);
      expect({ mode: mode & 0o777, uid }).toEqual({ mode: 0o600, uid: 0 });
    }

    // After a restart the adopting runtime caps it too.
    await first.close();
    const second = await LocalRuntime.create({ config });
    runtimes.push(second);
    await enterPhase(dir, 'flood-2');
    const largest2 = await largestLog(st.logFile, 3_000);
    await enterPhase(dir, 'quiet-2');
    const newest = ['flood-2', 'flood-2', 'phase quiet-2'];
    expect(await newestLines(st.logFile, newest)).toEqual(newest);
    expect((await second.inspect(s.instanceId))?.status).not.toBe('exited');
    console.info(`largest log seen with a ${maxBytes}-byte cap: ${largest1} before, ${largest2} after a restart`);

    // Its stop removes the log and the kept part with its other files.
    await second.stop(s.instanceId, { gracePeriodMs: 0 });
    const left = (await readdir(path.dirname(st.logFile))).filter((f) => f.startsWith(s.instanceId));
    expect(left).toEqual([]);
  });

  it('gives the workspace a pipe, not the log file: it cannot allocate host disk through its output', async () => {
    // fallocate(2) on its stdout, mode 0 (allocating, size grows) and KEEP_SIZE: 20 GB of the host's disk in one call
    // when stdout was the log file itself (red team, round 5).
    const probe = [
      'import ctypes, os',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'out = []',
      'for mode in (0, 1):',
      '    r = libc.fallocate(1, mode, ctypes.c_long(0), ctypes.c_long(1 << 30))',
      '    out.append(str(ctypes.get_errno()) if r != 0 else "allocated")',
      "open('fallocate.txt', 'w').write(' '.join(out) + '\\n')",
      "print('still logged')",
    ].join('\n');
    const stateDir = path.join(base, 'state-log-pipe');
    const images = {
      alloc: {
        command: ['/bin/sh', '-c', '/usr/bin/python3 probe.py; exec sleep 600'],
        readiness: { kind: 'none' as const },
      },
    };
    const runtime = await LocalRuntime.create({ config: { stateDir, images, logs: { maxBytes } } });
    runtimes.push(runtime);
    const dir = await contentDir({ 'probe.py': probe });
    const st = await runtime.start(spec({ contentDir: dir, image: 'alloc' }));
    const until = Date.now() + 15_000;
    while (!(await readFile(path.join(dir, 'fallocate.txt'), 'utf8').catch(() => '')).endsWith('\n')) {
      if (Date.now() > until) throw new Error('the probe did not finish');
      await new Promise((r) => setTimeout(r, 25));
    }
    // ESPIPE (29) both times: a pipe has no blocks to allocate.
    expect((await readFile(path.join(dir, 'fallocate.txt'), 'utf8')).trim()).toBe('29 29');
    const { blocks } = await stat(st.logFile);
    expect(blocks * 512).toBeLessThan(1024 * 1024);
    const logged = Date.now() + 5_000;
    while (!(await readFile(st.logFile, 'utf8')).includes('still logged') && Date.now() < logged) {
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(await readFile(st.logFile, 'utf8')).toContain('still logged');
  });

  it("names a rotated workspace's last words in its failure", async () => {
    const stateDir = path.join(base, 'state-log-exit');
    const images = {
      talker: {
        command: ['/bin/sh', '-c', 'yes talk | head -c 5000000; echo "last words"; exit 3'],
        readiness: { kind: 'none' as const },
      },
    };
    const runtime = await LocalRuntime.create({ config: { stateDir, images, logs: { maxBytes } } });
    runtimes.push(runtime);
    const s = spec({ contentDir: await contentDir(), image: 'talker' });
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    const st = await runtime.start(s);
    expect((await exited).state.failure).toBe('the workspace process exited with code 3: last words');
    expect(await sizeOf(st.logFile)).toBeLessThanOrEqual(overshootBound);
  });

  it('gives the workspace no descriptor the manager inherited, however high', async () => {
    // A manager started with descriptors that are not close-on-exec (`workbay up 5>>file 300>>file`): the built
    // runtime in a child node process that holds them, starting an isolated and a trusted workspace, which list their
    // descriptors (`ls` lists its own: 0-2 and 3, its handle of the directory; an inherited one would push it up).
    const dist = fileURLToPath(new URL('../../../dist/runtime/local/index.js', import.meta.url));
    const secret = path.join(base, 'root-owned.txt');
    await writeFile(secret, '', { mode: 0o600 });
    const dirs = [await contentDir(), await contentDir()];
    const script = `
      const { LocalRuntime } = await import(${JSON.stringify(dist)});
      const fs = await import('node:fs/promises');
      const dirs = ${JSON.stringify(dirs)};
      const command = ['/bin/sh', '-c', 'ls /proc/self/fd; echo listed; exec sleep 60'];
      const modes = ['namespaces', 'none'];
      for (const [i, isolation] of modes.entries()) {
        const rt = await LocalRuntime.create({ config: {
          stateDir: ${JSON.stringify(base)} + '/state-fds-' + isolation, isolation,
          images: { probe: { command, readiness: { kind: 'none' } } } } });
        const id = 'fds-' + isolation + '-' + process.pid;
        const st = await rt.start({ instanceId: id, workspaceId: id, owner: 'o', image: 'probe', url: '', headless: false,
          type: 'regular', contentDir: dirs[i], env: {}, ports: [0], className: 'c', resources: {} });
        let fds;
        for (let n = 0; n < 400 && !fds; n++) {
          const log = await fs.readFile(st.logFile, 'utf8');
          if (log.endsWith('listed\\n')) fds = log.split('\\n').slice(0, -2);
          await new Promise((r) => setTimeout(r, 25));
        }
        await rt.stop(id, { gracePeriodMs: 0 });
        await rt.close();
        console.log(JSON.stringify({ isolation, namespaces: rt.isolation.namespaces, fds }));
      }
    `;
    const inherited = await open(secret, 'a');
    try {
      const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe'];
      for (let fd = 3; fd <= 300; fd++) stdio.push(fd === 5 || fd === 300 ? inherited.fd : 'ignore');
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio });
        let stdout = '';
        let stderr = '';
        child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`exit ${code}: ${stderr}`))));
      });
      const results = out
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { isolation: string; namespaces: boolean; fds?: string[] });
      expect(results).toEqual([
        { isolation: 'namespaces', namespaces: true, fds: ['0', '1', '2', '3'] },
        { isolation: 'none', namespaces: false, fds: ['0', '1', '2', '3'] },
      ]);
      expect(await readFile(secret, 'utf8')).toBe('');
    } finally {
      await inherited.close();
    }
  });
});
