import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MiB, digestStream, generateStream, readAll, sha256Of } from './data.js';

describe('generated data', () => {
  it('produces exactly the requested size and the digest of what it produced', async () => {
    const gen = generateStream(3 * MiB + 5, { chunkSize: 64 * 1024 });
    const bytes = await readAll(gen.stream);
    expect(bytes.length).toBe(3 * MiB + 5);
    expect(await gen.digest).toBe(`sha256:${createHash('sha256').update(bytes).digest('hex')}`);
    expect(gen.produced()).toBe(3 * MiB + 5);
  });

  it('stamps each chunk with its offset so equal-looking chunks differ', async () => {
    const bytes = await readAll(generateStream(4 * 1024, { chunkSize: 1024 }).stream);
    expect(bytes.subarray(0, 1024).equals(bytes.subarray(1024, 2048))).toBe(false);
    expect(bytes.readBigUInt64BE(1024)).toBe(1024n);
  });

  it('fails on purpose after the given number of bytes', async () => {
    const gen = generateStream(10 * MiB, { failAfterBytes: 2 * MiB + 7, failWith: new Error('boom') });
    await expect(digestStream(gen.stream)).rejects.toThrow('boom');
    expect(gen.produced()).toBe(2 * MiB + 7);
    await expect(gen.digest).rejects.toThrow('boom');
  });

  it('digests a stream without keeping it', async () => {
    expect(await digestStream(generateStream(0).stream)).toEqual({ digest: sha256Of(''), size: 0 });
  });
});
