import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import { allocatedBytes, GiB, makeSparseFile, MiB, proberProcesses, runsHash } from '../test-support/sparse.js';
import { tempDir } from '../test-support/tree.js';
import { extractTree } from './extract.js';
import { SparseProber } from './sparse-prober.js';
import { packTree } from './tar.js';
import type { PackStats } from './tar.js';
import { encodeEntryHeader, endOfArchive, padding } from './tar-header.js';
import type { TreeEntry } from './tree.js';

describe('sparse files in tar archives (GNU pax format 1.0)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let source: string;

  beforeEach(async () => {
    work = await tempDir();
    source = join(work.path, 'src');
    await mkdir(source);
  });
  afterEach(async () => {
    await work.cleanup();
  });

  const pack = async (): Promise<{ archive: string; stats: PackStats }> => {
    const archive = join(work.path, `archive-${Math.random().toString(36).slice(2)}.tar`);
    const packed = packTree(source, { xattrs: false });
    await pipeline(packed.stream, createWriteStream(archive));
    return { archive, stats: await packed.done };
  };
  const newDir = async (name: string): Promise<string> => {
    const dir = join(work.path, name);
    await mkdir(dir);
    return dir;
  };

  it('stores an 8 GiB sparse file as its data; GNU tar and our extractor restore it sparse', async () => {
    const runs = [
      [0, MiB],
      [5 * GiB, 3 * MiB],
      [8 * GiB - 8192, 8192],
    ] as const;
    const hash = makeSparseFile(join(source, 'big'), 8 * GiB, runs);
    const dense = randomBytes(5 * MiB);
    await writeFile(join(source, 'dense'), dense);
    const { archive, stats } = await pack();
    expect(stats.sparseFiles).toBe(1);
    expect(stats.contentBytes).toBe(4 * MiB + 8192 + dense.length);
    expect((await stat(archive)).size).toBeLessThan(10 * MiB);
    // GNU tar lists it under its real name and size.
    expect(execFileSync('tar', ['-tvf', archive]).toString()).toMatch(/ 8589934592 .* big\n/);

    for (const extractor of ['gnu', 'ours'] as const) {
      const out = await newDir(`out-${extractor}`);
      if (extractor === 'gnu') execFileSync('tar', ['-xf', archive, '-C', out]);
      else await extractTree(createReadStream(archive), out, { xattrs: false });
      expect((await readdir(out)).sort()).toEqual(['big', 'dense']);
      expect((await stat(join(out, 'big'))).size).toBe(8 * GiB);
      expect(allocatedBytes(join(out, 'big'))).toBeLessThan(8 * MiB);
      expect(runsHash(join(out, 'big'), runs)).toBe(hash);
      expect(runsHash(join(out, 'big'), [[2 * GiB, 4096]])).toBe(runsHash(join(source, 'big'), [[2 * GiB, 4096]]));
      execFileSync('cmp', [join(source, 'dense'), join(out, 'dense')]);
    }
  });

  it('restores a 1 GiB sparse file byte for byte, through GNU tar and ours, also one GNU tar wrote', async () => {
    const runs = Array.from({ length: 20 }, (_, i) => [i * 50 * MiB + 512 * i, 70_000 + i] as const);
    makeSparseFile(join(source, 'mid'), GiB, runs);
    execFileSync('truncate', ['-s', String(GiB), join(source, 'void')]);
    const { archive } = await pack();
    const gnuArchive = join(work.path, 'gnu.tar');
    execFileSync('tar', ['--sparse', '--format=pax', '-cf', gnuArchive, '-C', source, 'mid', 'void']);
    const cases = [
      ['gnu-of-ours', archive],
      ['ours-of-ours', archive],
      ['ours-of-gnu', gnuArchive],
    ] as const;
    for (const [name, tar] of cases) {
      const out = await newDir(name);
      if (name.startsWith('gnu')) execFileSync('tar', ['-xf', tar, '-C', out]);
      else await extractTree(createReadStream(tar), out, { xattrs: false });
      for (const file of ['mid', 'void']) {
        execFileSync('cmp', [join(source, file), join(out, file)]);
        expect(allocatedBytes(join(out, file)), `${name} ${file}`).toBeLessThan(4 * MiB);
      }
    }
  });

  it('without Perl, archives a sparse file whole (holes as zeros): slower, nothing lost', async () => {
    makeSparseFile(join(source, 'f'), 32 * MiB, [[5 * MiB, 4096]]);
    const path = process.env['PATH'];
    process.env['PATH'] = join(work.path, 'empty');
    let packed;
    try {
      packed = await pack();
    } finally {
      process.env['PATH'] = path;
    }
    expect(packed.stats.sparseFiles).toBe(0);
    expect((await stat(packed.archive)).size).toBeGreaterThan(32 * MiB);
    const out = await newDir('out');
    await extractTree(createReadStream(packed.archive), out, { xattrs: false });
    execFileSync('cmp', [join(source, 'f'), join(out, 'f')]);
  });

  it('fails the archive when the probe fails, rather than read and store the holes (red team round 6)', async () => {
    makeSparseFile(join(source, 'f'), 1024 * MiB, [[5 * MiB, 4096]]);
    // A perl that answers as the real one does for a file whose holes keep moving under it.
    const bin = await newDir('bin');
    await writeFile(join(bin, 'perl'), '#!/bin/sh\nread id rest\necho "error $id the file kept changing"\n', {
      mode: 0o755,
    });
    const path = process.env['PATH'];
    process.env['PATH'] = `${bin}:${path ?? ''}`;
    let error: unknown;
    try {
      error = await pack().then(
        () => undefined,
        (e: unknown) => e,
      );
    } finally {
      process.env['PATH'] = path;
    }
    expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
    expect((error as Error).message).toMatch(/sparse file 'f' could not be located \(the file kept changing\)/);
    expect(proberProcesses()).toEqual([]);
  });

  it('probes all the sparse files of an archive through one Perl, and leaves none behind', async () => {
    for (let i = 0; i < 200; i++) execFileSync('truncate', ['-s', String(5 * MiB), join(source, `e${i}`)]);
    makeSparseFile(join(source, 'data'), 64 * MiB, [[32 * MiB, 4096]]);
    const started = SparseProber.started;
    const { stats } = await pack();
    expect(stats.sparseFiles).toBe(201);
    expect(stats.contentBytes).toBe(4096);
    expect(SparseProber.started - started).toBe(1);
    expect(proberProcesses()).toEqual([]);
  });

  it('leaves no Perl behind when the archive stream is closed midway', async () => {
    for (let i = 0; i < 20; i++) makeSparseFile(join(source, `f${i}`), 64 * MiB, [[0, 2 * MiB]]);
    const packed = packTree(source, { xattrs: false });
    const started = SparseProber.started;
    for await (const chunk of packed.stream) {
      expect((chunk as Buffer).length).toBeGreaterThan(0);
      break;
    }
    await expect(packed.done).rejects.toThrow();
    expect(SparseProber.started - started).toBe(1);
    expect(proberProcesses()).toEqual([]);
  });

  it('leaves dense files as they were', async () => {
    await writeFile(join(source, 'dense'), randomBytes(6 * MiB));
    const { archive, stats } = await pack();
    expect(stats.sparseFiles).toBe(0);
    expect(execFileSync('tar', ['-tvf', archive]).toString()).not.toMatch(/GNUSparse/);
    expect((await stat(archive)).size).toBeGreaterThan(6 * MiB);
  });

  describe('crafted sparse maps', () => {
    const file: TreeEntry = { path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, mtimeMs: 0 };
    /** A sparse entry with `map` (text) and `data`, claiming `realSize`; `pax` replaces the sparse records. */
    const crafted = (map: string, data: Buffer, realSize: number, header?: Buffer): Buffer => {
      const text = Buffer.from(map, 'latin1');
      const body = Buffer.concat([text, padding(text.length), data]);
      const head = header ?? encodeEntryHeader(file, body.length, { realSize });
      return Buffer.concat([head, body, padding(body.length), endOfArchive]);
    };
    const extractError = async (archive: Buffer): Promise<unknown> => {
      const out = await newDir(`crafted-${Math.random().toString(36).slice(2)}`);
      const error = await extractTree(Readable.from([archive]), out, { xattrs: false }).then(
        () => undefined,
        (e: unknown) => e,
      );
      // Nothing of the size the map claimed was made.
      for (const name of await readdir(out)) expect((await stat(join(out, name))).size).toBeLessThan(GiB);
      return error;
    };

    it('extracts a well-formed one', async () => {
      const out = await newDir('good');
      const archive = crafted('2\n0\n3\n10\n2\n', Buffer.from('abcde'), 4096);
      await extractTree(Readable.from([archive]), out, { xattrs: false });
      const content = execFileSync('cat', [join(out, 'f')]);
      expect(content.length).toBe(4096);
      expect(content.subarray(0, 12).toString('latin1')).toBe('abc\0\0\0\0\0\0\0de');
    });

    it('refuses maps that lie, overflow or are malformed, as invalid arguments', async () => {
      const big = 16 * 1024 ** 4 + 1;
      const cases: Array<[string, Buffer]> = [
        ['unsorted', crafted('2\n10\n2\n0\n3\n', Buffer.alloc(5), 4096)],
        ['overlapping', crafted('2\n0\n8\n4\n2\n', Buffer.alloc(10), 4096)],
        ['past the real size', crafted('1\n4095\n2\n', Buffer.alloc(2), 4096)],
        ['more data than mapped', crafted('1\n0\n2\n', Buffer.alloc(700), 4096)],
        ['less data than mapped', crafted('1\n0\n2000\n', Buffer.alloc(20), 4096)],
        ['a huge count', crafted('99999999\n0\n1\n', Buffer.alloc(1), 4096)],
        ['not numbers', crafted('1\n0x10\n1\n', Buffer.alloc(1), 4096)],
        ['a number too long', crafted(`1\n${'9'.repeat(40)}\n1\n`, Buffer.alloc(1), 4096)],
        ['no newline at all', crafted('1'.repeat(600), Buffer.alloc(0), 4096)],
        ['an empty extent inside', crafted('2\n0\n0\n5\n1\n', Buffer.alloc(1), 4096)],
        ['a huge real size', crafted('1\n0\n1\n', Buffer.alloc(1), big)],
        ['a map claiming a huge data offset', crafted(`1\n${2 ** 50}\n1\n`, Buffer.alloc(1), 4096)],
      ];
      for (const [name, archive] of cases) {
        const error = await extractError(archive);
        expect(isWorkbayError(error, 'invalid-argument'), `${name}: ${String(error)}`).toBe(true);
      }
    });

    it('refuses other GNU sparse formats rather than restore their map as content', async () => {
      const header = encodeEntryHeader(file, 512 + 1, { realSize: 4096 });
      // Same length: the pax records now say 0.1.
      const old = Buffer.from(header.toString('latin1').replace('GNU.sparse.major=1', 'GNU.sparse.major=0'), 'latin1');
      const fixed = encodeEntryHeaderChecksum(old);
      const error = await extractError(crafted('1\n0\n1\n', Buffer.alloc(1), 4096, fixed));
      expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
      expect(String(error)).toMatch(/only the GNU sparse format 1.0/);
    });
  });
});

/** Recomputes the ustar checksums of the header blocks in `blocks` (after a test edited a pax record). */
function encodeEntryHeaderChecksum(blocks: Buffer): Buffer {
  const out = Buffer.from(blocks);
  for (const at of [0, out.length - 512]) {
    out.fill(0x20, at + 148, at + 156);
    let sum = 0;
    for (let i = at; i < at + 512; i++) sum += out[i] as number;
    out.write(`${sum.toString(8).padStart(6, '0')}\0 `, at + 148, 8, 'latin1');
  }
  return out;
}
