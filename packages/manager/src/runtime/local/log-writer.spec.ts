// The log writer of isolated workspaces, run as the wrapper runs it (Perl, the log as its O_APPEND stdout, a pipe in).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rotatedLogFile } from './log-cap.js';
import { logWriterScript } from './log-writer.js';

const kib = 1024;

const isRoot = process.getuid?.() === 0;
/** Per-process I/O counts (CONFIG_TASK_IO_ACCOUNTING). */
const hasIoCounts = existsSync('/proc/self/io');

interface WriterRun {
  readonly code: number | null;
  /** What the writer's write calls took (/proc/<pid>/io `wchar`), read once it wrote all it was fed. */
  readonly wchar?: number;
  /** The file the writer was started with, as the wrapper still holds it at the end: its size and links. */
  readonly held: { readonly size: number; readonly nlink: number };
}

/** The writer's /proc/<pid>/io counter `name`. */
async function ioCounter(pid: number, name: string): Promise<number> {
  const io = await readFile(`/proc/${pid}/io`, 'utf8');
  return Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(io)?.[1]);
}

/**
 * Feeds `chunks` through the writer one write each (the pipe between them), then ends it; resolves at its exit. With
 * `countWrites`, waits before the end until the writer's write calls took at least what it was fed.
 */
async function runWriter(
  file: string,
  cap: number,
  chunks: Iterable<string>,
  options: { readonly countWrites?: boolean } = {},
): Promise<WriterRun> {
  // This handle stays open until the writer ends, as the wrapper's stdout and stderr do.
  const log = await open(file, 'a', 0o600);
  try {
    const writer = spawn('perl', ['-e', logWriterScript, file, String(cap)], { stdio: ['pipe', log.fd, 'inherit'] });
    const exited = new Promise<number | null>((resolve) => writer.once('close', resolve));
    const input = writer.stdin!;
    let fed = 0;
    for (const chunk of chunks) {
      fed += Buffer.byteLength(chunk);
      if (!input.write(chunk)) await new Promise((r) => input.once('drain', r));
    }
    let wchar: number | undefined;
    if (options.countWrites) {
      const until = Date.now() + 20_000;
      while ((wchar = await ioCounter(writer.pid!, 'wchar')) < fed && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    input.end();
    const code = await exited;
    const { size, nlink } = await log.stat();
    return { code, held: { size, nlink }, ...(wchar === undefined ? {} : { wchar }) };
  } finally {
    await log.close();
  }
}

const sizeOf = async (file: string): Promise<number> => (await stat(file).catch(() => undefined))?.size ?? 0;

/** Output lines of assorted lengths (up to ~1.3 KB), numbered. */
const lines = (count: number, tag = 'line'): string[] =>
  Array.from({ length: count }, (_, i) => `${tag} ${i} ${'.'.repeat((i * 7919) % 1300)}\n`);

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
    expect((await runWriter(file, 64 * kib, ['one\n', 'two\n'])).code).toBe(0);
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
      expect((await runWriter(file, cap, chunks)).code).toBe(0);
      const log = await readFile(file, 'utf8');
      const kept = await readFile(rotatedLogFile(file), 'utf8').catch(() => '');
      if (chunks.join('').length > cap) expect(kept).not.toBe('');
      expect(log.length).toBeLessThanOrEqual(cap / 2);
      expect(kept.length).toBeLessThanOrEqual(cap / 2);
      // `.1` is the whole previous log (renamed, not a copied tail), and the log follows on it: together they are the
      // end of the output, nothing between them missing or repeated.
      expect(chunks.join('').endsWith(kept + log)).toBe(true);
    }
  });

  it('rotates at a line: `.1` ends with a whole line and the new log starts with one, when a line fits', async () => {
    // Fed from a file, the reads are always 64 KiB (from a pipe they are whatever the pipe holds): each rotation
    // happens in the middle of a read, so the rotation picks where to split. Lines of up to ~1.3 KB against a 100 KB
    // half, and the log ends within one line of the half at a rotation.
    const cap = 200_000;
    for (const count of [260, 400, 1000, 2000]) {
      const file = path.join(dir, `lines${count}.log`);
      const input = path.join(dir, `lines${count}.in`);
      const text = lines(count).join('');
      await writeFile(input, text);
      await writeFile(file, '', { mode: 0o600 });
      const log = await open(file, 'a');
      const fed = await open(input, 'r');
      try {
        const run = spawnSync('perl', ['-e', logWriterScript, file, String(cap)], {
          stdio: [fed.fd, log.fd, 'inherit'],
        });
        expect(run.status).toBe(0);
      } finally {
        await Promise.all([log.close(), fed.close()]);
      }
      const kept = await readFile(rotatedLogFile(file), 'utf8');
      const last = await readFile(file, 'utf8');
      expect(text.endsWith(kept + last)).toBe(true);
      expect(kept).toMatch(/^line \d+ \.*\n/);
      expect(kept.endsWith('\n')).toBe(true);
      if (last) expect(last).toMatch(/^line \d+ \.*\n/);
      expect(kept.length).toBeGreaterThan(cap / 2 - 1310);
      expect(kept.length).toBeLessThanOrEqual(cap / 2);
    }
  });

  it.runIf(hasIoCounts)('writes what it is fed and nothing more: a rotation copies nothing', async () => {
    // 4 MB through a 64 KiB cap: ~128 rotations. Copying half the cap into `.1` at each one wrote twice the output
    // (and read half of it back); renaming writes the output once. The slack is for the spawn's own start-up.
    const file = path.join(dir, 'count.log');
    const chunks = lines(6000);
    const fed = Buffer.byteLength(chunks.join(''));
    expect(fed).toBeGreaterThan(3_500_000);
    const run = await runWriter(file, 64 * kib, chunks, { countWrites: true });
    expect(run.code).toBe(0);
    expect(run.wchar).toBeGreaterThanOrEqual(fed);
    expect(run.wchar).toBeLessThan(fed + 4 * kib);
    expect(
      chunks.join('').endsWith((await readFile(rotatedLogFile(file), 'utf8')) + (await readFile(file, 'utf8'))),
    ).toBe(true);
    // The file the wrapper still holds (the manager's log, gone as `.1` at the second rotation) is truncated: its
    // blocks do not stay allocated for the workspace's life with no name.
    expect(run.held).toEqual({ size: 0, nlink: 0 });
  });

  it('keeps both files root-only, and a line longer than half the cap is split, its end kept', async () => {
    const file = path.join(dir, 'long.log');
    const cap = 256 * kib;
    const run = await runWriter(file, cap, ['y'.repeat(200 * kib) + '\n', 'z'.repeat(100 * kib) + '\n', 'end\n']);
    expect(run.code).toBe(0);
    const kept = await readFile(rotatedLogFile(file), 'utf8');
    // `.1` is the file the test opened; the log is one the writer created at a rotation.
    expect((await stat(rotatedLogFile(file))).mode & 0o777).toBe(0o600);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(kept.length + (await sizeOf(file))).toBeLessThanOrEqual(cap);
    expect((kept + (await readFile(file, 'utf8'))).endsWith('z\nend\n')).toBe(true);
  });

  it('runs on when the log cannot be renamed, and still caps it', async () => {
    const file = path.join(dir, 'b.log');
    // `.1` as a directory: the rename fails; the rotation truncates the log instead (its part is lost).
    await mkdir(rotatedLogFile(file));
    const numbered = Array.from({ length: 20_000 }, (_, i) => `line ${i}\n`);
    expect((await runWriter(file, 64 * kib, [...numbered, 'last\n'])).code).toBe(0);
    expect(await sizeOf(file)).toBeLessThanOrEqual(32 * kib);
    expect((await readFile(file, 'utf8')).endsWith('last\n')).toBe(true);
  });

  /**
   * Runs the writer on a tmpfs of `options` in a mount namespace of its own (gone with it), fed `bytes` of lines;
   * answers its exit status and what is left there (`ls -l` names and sizes).
   */
  function onTinyFs(options: string, bytes: number, cap: number): { status: number | null; files: string } {
    const script = [
      'mount -t tmpfs -o "$1" workbay-test "$2" || exit 99',
      'cd "$2" && : > a.log',
      'yes "a line of output" | head -c "$3" | perl -e "$4" a.log "$5" >> a.log',
      'status=$?',
      'for f in a.log*; do echo "$f $(stat -c %s "$f")"; done',
      'exit $status',
    ].join('\n');
    const mnt = path.join(dir, 'mnt');
    spawnSync('mkdir', [mnt]);
    const run = spawnSync(
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        script,
        'sh',
        options,
        mnt,
        String(bytes),
        logWriterScript,
        String(cap),
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    return { status: run.status, files: run.stdout.trim() };
  }

  it.runIf(isRoot)(
    'drops the output it cannot store and ends with its input: no inode for a new log, a full disk',
    () => {
      // Two inodes (the root and the log): the rename works, the new log cannot be created, every read after it is
      // dropped (each one tries again). The log's part is in `.1`.
      const noInode = onTinyFs('size=4m,nr_inodes=2,mode=0700', 1_000_000, 256 * kib);
      expect(noInode.status).toBe(0);
      const [name, size] = noInode.files.split(' ');
      expect(name).toBe('a.log.1');
      expect(Number(size)).toBeLessThanOrEqual(128 * kib);
      expect(Number(size)).toBeGreaterThan(128 * kib - 17);
      // 192 KiB of disk under a 256 KiB cap: the first log rotates whole, the second one fills the disk and the rest of
      // its reads is dropped; the next rotation gives the first one's blocks back (removed as `.1`, truncated) and the
      // writer goes on, rotating.
      const full = onTinyFs('size=192k,mode=0700', 2_000_000, 256 * kib);
      expect(full.status).toBe(0);
      expect(full.files).toMatch(/^a\.log \d+\na\.log\.1 [1-9]\d*$/);
    },
  );
});
