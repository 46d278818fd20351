import { ReadStream, read } from 'node:fs';

function readInto(
  fd: number,
  target: Buffer,
  offset: number,
  length: number,
  position: number | null,
): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, target, offset, length, position, (error, bytesRead) => (error ? reject(error) : resolve(bytesRead)));
  });
}

/** Waits for the stream to open its file; a stream destroyed first fails with its error. */
function opened(stream: ReadStream): Promise<void> {
  return new Promise((resolve, reject) => {
    const onReady = (): void => {
      stream.off('close', onClose);
      resolve();
    };
    const onClose = (): void => {
      stream.off('ready', onReady);
      reject(stream.errored ?? new DOMException('The file stream was destroyed before it was read', 'AbortError'));
    };
    stream.once('ready', onReady);
    stream.once('close', onClose);
  });
}

/**
 * A file stream (`fs.createReadStream`, `FileHandle.createReadStream`) nobody has read from yet. Its bytes
 * can go from the file straight into part buffers: the stream's own 64 KiB reads allocate a fresh buffer
 * each, and freeing those (plus copying them into the parts) costs several times what sending them does.
 */
export function isUnreadFileStream(body: unknown): body is ReadStream {
  return (
    body instanceof ReadStream &&
    body.bytesRead === 0 &&
    body.readableLength === 0 &&
    // With an encoding its chunks are text, not the file's bytes.
    body.readableEncoding === null &&
    !body.readableDidRead &&
    !body.destroyed &&
    body.readableFlowing !== true
  );
}

/**
 * Cuts an unread file stream into parts as {@link splitParts} does (exact `partSize` parts, the last
 * shorter, one empty part for an empty file), reading the file into buffers from `acquire` with positioned
 * reads that honour the stream's `start` and `end`. Read to the end, the stream is ended as a consumer would
 * have ended it (closing its file only if it owns it); stopped early, it is destroyed. Destroying the
 * stream meanwhile (an aborted upload) fails the generator with the stream's error; no read is issued after
 * that, so a closed and reused descriptor is never read.
 */
export async function* readFileParts(
  stream: ReadStream,
  partSize: number,
  acquire: () => Buffer | Promise<Buffer>,
): AsyncGenerator<Buffer> {
  const stopped = (): Error =>
    stream.errored ?? new DOMException('The file stream was destroyed before it was read', 'AbortError');
  // Its errors are taken from `stream.errored` and thrown from here; an unheard 'error' event would crash.
  stream.on('error', () => undefined);
  let completed = false;
  try {
    if (stream.destroyed) throw stopped();
    if (stream.pending) await opened(stream);
    if (stream.destroyed) throw stopped();
    const fd = (stream as { fd?: unknown }).fd;
    if (typeof fd !== 'number') throw new Error('the file stream has no descriptor');
    const start = (stream as { start?: number }).start;
    const end = (stream as { end?: number }).end ?? Infinity;
    // Without `start` the stream reads from the descriptor's current offset; so do we.
    let position: number | null = typeof start === 'number' ? start : null;
    let remaining = end - (start ?? 0) + 1;
    let yielded = false;
    for (;;) {
      const target = await acquire();
      let filled = 0;
      while (filled < partSize && remaining > 0) {
        if (stream.destroyed) throw stopped();
        const n = await readInto(fd, target, filled, Math.min(partSize - filled, remaining), position);
        if (stream.destroyed) throw stopped();
        if (n === 0) break;
        filled += n;
        remaining -= n;
        if (position !== null) position += n;
      }
      if (filled === partSize) {
        yielded = true;
        yield target;
        continue;
      }
      // The end: a short last part, or the one empty part of an empty file (none after a full last part).
      if (filled > 0 || !yielded) yield target.subarray(0, filled);
      completed = true;
      return;
    }
  } finally {
    if (completed && !stream.destroyed) {
      // Ends it as if it had been read to the end: it closes its file only if it owns it (`autoClose`);
      // destroying a FileHandle stream would close the caller's handle.
      stream.push(null);
      stream.resume();
    } else {
      stream.destroy();
    }
  }
}
