/**
 * Row 5 of the manager bench: time-to-RUNNING of a workspace restarted from a large backup, against GNU `tar -xf`
 * of the same tree (restore only, same run). A workspace is started, its content filled with a mixed tree of
 * WORKBAY_BENCH_RESTART_BYTES (1 GiB), stopped with a final backup; a second instance with the same metaId and a
 * backup initializer is then timed from StartWorkspace until Subscribe reports RUNNING. The phases seen on the way
 * (and the daemon's own restore duration) say where the time goes.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { workspaceConditionBool, workspacePhase, wsman } from '@workbay/api';
import type { WorkspaceManagerClient } from '@workbay/api';
import type { EmbeddedHandle } from '../embedded.js';
import { fmtMiB, fmtMs, report } from './stats.js';

const MiB = 1024 ** 2;

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr?.toString()}`);
}

// Compressible like source code: the chunked backup compresses, so an all-random tree would flatter nobody.
const words = 'const let function return import export from await async class interface type string'.split(' ');
function text(bytes: number): Buffer {
  let out = '';
  while (out.length < bytes)
    out += `${words[Math.floor(Math.random() * words.length)]!}${Math.random() < 0.1 ? '\n' : ' '}`;
  return Buffer.from(out.slice(0, bytes));
}

/** Many small files (1–64 KiB) and every 100th a large one (1–3 MiB), half random and half text. */
async function generateTree(root: string, total: number): Promise<{ files: number; bytes: number }> {
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
    await writeFile(join(dir, `f${i}.${large ? 'bin' : 'txt'}`), i % 2 === 0 ? randomBytes(size) : text(size));
    bytes += size;
    i += 1;
  }
  return { files: i, bytes };
}

/**
 * The baseline: GNU `tar -xf` of the archive into a fresh directory beside the workspaces' content (`parent`, the
 * daemon's working area), after a `sync` so that neither side pays for the other's writeback. Removed again
 * afterwards (not timed). Beside the content, because ext4 places a new directory's inodes near its parent's, and
 * skips inodes freed in the last minutes there: the restart restores where the first workspace's 20,000 files
 * were just deleted, and a baseline elsewhere on the disk ran up to 3x faster than one in the same place.
 */
async function timeTarExtract(archive: string, parent: string): Promise<number> {
  run('sync', []);
  const target = await mkdtemp(join(parent, '.bench-tar-'));
  const t = performance.now();
  run('tar', ['-xf', archive, '-C', target]);
  const ms = performance.now() - t;
  await rm(target, { recursive: true, force: true });
  return ms;
}

/** Files and bytes under a directory: the restored tree must be all there, not merely RUNNING. */
async function measureTree(root: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  for (const entry of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    files += 1;
    bytes += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return { files, bytes };
}

type Phase = 'pending' | 'creating' | 'initializing' | 'running' | 'stopping' | 'stopped';

/** First time each phase of each workspace was seen on Subscribe. */
function watchPhases(client: WorkspaceManagerClient): {
  seen: (id: string) => Map<string, number>;
  until: (id: string, phase: Phase) => Promise<number>;
  cancel: () => void;
} {
  const seen = new Map<string, Map<string, number>>();
  const waiters = new Map<string, () => void>();
  const stream = client.subscribe({});
  void (async () => {
    try {
      for await (const update of stream) {
        const status = update.status;
        if (!status) continue;
        const phase = workspacePhase.fromProto(status.phase);
        const times = seen.get(status.id) ?? new Map<string, number>();
        seen.set(status.id, times);
        if (!times.has(phase)) times.set(phase, performance.now());
        waiters.get(`${status.id}/${phase}`)?.();
      }
    } catch {
      // Cancelled at the end.
    }
  })();
  return {
    seen: (id) => seen.get(id) ?? new Map(),
    until: (id, phase) => {
      const at = seen.get(id)?.get(phase);
      if (at !== undefined) return Promise.resolve(at);
      return new Promise((resolve) => waiters.set(`${id}/${phase}`, () => resolve(seen.get(id)!.get(phase)!)));
    },
    cancel: () => stream.cancel(),
  };
}

type InitializerSpec = { $case: 'empty'; value: object } | { $case: 'backup'; value: object };

/** Both instances share owner and metaId: the backup of the first is what the second restores. */
function request(id: string, spec: InitializerSpec): wsman.StartWorkspaceRequest {
  return wsman.StartWorkspaceRequest.fromPartial({
    id,
    metadata: { owner: 'restart', metaId: 'bench-restart-meta' },
    spec: { workspaceImage: 'workbay/default', workspaceLocation: 'project', initializer: { spec } as never },
  });
}

export async function benchRestart(
  handle: EmbeddedHandle,
  client: WorkspaceManagerClient,
  scratch: string,
  size: number,
): Promise<void> {
  const watch = watchPhases(client);
  await new Promise((resolve) => setTimeout(resolve, 200));
  try {
    // 1. A workspace with the tree as its content, stopped with a final backup.
    const first = 'bench-restart-1';
    await client.startWorkspace(request(first, { $case: 'empty', value: {} }));
    await watch.until(first, 'running');
    const contentDir = handle.manager.core.getWorkspace(first)?.progress.contentDir;
    if (!contentDir) throw new Error('the first workspace has no content directory');
    const tree = await generateTree(join(contentDir, 'tree'), size);
    // The baseline's archive, of the very same tree (not timed).
    const baselineDir = await mkdtemp(join(scratch, 'restart-tar-'));
    const archive = join(baselineDir, 'tree.tar');
    run('tar', ['-cf', archive, '-C', contentDir, 'tree']);
    await client.stopWorkspace({ id: first, policy: wsman.StopWorkspacePolicy.NORMALLY });
    await watch.until(first, 'stopped');
    const stopped = (await client.describeWorkspace({ id: first })).status!;
    if (!workspaceConditionBool.fromProto(stopped.conditions!.finalBackupComplete))
      throw new Error(`no final backup: ${stopped.conditions!.failed.slice(0, 200)}`);

    // The baseline is timed before and after the restart and averaged: the machine is shared, and its load drifts.
    const workingArea = dirname(contentDir);
    const tarBefore = await timeTarExtract(archive, workingArea);

    // 2. The restart from that backup, timed until RUNNING.
    run('sync', []);
    const second = 'bench-restart-2';
    const t0 = performance.now();
    await client.startWorkspace(
      request(second, { $case: 'backup', value: { checkoutLocation: '', fromVolumeSnapshot: false } }),
    );
    // When the manager learns that the content is complete (InitWorkspace answered): not a phase of its own, so
    // the record is looked at (in-process, every 2 ms) until RUNNING.
    let contentReadyAt: number | undefined;
    const poll = setInterval(() => {
      if (contentReadyAt === undefined && handle.manager.core.getWorkspace(second)?.progress.contentReady)
        contentReadyAt = performance.now();
    }, 2);
    const running = await watch.until(second, 'running');
    clearInterval(poll);
    const restartMs = running - t0;
    const record = handle.manager.core.getWorkspace(second);
    const restoredDir = record?.progress.contentDir;
    if (!restoredDir) throw new Error('the restarted workspace has no content directory');
    const restored = await measureTree(join(restoredDir, 'tree'));
    if (restored.files !== tree.files || restored.bytes !== tree.bytes)
      throw new Error(`restored ${restored.files} files/${restored.bytes} B of ${tree.files}/${tree.bytes}`);
    const daemonRestoreMs = record.initializerMetrics?.backup?.durationMs;

    const tarAfter = await timeTarExtract(archive, workingArea);
    const tarMs = (tarBefore + tarAfter) / 2;

    const mib = Math.round(size / MiB);
    const fmtS = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
    report(
      `restart from a ${mib} MiB backup: StartWorkspace → RUNNING`,
      fmtS(restartMs),
      fmtS(tarMs),
      restartMs / tarMs,
    );
    // Where the time goes: the phases as Subscribe saw them, and the daemon's own account of the restore.
    const times = watch.seen(second);
    const at = (phase: Phase): number | undefined => times.get(phase);
    const span = (from: number | undefined, to: number | undefined): string =>
      from !== undefined && to !== undefined ? fmtMs(to - from) : '-';
    console.log(
      `  (${tree.files} files, ${fmtMiB(tree.bytes)}; until INITIALIZING ${span(t0, at('initializing'))}, ` +
        `INITIALIZING → content ready ${span(at('initializing'), contentReadyAt)} (of which the daemon's restore ` +
        `step ${daemonRestoreMs !== undefined ? fmtMs(daemonRestoreMs) : '-'}), content ready → RUNNING ` +
        `${span(contentReadyAt, running)}; tar -xf before ${fmtMs(tarBefore)}, after ${fmtMs(tarAfter)})`,
    );
    await client.stopWorkspace({ id: second, policy: wsman.StopWorkspacePolicy.ABORT });
    await watch.until(second, 'stopped');
    await rm(baselineDir, { recursive: true, force: true });
  } finally {
    watch.cancel();
  }
}
