/**
 * restic (Debian's `restic`, a local repository in the bench's scratch space) as a second backup baseline: a full
 * backup into a fresh repository, and an incremental one on top of the last full backup. restic's local backend
 * syncs every file it writes, so its figures compare with our durable backups.
 */
import { spawnSync } from 'node:child_process';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface ResticRun {
  readonly ms: number;
  /** Bytes the repository grew by (what a remote repository would have received). */
  readonly addedBytes: number;
}

export class ResticBaseline {
  private readonly env: NodeJS.ProcessEnv;
  private readonly repo: string;

  constructor(scratch: string) {
    this.repo = join(scratch, 'restic-repo');
    // A bench-only password; the cache lives in the scratch space, not in the user's home.
    this.env = { ...process.env, RESTIC_PASSWORD: 'workbay-bench', RESTIC_CACHE_DIR: join(scratch, 'restic-cache') };
  }

  static available(): boolean {
    return spawnSync('restic', ['version'], { stdio: 'ignore' }).status === 0;
  }

  private restic(args: string[]): string {
    const result = spawnSync('restic', ['-r', this.repo, ...args], {
      env: this.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
    });
    if (result.status !== 0) throw new Error(`restic ${args[0] ?? ''} failed: ${result.stderr?.toString().trim()}`);
    return result.stdout.toString();
  }

  /** A full backup: the repository is created anew (not timed), then `restic backup` is timed. */
  async full(tree: string): Promise<ResticRun> {
    await rm(this.repo, { recursive: true, force: true });
    this.restic(['init', '-q']);
    return this.backup(tree);
  }

  /** A backup on top of the previous one (restic finds it as the parent by host and path). */
  async backup(tree: string): Promise<ResticRun> {
    const before = await directoryBytes(this.repo);
    const started = performance.now();
    // `-C tree .` would change restic's paths between runs; the same absolute path keeps the parent.
    this.restic(['backup', '-q', tree]);
    const ms = performance.now() - started;
    return { ms, addedBytes: (await directoryBytes(this.repo)) - before };
  }

  async remove(): Promise<void> {
    await rm(this.repo, { recursive: true, force: true });
  }
}

async function directoryBytes(root: string): Promise<number> {
  let total = 0;
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return 0;
  }
  for (const name of names) {
    const path = join(root, name);
    const info = await stat(path);
    total += info.isDirectory() ? await directoryBytes(path) : info.size;
  }
  return total;
}
