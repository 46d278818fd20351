import { type Hash, createHash } from 'node:crypto';
import { type Socket, connect } from 'node:net';
import { Readable } from 'node:stream';
import { DigestMismatchError } from './digest-check.js';

/**
 * Body bytes are read by the socket straight into slabs of this size and handed out as views of them: one
 * allocation per MiB instead of one per 64 KiB read, and no copy. A slab is never written again once a view
 * of it is out, so a reader may keep its chunks.
 */
const slabSize = 1024 * 1024;
/** A slab with less room than this left is retired; the next read goes to a fresh one. */
const minRead = 64 * 1024;
/** Error bodies are small XML documents; anything larger is cut (only its code and message are needed). */
const maxErrorBody = 64 * 1024;
const maxHead = 64 * 1024;

/** The status line and headers of a response; header names lower-cased, repeated headers joined by ", ". */
export interface HttpHead {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
}

/** A non-200 answer, with its S3 error code (`NoSuchKey`, `AccessDenied`, …) when the body carried one. */
export class HttpStatusError extends Error {
  readonly code: string | undefined;
  constructor(
    readonly status: number,
    code: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = code ?? 'HttpStatusError';
    this.code = code ?? (status === 404 ? 'NotFound' : undefined);
  }
}

/** A 200 answer whose body is not delimited by Content-Length (chunked): the caller takes another path. */
export class UnframedBodyError extends Error {}

/** The body ended before Content-Length said it would. */
export class TruncatedBodyError extends Error {
  constructor(
    readonly received: number,
    readonly expected: number,
  ) {
    super(`the connection closed after ${received} of ${expected} bytes`);
  }
}

function parseHead(text: string): HttpHead {
  const lines = text.split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1]);
  if (!Number.isInteger(status)) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0]?.slice(0, 80))}`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { status, headers };
}

function xmlField(xml: string, field: string): string | undefined {
  return new RegExp(`<${field}>([^<]*)</${field}>`).exec(xml)?.[1];
}

/**
 * One plain-HTTP GET on its own connection, its body a Readable of views into slabs the socket reads into
 * (`net.Socket`'s `onread`). Node's HTTP client costs about 0.9 s of CPU per GiB received on this machine
 * (a fresh 64 KiB buffer per read, its parser, a stream hop); this costs about 0.35 s, as much as curl.
 *
 * `head` resolves with the status and headers of a 200 answer; any other status rejects it with an
 * {@link HttpStatusError} (the S3 error code from the body), a body without Content-Length with
 * {@link UnframedBodyError}. The stream then ends after exactly Content-Length bytes, or fails with
 * {@link TruncatedBodyError} if the connection closes earlier, or with the socket's error.
 */
export class HttpGetStream extends Readable {
  readonly head: Promise<HttpHead>;
  private readonly socket: Socket;
  private slab: Buffer;
  private hash: Hash | undefined;
  private expectedDigest: string | undefined;
  private actualDigest: string | undefined;
  private used = 0;
  private headBytes: Buffer[] = [];
  private headLength = 0;
  private status = 0;
  private responseHead: HttpHead | undefined;
  private errorBody: Buffer[] | undefined;
  private expected = 0;
  /** Body bytes off the socket, and those pushed to the reader. */
  private arrived = 0;
  private received = 0;
  private reading = false;
  private readonly pending: Buffer[] = [];
  private deferredError: Error | undefined;
  private paused = false;
  private headSettled = false;
  private settleHead!: { resolve: (head: HttpHead) => void; reject: (error: Error) => void };

  /**
   * `options.expectedDigest` runs on a 200 answer's head: if it returns a `sha256:` digest, the body is
   * hashed as it arrives and the stream ends only if the bytes match it, else fails
   * with {@link DigestMismatchError} naming `options.what`. If it throws, `head` rejects with that error.
   */
  constructor(
    url: URL,
    private readonly options: {
      readonly expectedDigest?: (head: HttpHead) => string | undefined;
      readonly what?: string;
    } = {},
  ) {
    super({ highWaterMark: 4 * slabSize });
    this.head = new Promise<HttpHead>((resolve, reject) => (this.settleHead = { resolve, reject }));
    // Whoever awaits `head` hears of a failure there; this only keeps an unawaited one from being unhandled.
    this.head.catch(() => undefined);
    // Whoever awaits `head` hears of a failure there; the stream's own 'error' is for its reader.
    const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, 'Connection: close'];
    this.slab = this.newSlab();
    this.socket = connect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || 80),
      onread: { buffer: () => this.nextBuffer(), callback: (n: number, buf: Uint8Array) => this.onBytes(n, buf) },
    });
    this.socket.setNoDelay(true);
    this.socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    this.socket.on('error', (error) => this.fail(error));
    this.socket.on('end', () => this.onEnd());
    this.socket.on('close', () => this.onEnd());
  }

  private newSlab(): Buffer {
    return Buffer.allocUnsafe(slabSize);
  }

  private nextBuffer(): Uint8Array {
    if (slabSize - this.used < minRead) {
      this.slab = this.newSlab();
      this.used = 0;
    }
    return this.slab.subarray(this.used);
  }

  private onBytes(n: number, buf: Uint8Array): boolean {
    this.used += n;
    let chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
    if (!this.responseHead) {
      chunk = this.takeHead(chunk) ?? Buffer.alloc(0);
      if (!this.responseHead || chunk.length === 0) return true;
    }
    if (this.errorBody) {
      this.takeErrorBody(chunk);
      return true;
    }
    if (this.arrived + chunk.length > this.expected) chunk = chunk.subarray(0, this.expected - this.arrived);
    this.arrived += chunk.length;
    this.hash?.update(chunk);
    if (this.arrived === this.expected) this.bodyArrived();
    if (this.reading) return this.onBody(chunk);
    // Nothing is pushed before the first read, so that whatever the reader attaches (a digest check, an
    // 'error' listener) is in place first: a failure must not be emitted to nobody.
    this.pending.push(chunk);
    this.paused = true;
    return false;
  }

  private onBody(chunk: Buffer): boolean {
    this.received += chunk.length;
    const more = chunk.length === 0 || this.push(chunk);
    if (this.received === this.expected) {
      this.end();
      return true;
    }
    // Backpressure: `false` stops the socket reading until the reader asks for more (`_read`).
    if (!more) this.paused = true;
    return more;
  }

  private bodyArrived(): void {
    this.socket.destroy();
    if (this.hash) this.actualDigest = `sha256:${this.hash.digest('hex')}`;
  }

  /** Ends the stream once every byte is pushed, unless they do not hash to the expected digest. */
  private end(): void {
    const actual = this.actualDigest;
    if (actual === undefined || actual === this.expectedDigest) return void this.push(null);
    this.destroy(new DigestMismatchError(this.options.what ?? 'the download', this.expectedDigest!, actual));
  }

  /** Collects the status line and headers; returns what follows them once they are complete. */
  private takeHead(chunk: Buffer): Buffer | undefined {
    this.headBytes.push(chunk);
    this.headLength += chunk.length;
    const all = this.headBytes.length === 1 ? chunk : Buffer.concat(this.headBytes);
    const end = all.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.headLength > maxHead) this.fail(new Error('the response headers are too large'));
      return undefined;
    }
    this.headBytes = [];
    // The head is copied out of the slab; only body views stay in it.
    const head = parseHead(all.toString('latin1', 0, end));
    this.responseHead = head;
    this.status = head.status;
    const length = head.headers['content-length'];
    if (head.status !== 200) {
      this.errorBody = [];
      this.expected = length !== undefined && /^\d+$/.test(length) ? Number(length) : maxErrorBody;
    } else if (length === undefined || !/^\d+$/.test(length) || head.headers['transfer-encoding'] !== undefined) {
      this.fail(new UnframedBodyError('the response has no Content-Length'));
      return undefined;
    } else {
      this.expected = Number(length);
      try {
        this.expectedDigest = this.options.expectedDigest?.(head);
      } catch (error) {
        this.fail(error as Error);
        return undefined;
      }
      // Hashed on this thread as the bytes arrive, with no copy. A worker thread fed through shared memory
      // cost more CPU in all (0.4 s per GiB more) and was slower with MinIO on the same two cores.
      if (this.expectedDigest) this.hash = createHash('sha256');
      this.headSettled = true;
      this.settleHead.resolve(head);
      if (this.expected === 0) {
        this.pending.push(Buffer.alloc(0));
        this.bodyArrived();
      }
    }
    return all.subarray(end + 4);
  }

  private takeErrorBody(chunk: Buffer): void {
    this.errorBody!.push(Buffer.from(chunk));
    this.arrived += chunk.length;
    if (this.arrived >= Math.min(this.expected, maxErrorBody)) this.onErrorBody();
  }

  private onErrorBody(): void {
    const xml = Buffer.concat(this.errorBody ?? []).toString('utf8');
    this.errorBody = undefined;
    const code = xmlField(xml, 'Code');
    const message = xmlField(xml, 'Message') ?? `HTTP ${this.status}`;
    this.fail(new HttpStatusError(this.status, code, message));
  }

  private onEnd(): void {
    if (this.errorBody) return this.onErrorBody();
    if (!this.responseHead) return this.fail(new Error('the connection closed before a response'));
    if (this.arrived < this.expected) this.fail(new TruncatedBodyError(this.arrived, this.expected));
  }

  private fail(error: Error): void {
    if (this.destroyed) return;
    if (this.headSettled && !this.reading) {
      // Handed out but not read yet: the reader hears of it on its first read.
      this.deferredError ??= error;
      this.socket.destroy();
      return;
    }
    if (this.headSettled) return void this.destroy(error);
    // Nobody has the stream yet: the error goes to whoever awaits `head`, not to an unheard 'error' event.
    this.headSettled = true;
    this.settleHead.reject(error);
    this.destroy();
  }

  override _read(): void {
    let more = true;
    if (!this.reading) {
      this.reading = true;
      if (this.deferredError) return void this.destroy(this.deferredError);
      for (const chunk of this.pending.splice(0)) more = this.onBody(chunk) && more;
    }
    if (!more) return;
    this.paused = false;
    this.resumeReading();
  }

  /** Reads on unless the reader is still full (`paused`) or there is nothing left to read. */
  private resumeReading(): void {
    if (this.paused || !this.reading || this.destroyed || this.arrived === this.expected) return;
    if (!this.socket.destroyed) this.socket.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    if (this.headSettled) return callback(error);
    // Destroyed (e.g. aborted) before the stream was handed out: only `head` hears of it.
    this.headSettled = true;
    this.settleHead.reject(error ?? new Error('the download was closed before a response'));
    callback(null);
  }
}
