/**
 * `npm run bench` for @workbay/daemon. Each figure is printed beside a baseline measured in the same run:
 * 1. git initializer (InitWorkspace over gRPC) vs `git clone --depth=1` of the same repository;
 * 2. backup and restore throughput of a tree of mixed files vs GNU tar writing and reading the same tree;
 * 3. bytes re-uploaded by an incremental backup after changing 1% of the files vs a full backup;
 * 4. restic (a local repository) as a second baseline for the full and the incremental backup of the same tree
 *    (skipped with a note when `restic` is not installed; `npm run bench` installs it);
 * 5. memory of a backup by file count: retained memory (heap and buffers) and peak RSS per file of a chunked backup of many empty files
 *    vs the plain tar backup, which streams (backup-memory.ts).
 *
 * Sizes: WORKBAY_BENCH_TREE_BYTES (default 1 GiB), WORKBAY_BENCH_GIT_FILES (default 3000),
 * WORKBAY_BENCH_RUNS (default 5, medians are reported: with 3, one run disturbed by the disk's state moved a
 * median by 20%; backups and restores rotate their order between runs),
 * WORKBAY_BENCH_GIT_RUNS (pairs of git clone and git initializer, default 9 or WORKBAY_BENCH_RUNS if larger),
 * WORKBAY_BENCH_DIR (scratch space, default the OS tmp), WORKBAY_BENCH_ONLY (`git`, `backup` or `memory`: only that
 * part), WORKBAY_BENCH_MEMORY_FILES (default 200000), WORKBAY_BENCH_COMPRESSION (the chunked backup's pack
 * compression: `none`, the default, `gzip` or `zstd`).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createWorkspaceContentClient } from '@workbay/api';
import type { Compression } from '../archive/compression.js';
import { BackupStore } from '../backup/backup-store.js';
import { createDaemon } from '../daemon.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { benchBackupMemory } from './backup-memory.js';
import { ResticBaseline } from './restic.js';

const MiB = 1024 * 1024;
const treeBytes = Number(process.env['WORKBAY_BENCH_TREE_BYTES'] ?? 1024 * MiB);
const gitFiles = Number(process.env['WORKBAY_BENCH_GIT_FILES'] ?? 3000);
const memoryFiles = Number(process.env['WORKBAY_BENCH_MEMORY_FILES'] ?? 200_000);
const runs = Math.max(1, Number(process.env['WORKBAY_BENCH_RUNS'] ?? 5));
/**
 * Pairs of the git figure (default 9): one clone here took 1.1 to 2.8 s within a run (file creation on the disk), so
 * the median of five paired ratios moved by 0.1 between runs, more than the initializer's own cost (about 0.05).
 */
const gitRuns = Math.max(1, Number(process.env['WORKBAY_BENCH_GIT_RUNS'] ?? Math.max(runs, 9)));
const scratchRoot = process.env['WORKBAY_BENCH_DIR'] ?? tmpdir();
/** `git`, `backup` or `memory` runs only that part (while developing). */
const only = process.env['WORKBAY_BENCH_ONLY'];
const compression = (process.env['WORKBAY_BENCH_COMPRESSION'] ?? 'none') as Compression;
if (!['none', 'gzip', 'zstd'].includes(compression)) throw new Error('WORKBAY_BENCH_COMPRESSION: none, gzip or zstd');

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};
const seconds = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;
const rate = (bytes: number, ms: number): number => bytes / MiB / (ms / 1000);

function row(name: string, figure: string, baselineName: string, baseline: string, ratio: number): void {
  console.log(
    `${name.padEnd(44)} ${figure.padStart(14)}   baseline ${baselineName}: ${baseline.padStart(12)}   ratio ${ratio.toFixed(3)}`,
  );
}

async function timed<T>(fn: () => Promise<T> | T): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await fn();
  return { ms: performance.now() - started, value };
}

function run(command: string, args: string[], cwd?: string): void {
  const result = spawnSync(command, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr?.toString()}`);
}

// A deterministic-enough text generator: compressible, like source code.
const words =
  'const let function return import export from await async class interface type string number boolean'.split(' ');
function text(bytes: number): Buffer {
  let out = '';
  while (out.length < bytes)
    out += `${words[Math.floor(Math.random() * words.length)] as string}${Math.random() < 0.1 ? '\n' : ' '}`;
  return Buffer.from(out.slice(0, bytes));
}

/** A tree like the one in limits.md: many small files (1–64 KiB) and some large ones (1–3 MiB), half random, half text. */
async function generateTree(root: string, total: number): Promise<{ files: string[]; bytes: number }> {
  const files: string[] = [];
  let bytes = 0;
  let i = 0;
  while (bytes < total) {
    const large = i % 100 === 0;
    const size = Math.min(
      total - bytes,
      large ? MiB + Math.floor(Math.random() * 2 * MiB) : 1024 + Math.floor(Math.random() * 63 * 1024),
    );
    const dir = join(root, `d${i % 50}`, `s${Math.floor(i / 50) % 20}`);
    await mkdir(dir, { recursive: true });
    const path = join(dir, `f${i}.${large ? 'bin' : 'txt'}`);
    await writeFile(path, i % 2 === 0 ? randomBytes(size) : text(size));
    files.push(path);
    bytes += size;
    i++;
  }
  return { files, bytes };
}

async function benchGit(scratch: string): Promise<void> {
  const work = join(scratch, 'git-work');
  await mkdir(work, { recursive: true });
  let repoBytes = 0;
  for (let i = 0; i < gitFiles; i++) {
    const dir = join(work, `pkg${i % 40}`, `mod${i % 7}`);
    await mkdir(dir, { recursive: true });
    const content = i % 300 === 0 ? randomBytes(MiB) : text(500 + Math.floor(Math.random() * 7500));
    repoBytes += content.length;
    await writeFile(join(dir, `file${i}.ts`), content);
  }
  const env = {
    ...process.env,
    GIT_AUTHOR_NAME: 'b',
    GIT_AUTHOR_EMAIL: 'b@x',
    GIT_COMMITTER_NAME: 'b',
    GIT_COMMITTER_EMAIL: 'b@x',
  };
  execFileSync('git', ['init', '-q', '-b', 'main'], { cwd: work, env });
  execFileSync('git', ['add', '.'], { cwd: work, env });
  execFileSync('git', ['commit', '-q', '-m', 'bench'], { cwd: work, env });
  const bare = join(scratch, 'repo.git');
  execFileSync('git', ['clone', '-q', '--bare', work, bare], { env });
  execFileSync('git', ['repack', '-adq'], { cwd: bare, env });
  await rm(work, { recursive: true, force: true });
  const url = `file://${bare}`;

  const daemon = await createDaemon({
    workingArea: join(scratch, 'git-workspaces'),
    grpc: { address: '127.0.0.1:0' },
    http: { address: 'off' },
    storage: { kind: 'fs', root: join(scratch, 'git-storage') },
    log: { level: 'silent' },
    diskGuard: { minFree: 0 },
    housekeeping: { interval: 0 },
    quota: { mode: 'none' },
    backup: { period: 0 },
    // The bench clones a file:// repository.
    git: { allowLocalRemotes: true },
  }).start();
  const client = createWorkspaceContentClient(daemon.address, { defaultTimeoutMs: 600_000 });
  // Baseline and figure alternate, so that load changes on a shared machine hit both alike.
  const baseline: number[] = [];
  const figure: number[] = [];
  try {
    for (let r = 0; r < gitRuns; r++) {
      const target = join(scratch, `clone-${r}`);
      const id = `bench-git-${r}`;
      // Each timed clone starts with the disk's writeback of the one before done (both sides alike), and after the
      // other side's clone was deleted.
      const clone = async (): Promise<void> => {
        spawnSync('sync');
        baseline.push((await timed(() => run('git', ['clone', '-q', '--depth=1', url, target]))).ms);
        await rm(target, { recursive: true, force: true });
      };
      const initializer = async (): Promise<void> => {
        spawnSync('sync');
        figure.push(
          (
            await timed(() =>
              client.initWorkspace({
                id,
                metadata: { owner: 'bench', metaId: id },
                initializer: { spec: { $case: 'git', value: { remoteUri: url } } },
              }),
            )
          ).ms,
        );
        await client.disposeWorkspace({ id, backup: false });
      };
      // Which side goes first alternates (A B, B A, ...), so that a drift of the disk's state within a pair favours
      // neither.
      if (r % 2 === 0) {
        await clone();
        await initializer();
      } else {
        await initializer();
        await clone();
      }
    }
  } finally {
    client.close();
    await daemon.stop();
  }
  // The ratio is paired: each run's initializer against the clone just before it, then the median of those. Here a
  // clone took 1.6 to 3.5 s within one bench (the disk's writeback of the previous run), so the ratio of the two
  // medians, taken from different runs, moved by more than the initializer's own cost (7 runs: 1.18 paired 1.03).
  const paired = median(figure.map((f, i) => f / (baseline[i] as number)));
  row(
    `git initializer (${gitFiles} files, ${mib(repoBytes)})`,
    seconds(median(figure)),
    'git clone --depth=1',
    seconds(median(baseline)),
    paired,
  );
  console.log(`  ratio of the medians (unpaired): ${(median(figure) / median(baseline)).toFixed(3)}`);
  // Less sensitive to a shared machine's load drifting between runs: what each run cost above its own baseline.
  const overhead = median(figure.map((f, i) => f - (baseline[i] as number)));
  console.log(`  git initializer above git clone, per run (median of ${gitRuns}): ${overhead.toFixed(0)} ms`);
  console.log(
    `  (per run, ms: initializer ${figure.map((f) => f.toFixed(0)).join(' / ')}; git clone ${baseline.map((b) => b.toFixed(0)).join(' / ')})`,
  );
}

async function benchBackup(scratch: string): Promise<void> {
  const tree = join(scratch, 'tree');
  await mkdir(tree);
  console.log(`generating a ${mib(treeBytes)} tree of mixed files ...`);
  const { files, bytes } = await generateTree(tree, treeBytes);
  // The tree's own writeback would otherwise land on whichever run comes first.
  run('sync', []);
  const storage = new FsRemoteStorage({ root: join(scratch, 'storage') });
  const chunked = new BackupStore(storage, { mode: 'per-owner' }, { format: 'chunked', compression });
  const plain = new BackupStore(storage, { mode: 'per-owner' }, { format: 'tar' });
  const ref = { owner: 'bench', workspaceId: 'tree' };
  const refTar = { owner: 'bench', workspaceId: 'tree-tar' };
  try {
    // Backup
    // Backups are durable (fsync before they count), so the fair baseline syncs its archive too; the
    // page-cache-only figure is printed as well. Each run backs up into fresh objects (a full backup, not an
    // incremental one), and the order of the three writers rotates between runs, so that the machine's
    // load and the kernel's state hit all alike; medians are reported.
    const tarFile = join(scratch, 'baseline.tar');
    const gnuCached = await timed(() => run('tar', ['-cf', tarFile, '-C', tree, '.']));
    await rm(tarFile, { force: true });
    const gnuWriteMs: number[] = [];
    const chunkedMs: number[] = [];
    const plainMs: number[] = [];
    const resticMs: number[] = [];
    /** The chunked backup's CPU time (all threads): tells a slow run that waited from one that worked more. */
    const chunkedCpuMs: number[] = [];
    const restic = ResticBaseline.available() ? new ResticBaseline(scratch) : undefined;
    if (!restic) console.log('  (restic is not installed: its baseline rows are skipped)');
    let tarSize = 0;
    for (let r = 0; r < runs; r++) {
      if (r > 0) {
        await chunked.deleteBackups(ref);
        await plain.deleteBackups(refTar);
      }
      const steps: Array<() => Promise<void>> = [
        async () => {
          await rm(tarFile, { force: true });
          run('sync', []);
          gnuWriteMs.push(
            (
              await timed(() => {
                run('tar', ['-cf', tarFile, '-C', tree, '.']);
                run('sync', [tarFile]);
              })
            ).ms,
          );
          tarSize = (await stat(tarFile)).size;
        },
        async () => {
          run('sync', []);
          const cpu = process.cpuUsage();
          chunkedMs.push((await timed(() => chunked.backup(tree, ref))).ms);
          const used = process.cpuUsage(cpu);
          chunkedCpuMs.push((used.user + used.system) / 1000);
        },
        async () => {
          run('sync', []);
          plainMs.push((await timed(() => plain.backup(tree, refTar))).ms);
        },
      ];
      if (restic)
        steps.push(async () => {
          run('sync', []);
          resticMs.push((await restic.full(tree)).ms);
        });
      for (let i = 0; i < steps.length; i++) await (steps[(i + r) % steps.length] as () => Promise<void>)();
    }
    const gnuWrite = median(gnuWriteMs);
    // Every run, in run order: on a shared machine a median hides how far single runs swing.
    const list = (values: number[]): string => values.map((ms) => (ms / 1000).toFixed(2)).join(' / ');
    console.log(
      `  (seconds per run: chunked ${list(chunkedMs)} (CPU ${list(chunkedCpuMs)}); plain tar ${list(plainMs)}; tar -cf + sync ${list(gnuWriteMs)}` +
        `${restic ? `; restic ${list(resticMs)}` : ''})`,
    );
    row(
      `backup, chunked (${files.length} files, ${mib(bytes)})`,
      `${rate(bytes, median(chunkedMs)).toFixed(0)} MiB/s`,
      'GNU tar -cf + sync',
      `${rate(bytes, gnuWrite).toFixed(0)} MiB/s`,
      gnuWrite / median(chunkedMs),
    );
    if (restic) {
      row(
        `  ... against restic (local repository)`,
        `${rate(bytes, median(chunkedMs)).toFixed(0)} MiB/s`,
        'restic backup',
        `${rate(bytes, median(resticMs)).toFixed(0)} MiB/s`,
        median(resticMs) / median(chunkedMs),
      );
    }
    row(
      `backup, plain tar (${mib(bytes)})`,
      `${rate(bytes, median(plainMs)).toFixed(0)} MiB/s`,
      'GNU tar -cf + sync',
      `${rate(bytes, gnuWrite).toFixed(0)} MiB/s`,
      gnuWrite / median(plainMs),
    );
    row(
      `  ... against GNU tar into the page cache`,
      `${rate(bytes, median(plainMs)).toFixed(0)} MiB/s`,
      'GNU tar -cf',
      `${rate(bytes, gnuCached.ms).toFixed(0)} MiB/s`,
      gnuCached.ms / median(plainMs),
    );

    // Restore: the same rotation. Each restore writes a fresh directory that is deleted right after, so every
    // one of them follows a deletion of the same size (ext4 skips recently freed inodes when it allocates,
    // which makes creating files after a large deletion several times slower).
    const gnuReadMs: number[] = [];
    const restoreChunkedMs: number[] = [];
    const restorePlainMs: number[] = [];
    const target = join(scratch, 'restore');
    const restoreStep = async (times: number[], fn: () => Promise<unknown> | void): Promise<void> => {
      await mkdir(target);
      run('sync', []);
      times.push((await timed(fn)).ms);
      await rm(target, { recursive: true, force: true });
    };
    for (let r = 0; r < runs; r++) {
      const steps: Array<() => Promise<void>> = [
        () => restoreStep(gnuReadMs, () => run('tar', ['-xf', tarFile, '-C', target])),
        () => restoreStep(restoreChunkedMs, () => chunked.restore(target, ref)),
        () => restoreStep(restorePlainMs, () => plain.restore(target, refTar)),
      ];
      for (let i = 0; i < steps.length; i++) await (steps[(i + r) % steps.length] as () => Promise<void>)();
    }
    await rm(tarFile, { force: true });
    const gnuRead = median(gnuReadMs);
    row(
      `restore, chunked (${mib(bytes)})`,
      `${rate(bytes, median(restoreChunkedMs)).toFixed(0)} MiB/s`,
      'GNU tar -xf',
      `${rate(bytes, gnuRead).toFixed(0)} MiB/s`,
      gnuRead / median(restoreChunkedMs),
    );
    row(
      `restore, plain tar (${mib(bytes)})`,
      `${rate(bytes, median(restorePlainMs)).toFixed(0)} MiB/s`,
      'GNU tar -xf',
      `${rate(bytes, gnuRead).toFixed(0)} MiB/s`,
      gnuRead / median(restorePlainMs),
    );

    // Incremental: change 1% of the files (new content, same size), back up again.
    const changed = files.filter((_, i) => i % 100 === 37);
    let changedBytes = 0;
    for (const path of changed) {
      const size = (await stat(path)).size;
      changedBytes += size;
      await writeFile(path, randomBytes(size));
    }
    run('sync', []);
    const incremental = await timed(() => chunked.backup(tree, ref));
    const uploaded = incremental.value.uploadedBytes;
    const detail = incremental.value.chunked;
    console.log(
      `  (changed ${changed.length} of ${files.length} files, ${mib(changedBytes)}` +
        `${detail ? `; ${detail.newBlobs} new blobs, ${detail.repackedBlobs} repacked, ${mib(detail.readBytes)} read` : ''})`,
    );
    if (restic) {
      // On top of restic's last full backup of the unchanged tree, as ours is on top of its last one.
      run('sync', []);
      const resticIncremental = await restic.backup(tree);
      row(
        'incremental backup (1% of files changed)',
        seconds(incremental.ms),
        'restic backup',
        seconds(resticIncremental.ms),
        incremental.ms / resticIncremental.ms,
      );
      row(
        '  ... bytes uploaded',
        mib(uploaded),
        'restic repo growth',
        mib(resticIncremental.addedBytes),
        uploaded / resticIncremental.addedBytes,
      );
      await restic.remove();
    } else {
      console.log(`  (incremental backup took ${seconds(incremental.ms)})`);
    }
    row('bytes re-uploaded after changing 1% of files', mib(uploaded), 'full backup', mib(tarSize), uploaded / tarSize);
    row(
      '  ... against the bytes that changed',
      mib(uploaded),
      'changed bytes',
      mib(changedBytes),
      uploaded / changedBytes,
    );
  } finally {
    await storage.close();
  }
}

async function main(): Promise<void> {
  const scratch = await mkdtemp(join(scratchRoot, 'workbay-daemon-bench-'));
  // The daemon clones as the workspace's uid: the file:// repository below must be reachable for it.
  await chmod(scratch, 0o755);
  console.log(
    `@workbay/daemon bench (runs=${runs}, tree=${mib(treeBytes)}, git files=${gitFiles}, scratch=${scratch})`,
  );
  try {
    if (!only || only === 'git') await benchGit(scratch);
    if (!only || only === 'backup') await benchBackup(scratch);
    if (!only || only === 'memory') await benchBackupMemory(scratch, memoryFiles, row);
  } finally {
    for (const name of await readdir(scratch).catch(() => [] as string[]))
      await rm(join(scratch, name), { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  }
}

await main();
