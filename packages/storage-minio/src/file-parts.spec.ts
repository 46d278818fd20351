import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MinioServer } from '@workbay/testing';
import { startMinio } from '@workbay/testing';
import { CancelledError } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUnreadFileStream, readFileParts } from './file-parts.js';
import { MinioStorage } from './minio-storage.js';

const MiB = 1024 * 1024;
let scratch: string;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'workbay-file-parts-'));
});
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

function file(name: string, data: Buffer): string {
  const path = join(scratch, name);
  writeFileSync(path, data);
  return path;
}

async function collect(parts: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  // Copies: the real caller reuses part buffers, and so may a test's acquire.
  for await (const part of parts) out.push(Buffer.from(part));
  return out;
}

const fresh = (size: number) => (): Buffer => Buffer.allocUnsafe(size);

describe('readFileParts', () => {
  it('cuts a file into exact parts, the last one short, bytes in order', async () => {
    const data = randomBytes(100);
    const stream = createReadStream(file('a.bin', data));
    expect(isUnreadFileStream(stream)).toBe(true);
    const parts = await collect(readFileParts(stream, 32, fresh(32)));
    expect(parts.map((p) => p.length)).toEqual([32, 32, 32, 4]);
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    // Ended as a consumer would have, which closes the file it opened.
    await new Promise<void>((resolve) => stream.once('close', () => resolve()));
    expect(stream.closed).toBe(true);
  });

  it('gives no empty part after a full last part, and one empty part for an empty file', async () => {
    const exact = await collect(readFileParts(createReadStream(file('b.bin', randomBytes(64))), 32, fresh(32)));
    expect(exact.map((p) => p.length)).toEqual([32, 32]);
    const empty = await collect(readFileParts(createReadStream(file('c.bin', Buffer.alloc(0))), 32, fresh(32)));
    expect(empty.map((p) => p.length)).toEqual([0]);
  });

  it("honours the stream's start and end", async () => {
    const data = randomBytes(100);
    const stream = createReadStream(file('d.bin', data), { start: 10, end: 59 });
    const parts = await collect(readFileParts(stream, 16, fresh(16)));
    expect(Buffer.concat(parts).equals(data.subarray(10, 60))).toBe(true);
    const head = await collect(readFileParts(createReadStream(file('e.bin', data), { end: 9 }), 16, fresh(16)));
    expect(Buffer.concat(head).equals(data.subarray(0, 10))).toBe(true);
  });

  it("leaves a FileHandle stream's handle open when it does not own it (autoClose: false)", async () => {
    const data = randomBytes(50);
    const handle = await open(file('f.bin', data));
    try {
      const parts = await collect(readFileParts(handle.createReadStream({ autoClose: false }), 16, fresh(16)));
      expect(Buffer.concat(parts).equals(data)).toBe(true);
      // Still usable: the stream ended without closing the caller's handle.
      const again = Buffer.alloc(5);
      await handle.read(again, 0, 5, 0);
      expect(again.equals(data.subarray(0, 5))).toBe(true);
    } finally {
      await handle.close();
    }
  });

  it('fails with the error a destroyed stream carries, and reads nothing more', async () => {
    const stream = createReadStream(file('g.bin', randomBytes(64)));
    const parts = readFileParts(stream, 16, fresh(16))[Symbol.asyncIterator]();
    expect((await parts.next()).value).toHaveLength(16);
    stream.destroy(new Error('aborted by the caller'));
    await expect(parts.next()).rejects.toThrow('aborted by the caller');
  });

  it('fails when the file cannot be opened', async () => {
    const stream = createReadStream(join(scratch, 'missing.bin'));
    await expect(collect(readFileParts(stream, 16, fresh(16)))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('is not used for a file stream somebody already read from, or one that decodes to text', async () => {
    const stream = createReadStream(file('h.bin', randomBytes(64)), { highWaterMark: 16 });
    await new Promise<void>((resolve) => stream.once('readable', () => resolve()));
    stream.read(16);
    expect(isUnreadFileStream(stream)).toBe(false);
    stream.destroy();
    expect(isUnreadFileStream({ pipe: () => undefined })).toBe(false);
    const hex = createReadStream(file('i.bin', randomBytes(8)), { encoding: 'hex' });
    expect(isUnreadFileStream(hex)).toBe(false);
    hex.destroy();
  });
});

describe('MinioStorage uploads of file streams', () => {
  let server: MinioServer;
  let storage: MinioStorage;
  const bucket = 'workbay-file-parts';

  beforeAll(async () => {
    server = await startMinio();
    storage = MinioStorage.fromConfig({
      endpoint: server.endpoint,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
      partSize: 5 * MiB,
      parallelParts: 2,
    });
    await storage.ensureBucket(bucket);
  });
  afterAll(async () => {
    await storage?.close();
    await server?.stop();
  });

  async function downloaded(name: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of await storage.download(bucket, name)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  it('uploads a file stream as a multipart upload, byte-identical, checking an announced digest', async () => {
    const data = randomBytes(12 * MiB + 123);
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const info = await storage.upload(bucket, 'file/multi.bin', createReadStream(file('m.bin', data)), { digest });
    expect(info.size).toBe(data.length);
    expect((await downloaded('file/multi.bin')).equals(data)).toBe(true);
    await expect(
      storage.upload(bucket, 'file/lie.bin', createReadStream(file('m.bin', data)), {
        digest: `sha256:${'0'.repeat(64)}`,
      }),
    ).rejects.toMatchObject({ field: 'digest' });
    expect(await storage.stat(bucket, 'file/lie.bin')).toBeUndefined();
  });

  it('uploads a small file and an empty file as single PUTs', async () => {
    const small = randomBytes(1000);
    await storage.upload(bucket, 'file/small.bin', createReadStream(file('s.bin', small)));
    expect((await downloaded('file/small.bin')).equals(small)).toBe(true);
    await storage.upload(bucket, 'file/empty.bin', createReadStream(file('z.bin', Buffer.alloc(0))));
    expect(await storage.stat(bucket, 'file/empty.bin')).toMatchObject({ size: 0 });
  });

  it('an upload aborted mid-file leaves no object and rejects as cancelled', async () => {
    const controller = new AbortController();
    const stream = createReadStream(file('x.bin', randomBytes(20 * MiB)));
    const upload = storage.upload(bucket, 'file/aborted.bin', stream, { signal: controller.signal });
    controller.abort();
    await expect(upload).rejects.toBeInstanceOf(CancelledError);
    expect(stream.destroyed).toBe(true);
    expect(await storage.stat(bucket, 'file/aborted.bin')).toBeUndefined();
  });
});
