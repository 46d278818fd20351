import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { CancelledError, UnavailableError } from '@workbay/api';
import { maxResponseHeadBytes, openDirectGet, parseHead } from './object-body.js';

/**
 * Reads bytes `offset …` of an object into `into` over a presigned plain-HTTP GET with a `Range`, the socket read
 * straight into the caller's buffer: no buffer of our own per chunk, so nothing for the garbage collector. A
 * streamed download allocates each chunk afresh, and for a GiB V8's major collections (set off by that much external
 * memory) took about 1 s of CPU here, more than the read itself (`npm run bench` in this package). A restore reading
 * packs into its workers' shared memory is the caller this is for (`RemoteStorage.readInto`).
 *
 * Resolves the number of bytes read: `into.length`, or fewer when the object ends first (0 past its end, which the
 * store answers 416). Resolves `undefined`, the connection closed, for anything but a plain `206` (or a `200` to a
 * read from offset 0) with a length: the caller asks again through the S3 client, which maps the store's error. A
 * connection closed early rejects with UNAVAILABLE naming how far it got; an abort with CANCELLED.
 */
export function readObjectRange(
  url: URL,
  into: Uint8Array,
  offset: number,
  what: string,
  signal?: AbortSignal,
): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    new RangeReader(into, offset, what, resolve, reject, signal).connect(url);
  });
}

class RangeReader {
  private socket: Socket | undefined;
  private settled = false;
  /** The response head, and whatever body bytes came with it. */
  private readonly head = Buffer.allocUnsafe(maxResponseHeadBytes);
  private headFilled = 0;
  private inBody = false;
  private filled = 0;
  private expected = 0;
  private readonly detach: () => void;

  constructor(
    private readonly into: Uint8Array,
    private readonly offset: number,
    private readonly what: string,
    private readonly resolve: (bytes: number | undefined) => void,
    private readonly reject: (error: Error) => void,
    signal: AbortSignal | undefined,
  ) {
    const abort = (): void => this.fail(new CancelledError(`${what}: the read was cancelled`));
    signal?.addEventListener('abort', abort, { once: true });
    this.detach = () => signal?.removeEventListener('abort', abort);
    if (signal?.aborted) abort();
  }

  connect(url: URL): void {
    if (this.settled) return;
    const last = this.offset + this.into.length - 1;
    this.socket = openDirectGet(url, `Range: bytes=${this.offset}-${last}\r\n`, {
      room: () => this.room(),
      onRead: (bytes) => this.onRead(bytes),
      fail: (error) => this.fail(error),
      onClose: () => this.onClose(),
    });
  }

  /** The head buffer until the head is in, then the rest of the caller's buffer (never empty while reading). */
  private room(): Uint8Array {
    return this.inBody ? this.into.subarray(this.filled, this.expected) : this.head.subarray(this.headFilled);
  }

  private onRead(bytes: number): boolean {
    if (this.settled) return false;
    if (this.inBody) {
      this.filled += bytes;
      return this.checkDone();
    }
    this.headFilled += bytes;
    const end = this.head.subarray(0, this.headFilled).indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.headFilled < this.head.length) return true;
      this.fail(new UnavailableError(`${this.what}: the store's response head is over ${maxResponseHeadBytes} bytes`));
      return false;
    }
    const length = this.bodyLength(this.head.toString('latin1', 0, end));
    if (length === undefined) {
      this.finish(undefined);
      return false;
    }
    this.expected = Math.min(length, this.into.length);
    this.inBody = true;
    // Body bytes that came with the head (the store sends no more than the range asked for).
    const early = this.head.subarray(end + 4, Math.min(this.headFilled, end + 4 + this.expected));
    this.into.set(early, 0);
    this.filled = early.length;
    return this.checkDone();
  }

  /** The body's length for a response read here, or undefined for one the S3 client should read (see above). */
  private bodyLength(head: string): number | undefined {
    const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(head)?.[1];
    // Past the object's end: nothing to read (the store answers 404 for a missing object, before any range check).
    if (status === '416') return 0;
    // 206 is the range asked for; a 200 is the whole object, which is the range only when it starts at 0.
    if (status !== '206' && !(status === '200' && this.offset === 0)) return undefined;
    // parseHead reads the simple case of a 200: the same head with that status line.
    return parseHead(head.replace(/^HTTP\/1\.([01]) \d{3}/, 'HTTP/1.$1 200'))?.contentLength;
  }

  private checkDone(): boolean {
    if (this.filled < this.expected) return true;
    this.finish(this.filled);
    return false;
  }

  private onClose(): void {
    if (this.settled) return;
    this.fail(
      new UnavailableError(
        this.inBody
          ? `${this.what}: the store closed the connection after ${this.filled} of ${this.expected} bytes`
          : `${this.what}: the store closed the connection before it answered`,
      ),
    );
  }

  private finish(bytes: number | undefined): void {
    if (this.settled) return;
    this.settled = true;
    this.detach();
    this.socket?.destroy();
    this.resolve(bytes);
  }

  private fail(error: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.detach();
    this.socket?.destroy();
    this.reject(error);
  }
}

/** Copies a stream's bytes into `into` until it is full or the stream ends (then closes it); resolves the count. */
export async function fillFrom(stream: Readable, into: Uint8Array, signal?: AbortSignal): Promise<number> {
  let filled = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      signal?.throwIfAborted();
      const take = chunk.subarray(0, into.length - filled);
      into.set(take, filled);
      filled += take.length;
      if (filled === into.length) break;
    }
    return filled;
  } finally {
    stream.destroy();
  }
}
