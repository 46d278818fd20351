import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { UnavailableError } from '@workbay/api';

/** Bytes a response's status line and headers may take; a longer head is refused (the store is not a browser). */
export const maxResponseHeadBytes = 64 * 1024;
/** Largest chunk the body stream hands out: each is one buffer the socket was read into, never copied. */
export const bodyChunkBytes = 4 * 1024 * 1024;
/** A chunk is handed out once less than this is left of its buffer: a socket read rarely brings more. */
const minReadRoom = 256 * 1024;

/** A plain `200` response with its length: the only kind {@link getObjectBody} streams itself. */
export interface ObjectBodyResponse {
  /** Header names in lower case; a repeated header keeps its first value. */
  readonly headers: Readonly<Record<string, string>>;
  readonly contentLength: number;
  readonly body: Readable;
}

/**
 * GETs an object's bytes from a presigned plain-HTTP URL, reading the socket straight into the buffers that become
 * the body's chunks. Node's HTTP client copies every body chunk out of the socket's buffer into a new one of its own
 * (64 KiB or less each), and for a GiB that cost 3.4-3.9 s of CPU here where this path takes about a third of it
 * (`npm run bench` in this package): at MinIO's speed on loopback the client, not the store, was the limit.
 *
 * Only the simple case is handled here: status 200 with a `Content-Length` and no transfer coding. For anything
 * else (an error status, a redirect, a chunked body) the promise resolves `undefined` and the connection is closed:
 * the caller asks again through the S3 client, which reads the store's error document and maps it.
 *
 * The body ends only after exactly `Content-Length` bytes; a connection that closes before that fails the stream
 * with UNAVAILABLE naming how far it got. Bytes past the length are never handed out (the request says
 * `Connection: close`). The stream reads the socket only as fast as its reader takes chunks.
 */
export function getObjectBody(url: URL, what: string): Promise<ObjectBodyResponse | undefined> {
  return new Promise((resolve, reject) => {
    const reader = new ObjectBodyReader(what, resolve, reject);
    reader.connect(url);
  });
}

/** What reads the answer to {@link openDirectGet}: the socket reads into `room()`; `onRead` false pauses it. */
export interface DirectGetReader {
  room(): Uint8Array;
  onRead(bytes: number): boolean;
  fail(error: Error): void;
  onClose(): void;
}

/**
 * Sends a plain-HTTP GET of a presigned URL (with `extraHeaders`, each ending in CRLF) on a socket that reads straight
 * into the reader's buffers; the connection is closed after the answer (`Connection: close`).
 */
export function openDirectGet(url: URL, extraHeaders: string, reader: DirectGetReader): Socket {
  const request =
    `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUser-Agent: workbay-storage-minio\r\n` +
    `${extraHeaders}Connection: close\r\n\r\n`;
  const socket = connect(
    {
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || 80),
      onread: { buffer: () => reader.room(), callback: (bytes) => reader.onRead(bytes) },
    },
    () => socket.write(request),
  );
  socket.on('error', (error) => reader.fail(error));
  socket.on('close', () => reader.onClose());
  return socket;
}

type Phase = 'head' | 'body' | 'done';

class ObjectBodyReader {
  private socket: Socket | undefined;
  private phase: Phase = 'head';
  /** The buffer reads land in; `chunkStart` is where the current chunk's bytes begin, `filled` where they end. */
  private arena = Buffer.allocUnsafe(maxResponseHeadBytes);
  private chunkStart = 0;
  private filled = 0;
  private expected = 0;
  private received = 0;
  private body: Readable | undefined;

  constructor(
    private readonly what: string,
    private readonly resolve: (response: ObjectBodyResponse | undefined) => void,
    private readonly reject: (error: Error) => void,
  ) {}

  connect(url: URL): void {
    this.socket = openDirectGet(url, '', {
      room: () => this.room(),
      onRead: (bytes) => this.onRead(bytes),
      fail: (error) => this.fail(error),
      onClose: () => this.onClose(),
    });
  }

  /** Where the next read goes: the rest of the current buffer. */
  private room(): Uint8Array {
    return this.arena.subarray(this.filled);
  }

  /** Returns false to pause the socket (the body's reader is behind). */
  private onRead(bytes: number): boolean {
    this.filled += bytes;
    if (this.phase === 'head') return this.onHeadBytes();
    if (this.phase !== 'body') return false;
    this.received += bytes;
    return this.afterBodyBytes();
  }

  private onHeadBytes(): boolean {
    const end = this.arena.subarray(0, this.filled).indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.filled < this.arena.length) return true;
      this.fail(new UnavailableError(`${this.what}: the store's response head is over ${maxResponseHeadBytes} bytes`));
      return false;
    }
    const head = parseHead(this.arena.toString('latin1', 0, end));
    if (!head) {
      // Not the simple case: the S3 client reads it instead (see getObjectBody).
      this.phase = 'done';
      this.socket?.destroy();
      this.resolve(undefined);
      return false;
    }
    this.phase = 'body';
    this.expected = head.contentLength;
    const bodyStart = end + 4;
    this.received = this.filled - bodyStart;
    // The body's first bytes stay where they are; the chunk begins after the head.
    this.chunkStart = bodyStart;
    this.body = new Readable({
      // Two chunks wait for the reader at most; then the socket pauses until it takes one.
      highWaterMark: 2 * bodyChunkBytes,
      read: () => this.socket?.resume(),
      destroy: (error, callback) => {
        this.phase = 'done';
        this.socket?.destroy();
        callback(error);
      },
    });
    this.resolve({ headers: head.headers, contentLength: head.contentLength, body: this.body });
    return this.afterBodyBytes();
  }

  private afterBodyBytes(): boolean {
    if (this.received >= this.expected) {
      // Anything past the declared length is not the object's.
      this.filled -= this.received - this.expected;
      this.received = this.expected;
      this.phase = 'done';
      const more = this.handOut();
      this.body?.push(null);
      this.socket?.destroy();
      return more;
    }
    if (this.arena.length - this.filled >= minReadRoom) return true;
    return this.handOut();
  }

  /** Pushes the bytes read so far as one chunk and starts a new buffer; false when the reader has enough. */
  private handOut(): boolean {
    const chunk = this.arena.subarray(this.chunkStart, this.filled);
    const left = this.expected - this.received;
    this.arena = Buffer.allocUnsafe(Math.max(Math.min(bodyChunkBytes, left), 1));
    this.chunkStart = 0;
    this.filled = 0;
    if (chunk.length === 0) return true;
    return this.body?.push(chunk) ?? false;
  }

  private onClose(): void {
    if (this.phase === 'done') return;
    if (this.phase === 'head') {
      this.fail(new UnavailableError(`${this.what}: the store closed the connection before it answered`));
      return;
    }
    this.fail(
      new UnavailableError(
        `${this.what}: the store closed the connection after ${this.received} of ${this.expected} bytes`,
      ),
    );
  }

  private fail(error: Error): void {
    const phase = this.phase;
    this.phase = 'done';
    this.socket?.destroy();
    if (phase === 'head') this.reject(error);
    else if (phase === 'body') this.body?.destroy(error);
  }
}

interface ParsedHead {
  readonly contentLength: number;
  readonly headers: Record<string, string>;
}

/** The head of a plain `200` with a length and no transfer coding, or undefined for anything else. */
export function parseHead(head: string): ParsedHead | undefined {
  const lines = head.split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? '');
  if (status?.[1] !== '200') return undefined;
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    // A header line without a name (or a folded continuation, obsolete since RFC 7230) is not the simple case.
    if (colon <= 0 || /^[ \t]/.test(line)) return undefined;
    const name = line.slice(0, colon).toLowerCase();
    // Two lengths are the classic way to make two readers disagree on where a body ends.
    if (name === 'content-length' && headers[name] !== undefined) return undefined;
    headers[name] ??= line.slice(colon + 1).trim();
  }
  if (headers['transfer-encoding'] !== undefined) return undefined;
  const length = headers['content-length'];
  if (length === undefined || !/^\d{1,15}$/.test(length)) return undefined;
  return { contentLength: Number(length), headers };
}
