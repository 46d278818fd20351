// The log writer of isolated workspaces, run as the wrapper runs it (Perl, the log as its O_APPEND stdout, a pipe in).
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rotatedLogFile } from './log-cap.js';
import { logWriterScript } from './log-writer.js';

const kib = 1024;

/** Feeds `chunks` through the writer one write each (the pipe between them), then ends it; resolves at its exit. */
async function runWriter(file: string, cap: number, chunks: Iterable<string>): Promise<number | null> {
  const log = await open(file, 'a', 0o600);
  try {
    const writer = spawn('perl', ['-e', logWriterScript, file, String(cap)], { stdio: ['pipe', log.fd, 'inherit'] });
    const exited = new Promise<number | null>((resolve) => writer.once('close', resolve));
    const input = writer.stdin!;
    for (const chunk of chunks) {
      if (!input.write(chunk)) await new Promise((r) => input.once('drain', r));
    }
    input.end();
    return await exited;
  } finally {
    await log.close();
  }
}

const sizeOf = async (file: string): Promise<number> => (await stat(file).catch(() => undefined))?.size ?? 0;

describe('logWriterScript', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'workbay-log-writer-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('appends what it reads while the log stays under half the cap', async () => {
    const file = path.join(dir, 'a.log');
    expect(await runWriter(file, 64 * kib, ['one\n', 'two\n'])).toBe(0);
    expect(await readFile(file, 'utf8')).toBe('one\ntwo\n');
    expect(await sizeOf(rotatedLogFile(file))).toBe(0);
  });

  it('rotates by itself between its writes: the newest lines are never lost, and both files stay within the cap', async () => {
    const cap = 64 * kib;
    // Floods of many sizes, each followed by one last line: the line a copy-truncate from outside could lose.
    for (let round = 0; round < 20; round++) {
      const file = path.join(dir, `r${round}.log`);
      const flood = Array.from({ length: 500 + round * 97 }, (_, i) => `flood ${round} line ${i}\n`);
      const chunks = [...flood, ...Array.from({ length: round }, () => 'x'.repeat(7919) + '\n'), `last ${round}\n`];
      expect(await runWriter(file, cap, chunks)).toBe(0);
      const log = await readFile(file, 'utf8');
      const kept = await readFile(rotatedLogFile(file), 'utf8').catch(() => '');
      expect((kept + log).endsWith(`last ${round}\n`)).toBe(true);
      expect(log.length).toBeLessThanOrEqual(cap / 2);
      expect(log.length + kept.length).toBeLessThanOrEqual(cap);
      // The kept part starts at a line and follows on the log: nothing between them is missing.
      if (kept) expect(kept).toMatch(/^(flood \d+ line \d+|x+)\n/);
      const all = (kept + log).split('\n').filter(Boolean);
      const floods = all.filter((l) => l.startsWith('flood')).map((l) => Number(l.split(' ')[3]));
      for (let i = 1; i < floods.length; i++) expect(floods[i]).toBe(floods[i - 1]! + 1);
    }
  });

  it('keeps the previous part root-only, and a line longer than the search keeps its end', async () => {
    const file = path.join(dir, 'long.log');
    const cap = 256 * kib;
    expect(await runWriter(file, cap, ['y'.repeat(200 * kib) + '\n', 'z'.repeat(100 * kib) + '\n', 'end\n'])).toBe(0);
    const kept = await readFile(rotatedLogFile(file), 'utf8');
    expect((await stat(rotatedLogFile(file))).mode & 0o777).toBe(0o600);
    expect(kept.length + (await sizeOf(file))).toBeLessThanOrEqual(cap);
    expect((kept + (await readFile(file, 'utf8'))).endsWith('z\nend\n')).toBe(true);
  });

  it('runs on when the previous part cannot be written, and still caps the log', async () => {
    const file = path.join(dir, 'b.log');
    // `.1.tmp` as a directory: the kept part cannot be written; the rotation still truncates.
    await mkdir(`${rotatedLogFile(file)}.tmp`);
    const lines = Array.from({ length: 20_000 }, (_, i) => `line ${i}\n`);
    expect(await runWriter(file, 64 * kib, [...lines, 'last\n'])).toBe(0);
    expect(await sizeOf(file)).toBeLessThanOrEqual(32 * kib);
    expect((await readFile(file, 'utf8')).endsWith('last\n')).toBe(true);
  });
});
