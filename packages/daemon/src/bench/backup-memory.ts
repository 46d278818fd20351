/**
 * Memory of a backup by file count, measured in a child process of its own (the built daemon, dist/): a hostile
 * workspace chooses how many files it holds, and a backup that kept JS objects per file took the node daemon from
 * 96 MB to 1.3 GB for 654,501 empty files. Used by the bench (a row beside the plain tar backup, which streams) and
 * by backup-memory.spec.ts (a generous bound on retained memory per file; no timings).
 */
import { execFile } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

/** The built daemon: from src/bench and from dist/bench alike. */
const distUrl = new URL('../../dist/', import.meta.url).href;

export interface BackupMemory {
  readonly files: number;
  /**
   * The most memory still in use after a full collection (JS heap and buffers: a backup may keep per-file data in
   * either), sampled every 100 ms, above what was in use before the backup.
   */
  readonly retainedBytes: number;
  /** Peak RSS of the process above its RSS before the backup (includes buffers outside the heap). */
  readonly rssBytes: number;
}

/** Runs in the child: one backup of the tree with the daemon's BackupStore on fs storage. */
const childScript = `
const [tree, format, storageDir, dist] = process.argv.slice(1);
const { BackupStore } = await import(new URL('backup/backup-store.js', dist));
const { FsRemoteStorage } = await import(new URL('storage/fs-storage.js', dist));
let base = 0;
let baseRss = 0;
let retained = 0;
let rss = 0;
const inUse = () => process.memoryUsage().heapUsed + process.memoryUsage().external;
const sample = () => {
  globalThis.gc();
  retained = Math.max(retained, inUse() - base);
  rss = Math.max(rss, process.memoryUsage().rss - baseRss);
};
// Also sampled as every upload starts: the manifest's upload is when a backup holds the most (all of the tree's
// entries, its blob table, the encoded manifest), and a timer alone could miss it.
const fsStorage = new FsRemoteStorage({ root: storageDir });
const storage = new Proxy(fsStorage, {
  get(target, key) {
    if (key === 'upload') return (...args) => (sample(), target.upload(...args));
    const value = target[key];
    return typeof value === 'function' ? value.bind(target) : value;
  },
});
const store = new BackupStore(storage, { mode: 'per-owner' }, { format, xattrs: false });
// A first backup of an empty tree loads what every backup needs (modules, worker threads): not per file.
const { mkdtemp, rm } = await import('node:fs/promises');
const warm = await mkdtemp(storageDir + '-warm-');
await store.backup(warm, { owner: 'mem', workspaceId: 'warm' });
await rm(warm, { recursive: true });
// Twice: the second backup is incremental against the first (it reads the previous manifest).
let result;
for (let run = 0; run < 2; run++) {
  globalThis.gc();
  base = inUse();
  baseRss = process.memoryUsage().rss;
  const timer = setInterval(sample, 50);
  result = await store.backup(tree, { owner: 'mem', workspaceId: 'ws' });
  clearInterval(timer);
  sample();
}
await fsStorage.close();
process.stdout.write(JSON.stringify({ files: result.files, retainedBytes: retained, rssBytes: rss }));
`;

/**
 * Backs `tree` up twice (full, then incremental) in a child process; `format` as `backup.format`; `dist`: the URL of
 * a built daemon's dist/ directory (default this package's).
 */
export function measureBackupMemory(
  tree: string,
  format: 'chunked' | 'tar',
  storageDir: string,
  dist = distUrl,
): Promise<BackupMemory> {
  const args = ['--expose-gc', '--input-type=module', '-e', childScript, tree, format, storageDir, dist];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { maxBuffer: 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`backup memory child failed: ${stderr || error.message}`));
      else resolve(JSON.parse(stdout) as BackupMemory);
    });
  });
}

/**
 * `count` empty files of long names (200 bytes) in directories of 1000 below 8 levels of 60-byte names: the shape
 * that costs a per-file structure most (the red team's tree held 654,501 empty files).
 */
export function writeEmptyFiles(root: string, count: number): void {
  const levels = Array.from({ length: 8 }, (_, level) => `level-${level}-`.padEnd(60, 'x'));
  for (let i = 0; i < count; i++) {
    const dir = join(root, ...levels, `d${Math.floor(i / 1000)}`);
    if (i % 1000 === 0) mkdirSync(dir, { recursive: true });
    closeSync(openSync(join(dir, `empty-${i}-`.padEnd(200, 'y')), 'w'));
  }
}

/** A bench row: name, figure, baseline name, baseline, ratio (figure / baseline). */
export type Row = (name: string, figure: string, baselineName: string, baseline: string, ratio: number) => void;

/**
 * The bench's memory rows: retained memory (heap and buffers) and peak RSS per file of a chunked backup (full, then incremental) of
 * `count` empty files, beside the plain tar backup of the same tree (which streams, so its figure is per-file
 * noise). Memory, not time: one run is enough.
 */
export async function benchBackupMemory(scratch: string, count: number, row: Row): Promise<void> {
  const tree = join(scratch, 'memory-tree');
  console.log(`creating ${count} empty files with long names ...`);
  writeEmptyFiles(tree, count);
  const measure = async (format: 'chunked' | 'tar'): Promise<BackupMemory> => {
    const storage = join(scratch, `memory-storage-${format}`);
    try {
      return await measureBackupMemory(tree, format, storage);
    } finally {
      await rm(storage, { recursive: true, force: true });
    }
  };
  const chunked = await measure('chunked');
  const tar = await measure('tar');
  await rm(tree, { recursive: true, force: true });
  const perFile = (bytes: number): string => `${(bytes / count).toFixed(0)} B/file`;
  row(
    `backup memory: retained (${count} empty files)`,
    perFile(chunked.retainedBytes),
    'plain tar backup',
    perFile(tar.retainedBytes),
    chunked.retainedBytes / Math.max(1, tar.retainedBytes),
  );
  row(
    '  ... peak RSS above the start',
    perFile(chunked.rssBytes),
    'plain tar backup',
    perFile(tar.rssBytes),
    chunked.rssBytes / Math.max(1, tar.rssBytes),
  );
}
