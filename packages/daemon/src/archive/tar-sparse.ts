/**
 * Sparse files in tar archives, in GNU's pax format 1.0 (what `tar --sparse --format=pax` writes and every GNU tar
 * since 1.15.92 extracts): the pax header says `GNU.sparse.major=1`, `GNU.sparse.minor=0`, the real name and size
 * (`GNU.sparse.name`, `GNU.sparse.realsize`); the entry's data area starts with the map, decimal numbers each
 * followed by a newline (the count of extents, then each one's offset and length), zero-padded to a block, and
 * then holds the extents' data back to back. A file ending in a hole ends its map with `realsize 0`, after which
 * GNU tar truncates the file to that size.
 *
 * Reading one is the hostile-input path: the map is bounded (its bytes and its count), its extents must be
 * sorted, non-overlapping and inside the real size, the real size is bounded, and the stored data must be exactly
 * what the map says; anything else is a malformed archive (INVALID_ARGUMENT), never a huge allocation.
 */
import type { FileHandle } from 'node:fs/promises';
import { InvalidArgumentError } from '../errors.js';
import type { SafeTreeWriter } from './safe-writer.js';
import type { TreeEntry } from './tree.js';
import { extentBytes, maxExtents, maxSparseSize } from './sparse.js';
import { blockSize } from './tar-header.js';

/** Extents in a map we read: ours write at most {@link maxExtents} (and a final `realsize 0`). */
const maxMapExtents = maxExtents + 1;
/** The map's text at most: every number of it at 16 digits (safe integers) and its newline. */
const maxMapBytes = (1 + 2 * maxMapExtents) * 17;

/** The map and padding that start a sparse entry's data area (see above). */
export function encodeSparseMap(extents: readonly number[], realSize: number): Buffer {
  const pairs = [...extents];
  const last = pairs.length === 0 ? 0 : (pairs.at(-2) as number) + (pairs.at(-1) as number);
  if (last < realSize || pairs.length === 0) pairs.push(realSize, 0);
  const text = Buffer.from(`${pairs.length / 2}\n${pairs.map((n) => `${n}\n`).join('')}`, 'latin1');
  const padded = Buffer.alloc(Math.ceil(text.length / blockSize) * blockSize);
  text.copy(padded);
  return padded;
}

/**
 * Reads the data of `extents` of an open file, exactly as many bytes as they hold: a file that shrank while
 * read is padded with zeros, so the archive stays well-formed; `changed` reports it.
 */
export async function* readExtents(
  handle: FileHandle,
  extents: readonly number[],
  changed: () => void,
  signal?: AbortSignal,
  chunk = 1024 * 1024,
): AsyncGenerator<Buffer> {
  for (let i = 0; i < extents.length; i += 2) {
    const start = extents[i] as number;
    const end = start + (extents[i + 1] as number);
    for (let position = start; position < end;) {
      signal?.throwIfAborted();
      const want = Math.min(chunk, end - position);
      const buffer = Buffer.allocUnsafe(want);
      const { bytesRead } = await handle.read(buffer, 0, want, position);
      if (bytesRead === 0) {
        changed();
        buffer.fill(0);
        yield buffer;
        position += want;
        continue;
      }
      yield bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
      position += bytesRead;
    }
  }
}

function malformed(path: string, reason: string): InvalidArgumentError {
  return new InvalidArgumentError('archive', `sparse entry '${path.slice(0, 200)}': ${reason}`);
}

/**
 * The sparse format of an entry's pax records: undefined for no sparse file, the real name and size for GNU 1.0;
 * any other GNU sparse format is refused (its data area would otherwise be restored as the file's content).
 */
export function sparseHeader(
  pax: Readonly<Record<string, string>>,
  name: string,
): { name: string; realSize: number } | undefined {
  if (!Object.keys(pax).some((key) => key.startsWith('GNU.sparse.'))) return undefined;
  if (pax['GNU.sparse.major'] !== '1' || pax['GNU.sparse.minor'] !== '0') {
    throw malformed(name, 'only the GNU sparse format 1.0 is supported');
  }
  const realName = pax['GNU.sparse.name'];
  if (realName === undefined || realName === '') throw malformed(name, 'GNU.sparse.name is missing');
  const realSize = pax['GNU.sparse.realsize'] ?? '';
  if (!/^\d{1,16}$/.test(realSize) || Number(realSize) > maxSparseSize) {
    throw malformed(
      realName,
      `GNU.sparse.realsize ${JSON.stringify(realSize.slice(0, 40))} is not a size up to 16 TiB`,
    );
  }
  return { name: realName, realSize: Number(realSize) };
}

/** One piece of a sparse entry's data and where it goes in the file. */
export interface SparsePiece {
  readonly position: number;
  readonly data: Buffer;
}

/**
 * Parses the map at the start of a sparse entry's data area (`stored` bytes in all, from `chunks`), then yields
 * the data with its places in the file. Throws InvalidArgumentError when the map is malformed, lies about the
 * data, or the data does not match it (the map, and that it fits the entry's size, before any data is yielded).
 */
export async function* readSparseEntry(
  chunks: AsyncIterable<Buffer>,
  stored: number,
  realSize: number,
  path: string,
): AsyncGenerator<SparsePiece> {
  const iterator = chunks[Symbol.asyncIterator]();
  let head: Buffer = Buffer.alloc(0);
  let map = parseMap(head, realSize, path);
  while (!map) {
    if (head.length > maxMapBytes || head.length >= stored) throw malformed(path, 'no complete sparse map');
    const next = await iterator.next();
    if (next.done) throw malformed(path, 'the data ends inside the sparse map');
    head = Buffer.concat([head, next.value]);
    map = parseMap(head, realSize, path);
  }
  const { extents, textBytes } = map;
  const mapBytes = Math.ceil(textBytes / blockSize) * blockSize;
  if (mapBytes + extentBytes(extents) !== stored) {
    throw malformed(path, `the map holds ${extentBytes(extents)} bytes of data, the entry ${stored - mapBytes}`);
  }
  // The padding after the map's text (zeros), then the data of extent after extent.
  let skip = mapBytes - textBytes;
  let rest: Buffer = head.subarray(textBytes);
  let index = 0;
  let offset = 0;
  for (;;) {
    if (skip > 0) {
      const padding = rest.subarray(0, skip);
      if (padding.some((byte) => byte !== 0)) throw malformed(path, 'the sparse map is not padded with zeros');
      skip -= padding.length;
      rest = rest.subarray(padding.length);
    }
    while (rest.length > 0) {
      if (index >= extents.length) throw malformed(path, 'more data than the map holds');
      const length = extents[index + 1] as number;
      const take = Math.min(length - offset, rest.length);
      yield { position: (extents[index] as number) + offset, data: rest.subarray(0, take) };
      rest = rest.subarray(take);
      offset += take;
      if (offset === length) {
        index += 2;
        offset = 0;
      }
    }
    const next = await iterator.next();
    if (next.done) break;
    rest = next.value;
  }
  if (index < extents.length) throw malformed(path, 'the data ends before the map does');
}

/** The map in `head`, or undefined while it is incomplete; extents of length 0 (the final `realsize 0`) are dropped. */
function parseMap(head: Buffer, realSize: number, path: string): { extents: number[]; textBytes: number } | undefined {
  let at = 0;
  const number = (): number | undefined => {
    const end = head.indexOf(0x0a, at);
    if (end === -1) {
      if (head.length - at > 16) throw malformed(path, 'a number of the sparse map is too long');
      return undefined;
    }
    const text = head.toString('latin1', at, end);
    if (!/^\d{1,16}$/.test(text)) throw malformed(path, `the sparse map holds ${JSON.stringify(text.slice(0, 20))}`);
    at = end + 1;
    return Number(text);
  };
  const count = number();
  if (count === undefined) return undefined;
  if (count > maxMapExtents) throw malformed(path, `the sparse map lists ${count} extents, more than ${maxMapExtents}`);
  const extents: number[] = [];
  let previousEnd = 0;
  for (let i = 0; i < count; i++) {
    const offset = number();
    if (offset === undefined) return undefined;
    const length = number();
    if (length === undefined) return undefined;
    if (offset < previousEnd) throw malformed(path, `extent ${i} overlaps or precedes the one before it`);
    if (offset + length > realSize) throw malformed(path, `extent ${i} ends past the real size ${realSize}`);
    if (length === 0) {
      if (i !== count - 1) throw malformed(path, `extent ${i} is empty`);
      continue;
    }
    extents.push(offset, length);
    previousEnd = offset + length;
  }
  return { extents, textBytes: at };
}

/**
 * Writes a sparse entry (tar-sparse.ts) as a sparse file: sized first, its data written at its extents, holes left
 * unwritten. The map is checked before the file is created. Returns the data bytes written.
 */
export async function extractSparse(
  writer: SafeTreeWriter,
  entry: TreeEntry,
  data: AsyncIterable<Buffer>,
  stored: number,
): Promise<number> {
  const pieces = readSparseEntry(data, stored, entry.size, entry.path);
  let next = await pieces.next();
  const { handle, path } = await writer.createFile(entry);
  let written = 0;
  try {
    await handle.truncate(entry.size);
    for (; !next.done; next = await pieces.next()) {
      const { position, data: bytes } = next.value;
      for (let done = 0; done < bytes.length;) {
        done += (await handle.write(bytes, done, bytes.length - done, position + done)).bytesWritten;
      }
      written += bytes.length;
    }
    await writer.finishFile(handle, entry, path);
  } finally {
    await handle.close();
  }
  return written;
}
