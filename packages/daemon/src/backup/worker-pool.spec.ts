import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../test-support/tree.js';
import { ChunkWorkerPool, WorkerFailure } from './worker-pool.js';

const dist = fileURLToPath(new URL('../../dist/', import.meta.url));

describe('backup worker threads', () => {
  const dirs: Array<Awaited<ReturnType<typeof tempDir>>> = [];
  afterAll(async () => {
    for (const dir of dirs) await dir.cleanup();
  });

  it('start in a host process run with --input-type=module (their source is a CommonJS script)', async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const data = randomBytes(3 * 1024 * 1024);
    const file = join(dir.path, 'data');
    await writeFile(file, data);
    // The built package in a child process: the flag applies to a whole process, and workers inherit it.
    const script = `
      const { digestFile } = await import(${JSON.stringify(join(dist, 'backup/worker-pool.js'))});
      const { open } = await import('node:fs/promises');
      const handle = await open(${JSON.stringify(file)});
      console.log(await digestFile(handle.fd));
      await handle.close();
      process.exit(0);
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(out.trim()).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('replaces a worker stuck in a call that never returns, failing its job, and goes on with a new one', async () => {
    const dir = await tempDir();
    dirs.push(dir);
    // A write into a FIFO nobody reads: the worker's open() waits for a reader, for ever.
    const fifo = join(dir.path, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const pool = new ChunkWorkerPool(1, { stallMs: 300 });
    try {
      const buffer = new SharedArrayBuffer(1);
      const blobs = [{ offset: 0, length: 1, targets: [{ create: false, absolute: fifo, position: 0 }] }];
      const error = await pool.run({ kind: 'place', buffer, blobs }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WorkerFailure);
      expect((error as WorkerFailure).code).toBe('ESTALLED');
      expect((error as Error).message).toMatch(/answered nothing for \d+ s \(a read or write that does not return\)/);
      expect(pool.stalls).toBe(1);
      expect(pool.stuckThreads).toBe(1);
      // Its only worker is stuck: the pool says it cannot work (the daemon's /live).
      expect(pool.liveness()).toMatch(/1 backup worker threads are stuck .*pool of 1/);

      // The next job runs on a new worker.
      const file = join(dir.path, 'data');
      await writeFile(file, 'hello');
      const fd = openSync(file, 'r');
      try {
        const answer = await pool.run<{ hex: string }>({ kind: 'digest', fd });
        expect(answer.hex).toBe(createHash('sha256').update('hello').digest('hex'));
      } finally {
        closeSync(fd);
      }

      // Once its call returns (a reader comes), the old thread ends (it was terminated) and no longer counts.
      const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        for (let i = 0; i < 200 && pool.stuckThreads > 0; i++) await new Promise((r) => setTimeout(r, 10));
      } finally {
        closeSync(reader);
      }
      expect(pool.stuckThreads).toBe(0);
      expect(pool.liveness()).toBeUndefined();
    } finally {
      await pool.close();
    }
  });
});
