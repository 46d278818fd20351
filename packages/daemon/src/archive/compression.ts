/**
 * Optional compression of archive streams: gzip through node's zlib, zstd through the `zstd` CLI (streamed via
 * stdin/stdout; far faster than gzip on these machines). Decompression detects the format from magic bytes,
 * so a reader does not need to know how an object was written.
 */
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { Duplex, PassThrough, Readable } from 'node:stream';
import { createGunzip, createGzip, constants as zlibConstants } from 'node:zlib';
import { FailedPreconditionError } from '../errors.js';
import { hasProgram } from '../util/process.js';

export type Compression = 'none' | 'gzip' | 'zstd';

const gzipMagic = Buffer.from([0x1f, 0x8b]);
const zstdMagic = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

export async function assertCompressionAvailable(compression: Compression): Promise<void> {
  if (compression === 'zstd' && !(await hasProgram('zstd'))) {
    throw new FailedPreconditionError("compression 'zstd' needs the zstd program on PATH");
  }
}

/** A duplex that pipes through `command args` (stdin → stdout); a non-zero exit destroys it with stderr. */
class ProcessDuplex extends Duplex {
  private readonly child: ChildProcessWithoutNullStreams;
  private stderr = '';

  constructor(
    private readonly command: string,
    args: string[],
  ) {
    super();
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (chunk: Buffer) => {
      if (this.stderr.length < 4096) this.stderr += chunk.toString();
    });
    this.child.stdout.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) this.child.stdout.pause();
    });
    this.child.on('error', (error) => this.destroy(error));
    this.child.stdin.on('error', (error) => this.destroy(error));
    // 'close' comes after stdout ended, so everything was pushed by then.
    this.child.on('close', (code, signal) => {
      if (code === 0) this.push(null);
      else if (!this.destroyed) {
        this.destroy(new Error(`${this.command} failed (${signal ?? `exit ${code}`}): ${this.stderr.trim()}`));
      }
    });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.child.stdin.write(chunk)) callback();
    else this.child.stdin.once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.child.stdin.end(() => callback());
  }

  override _read(): void {
    this.child.stdout.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
    callback(error);
  }
}

/** A stream that compresses what is written to it. */
export function compressStream(compression: Compression, level?: number): Duplex {
  switch (compression) {
    case 'none':
      return new PassThrough();
    case 'gzip':
      return createGzip({ level: level ?? zlibConstants.Z_BEST_SPEED });
    case 'zstd':
      return new ProcessDuplex('zstd', ['-q', '-c', `-${level ?? 1}`, '-T0']);
  }
}

/** Peeks at the first bytes of `input` and returns a stream of the decompressed content. */
export async function decompressAuto(input: Readable): Promise<Readable> {
  const iterator = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head = Buffer.alloc(0);
  while (head.length < 4) {
    const next = await iterator.next();
    if (next.done) break;
    head = Buffer.concat([head, next.value]);
  }
  async function* replay(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  }
  const body = Readable.from(replay(), { objectMode: false });
  if (head.subarray(0, 2).equals(gzipMagic)) {
    const out = createGunzip();
    body.on('error', (error) => out.destroy(error));
    return body.pipe(out);
  }
  if (head.subarray(0, 4).equals(zstdMagic)) {
    if (!(await hasProgram('zstd')))
      throw new FailedPreconditionError('archive is zstd-compressed but zstd is not installed');
    const out = new ProcessDuplex('zstd', ['-q', '-d', '-c']);
    body.on('error', (error) => out.destroy(error));
    return body.pipe(out);
  }
  return body;
}
