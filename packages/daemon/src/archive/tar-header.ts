/**
 * Encodes POSIX (pax/ustar) tar headers. Our own encoder rather than tar-stream's because pax records must
 * carry raw bytes: GNU tar stores binary xattr values (e.g. `security.capability`) verbatim in
 * `SCHILY.xattr.*`, and tar-stream can only write strings. Extraction still uses tar-stream's parser; since it
 * decodes pax values as UTF-8, a binary value is also written base64-encoded under `WORKBAY.xattr.b64.*`,
 * which our extractor prefers and GNU tar ignores.
 */
import type { TreeEntry } from './tree.js';

export const blockSize = 512;
export const endOfArchive = Buffer.alloc(blockSize * 2);

export const schilyXattrPrefix = 'SCHILY.xattr.';
export const b64XattrPrefix = 'WORKBAY.xattr.b64.';

const typeflags: Record<TreeEntry['type'], string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  'character-device': '3',
  'block-device': '4',
  directory: '5',
  fifo: '6',
};

const maxOctal = (digits: number): number => 8 ** digits - 1;

function writeOctal(buffer: Buffer, value: number, offset: number, width: number): void {
  // width-1 digits, then NUL
  buffer.write(`${value.toString(8).padStart(width - 1, '0')}\0`, offset, width, 'latin1');
}

function isAscii(value: string): boolean {
  return /^[\x20-\x7e]*$/.test(value);
}

/** Splits a path into ustar (prefix, name), or undefined when it does not fit. */
function splitUstarName(path: string): { prefix: string; name: string } | undefined {
  if (!isAscii(path)) return undefined;
  if (path.length <= 100) return { prefix: '', name: path };
  for (let i = path.length - 1; i > 0; i--) {
    if (path[i] !== '/') continue;
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (prefix.length <= 155 && name.length <= 100 && name.length > 0) return { prefix, name };
  }
  return undefined;
}

/** One pax record: `<length> <key>=<value>\n`, where length counts the whole record. */
export function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let length = body.length + String(body.length).length;
  if (String(length).length !== String(body.length).length) length = body.length + String(length).length;
  return Buffer.concat([Buffer.from(String(length)), body]);
}

interface UstarFields {
  readonly name: string;
  readonly prefix: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly mtime: number;
  readonly typeflag: string;
  readonly linkname: string;
  readonly devMajor: number;
  readonly devMinor: number;
}

function ustarBlock(fields: UstarFields): Buffer {
  const block = Buffer.alloc(blockSize);
  block.write(fields.name, 0, 100, 'latin1');
  writeOctal(block, fields.mode, 100, 8);
  writeOctal(block, fields.uid, 108, 8);
  writeOctal(block, fields.gid, 116, 8);
  writeOctal(block, fields.size, 124, 12);
  writeOctal(block, fields.mtime, 136, 12);
  block.write(fields.typeflag, 156, 1, 'latin1');
  block.write(fields.linkname, 157, 100, 'latin1');
  block.write('ustar\0', 257, 6, 'latin1');
  block.write('00', 263, 2, 'latin1');
  writeOctal(block, fields.devMajor, 329, 8);
  writeOctal(block, fields.devMinor, 337, 8);
  block.write(fields.prefix, 345, 155, 'latin1');
  // The checksum is computed with its own field as spaces.
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return block;
}

/** Pads content of `size` bytes to the block size. */
export function padding(size: number): Buffer {
  const rest = size % blockSize;
  return rest === 0 ? Buffer.alloc(0) : Buffer.alloc(blockSize - rest);
}

function isUtf8(value: Buffer): boolean {
  return Buffer.from(value.toString('utf8'), 'utf8').equals(value);
}

/**
 * GNU's stand-in name of a sparse file (`%d/GNUSparseFile.%p/%f`): a reader without sparse support extracts the
 * map and data there, not over the real file.
 */
function sparseStandIn(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash === -1 ? `GNUSparseFile.0/${path}` : `${path.slice(0, slash)}/GNUSparseFile.0/${path.slice(slash + 1)}`;
}

/**
 * The header blocks of an entry (a pax extended header first when ustar cannot hold everything). `sparse`: the
 * entry is a sparse file in GNU's pax format 1.0 (tar-sparse.ts), of `realSize` bytes; `size` is what its data
 * area stores (the map and the data).
 */
export function encodeEntryHeader(entry: TreeEntry, size: number, sparse?: { readonly realSize: number }): Buffer {
  const records: Buffer[] = [];
  const path = entry.type === 'directory' ? `${entry.path}/` : entry.path;
  let split = splitUstarName(sparse ? sparseStandIn(path) : path);
  if (sparse) {
    records.push(paxRecord('GNU.sparse.major', Buffer.from('1')));
    records.push(paxRecord('GNU.sparse.minor', Buffer.from('0')));
    records.push(paxRecord('GNU.sparse.name', Buffer.from(path, 'utf8')));
    records.push(paxRecord('GNU.sparse.realsize', Buffer.from(String(sparse.realSize))));
    // The real name is GNU.sparse.name; a `path` record would replace it for GNU tar.
    if (!split) {
      const ascii = sparseStandIn(path).replace(/[^\x20-\x7e]/g, '_');
      split = { prefix: '', name: ascii.slice(Math.max(0, ascii.length - 99)) };
    }
  }
  if (!split) {
    records.push(paxRecord('path', Buffer.from(path, 'utf8')));
    const ascii = path.replace(/[^\x20-\x7e]/g, '_');
    split = { prefix: '', name: ascii.slice(Math.max(0, ascii.length - 99)) };
  }
  let linkname = entry.linkTarget ?? '';
  if (linkname.length > 100 || !isAscii(linkname)) {
    records.push(paxRecord('linkpath', Buffer.from(linkname, 'utf8')));
    linkname = linkname.replace(/[^\x20-\x7e]/g, '_').slice(0, 100);
  }
  let uid = entry.uid;
  let gid = entry.gid;
  if (uid > maxOctal(7)) {
    records.push(paxRecord('uid', Buffer.from(String(uid))));
    uid = 0;
  }
  if (gid > maxOctal(7)) {
    records.push(paxRecord('gid', Buffer.from(String(gid))));
    gid = 0;
  }
  let headerSize = size;
  if (size > maxOctal(11)) {
    records.push(paxRecord('size', Buffer.from(String(size))));
    headerSize = 0;
  }
  const mtime = Math.max(0, Math.floor(entry.mtimeMs / 1000));
  for (const [name, value] of Object.entries(entry.xattrs ?? {})) {
    records.push(paxRecord(`${schilyXattrPrefix}${name}`, value));
    if (!isUtf8(value)) records.push(paxRecord(`${b64XattrPrefix}${name}`, Buffer.from(value.toString('base64'))));
  }
  const main = ustarBlock({
    name: split.name,
    prefix: split.prefix,
    mode: entry.mode & 0o7777,
    uid,
    gid,
    size: headerSize,
    mtime,
    typeflag: typeflags[entry.type],
    linkname,
    devMajor: entry.devMajor ?? 0,
    devMinor: entry.devMinor ?? 0,
  });
  if (records.length === 0) return main;
  const pax = Buffer.concat(records);
  const paxHeader = ustarBlock({
    name: `PaxHeaders/${split.name}`.slice(0, 100),
    prefix: '',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: pax.length,
    mtime,
    typeflag: 'x',
    linkname: '',
    devMajor: 0,
    devMinor: 0,
  });
  return Buffer.concat([paxHeader, pax, padding(pax.length), main]);
}
