import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTreeXattrs } from '../archive/xattr.js';

export interface TreeRecord {
  path: string;
  kind: string;
  mode: number;
  uid: number;
  gid: number;
  mtimeS: number;
  sha256?: string;
  link?: string;
  xattrs?: Record<string, string>;
}

/** Everything about a tree that a backup must preserve, in path order (mtimes to the second). */
export async function describeTree(
  root: string,
  options: { skip?: (path: string) => boolean } = {},
): Promise<TreeRecord[]> {
  const xattrs = await readTreeXattrs(root);
  const out: TreeRecord[] = [];
  async function visit(dir: string, prefix: string): Promise<void> {
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      const path = prefix ? `${prefix}/${name}` : name;
      if (options.skip?.(path)) continue;
      const abs = join(dir, name);
      const st = await lstat(abs);
      const record: TreeRecord = {
        path,
        kind: st.isDirectory()
          ? 'dir'
          : st.isFile()
            ? 'file'
            : st.isSymbolicLink()
              ? 'symlink'
              : st.isFIFO()
                ? 'fifo'
                : 'other',
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        mtimeS: st.isDirectory() ? 0 : Math.floor(st.mtimeMs / 1000),
      };
      if (st.isFile())
        record.sha256 = createHash('sha256')
          .update(await readFile(abs))
          .digest('hex');
      if (st.isSymbolicLink()) record.link = await readlink(abs);
      const attrs = xattrs.get(path);
      if (attrs) record.xattrs = Object.fromEntries(Object.entries(attrs).map(([k, v]) => [k, v.toString('base64')]));
      out.push(record);
      if (st.isDirectory()) await visit(abs, path);
    }
  }
  await visit(root, '');
  return out;
}

export async function tempDir(
  prefix = 'workbay-daemon-test-',
): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/** Collects a stream into one buffer. */
export async function collect(stream: AsyncIterable<Buffer | string>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}
