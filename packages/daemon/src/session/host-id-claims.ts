/**
 * Node-wide claims of workspace host ids. Each daemon hands out ids from its own range, unique among its own
 * workspaces; two daemons on one node (two Workbay instances, an upgrade run beside the old one, the test suite's
 * daemons) would hand out the same ids, and workspaces of different owners would then share one host uid: its
 * per-uid kernel budgets (inotify instances, keys, pipe pages, message queue bytes: the red team, round 5, took a
 * neighbour's inotify and keys that way) and the files it owns wherever both can see them.
 *
 * A claim is a file named by the id in a directory shared by every daemon of the node (config
 * `workspaceIds.claimsDir`), created exclusively and naming the working area that holds it. A claim is live while
 * that working area exists: the content it owns is there. One whose working area is gone is stale and may be taken
 * over; the takeover renames it away first and checks what it took, so two daemons racing for it cannot both win,
 * nor remove a claim made meanwhile.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A claim file is one path and a newline; anything longer is not ours to parse. */
const maxClaimBytes = 4096;

const codeOf = (error: unknown): string | undefined => (error as NodeJS.ErrnoException).code;

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (codeOf(error) === 'ENOENT' || codeOf(error) === 'ENOTDIR') return false;
    throw error;
  }
}

export class NodeHostIdClaims {
  /**
   * @param dir the node's claims directory (made 0700 if missing)
   * @param holder this daemon's working area, as an absolute path: what its claims name
   */
  constructor(
    readonly dir: string,
    readonly holder: string,
  ) {}

  async prepare(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Who holds `id` (a working area path), or undefined when nobody does. */
  async holderOf(id: number): Promise<string | undefined> {
    return this.readHolder(this.file(id));
  }

  /**
   * Claims `id` for this daemon: true when it is ours now (or was already, e.g. after a restart), false when a live
   * working area of another daemon holds it.
   */
  async claim(id: number): Promise<boolean> {
    const file = this.file(id);
    // A few rounds at most: again after the directory was made, a stale claim taken away or a claim vanished.
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        if (await this.create(file)) return true;
      } catch (error) {
        if (codeOf(error) !== 'ENOENT') throw error;
        // The directory is not there (yet, or removed by hand): make it and try again.
        await this.prepare();
        continue;
      }
      const holder = await this.readHolder(file);
      if (holder === this.holder) return true;
      if (holder === undefined) continue;
      // An empty claim is none of ours to judge (claims are made whole, see `create`): left alone, as a live one.
      if (holder === '' || (await exists(holder))) return false;
      if (!(await this.removeStale(file))) return false;
    }
    return false;
  }

  /** Gives `id` back, if this daemon holds it. */
  async release(id: number): Promise<void> {
    const file = this.file(id);
    if ((await this.readHolder(file)) !== this.holder) return;
    await unlink(file).catch((error: unknown) => {
      // Released twice (a concurrent release): nothing left to do.
      if (codeOf(error) !== 'ENOENT') throw error;
    });
  }

  /** Releases every claim of this daemon but `keep` (left by a crash between a claim and its record). */
  async releaseAllBut(keep: ReadonlySet<number>): Promise<number[]> {
    const released: number[] = [];
    for (const name of await readdir(this.dir)) {
      if (!/^\d+$/.test(name)) continue;
      const id = Number(name);
      if (keep.has(id)) continue;
      if ((await this.readHolder(join(this.dir, name))) !== this.holder) continue;
      await this.release(id);
      released.push(id);
    }
    return released;
  }

  /**
   * Makes the claim file with its content in one step: written aside, then hard-linked into place (link fails if the
   * name exists). A claim made by `open(O_EXCL)` and then written is empty for a moment, and another daemon reading
   * it then would take it for stale and take it over: two daemons held the same id that way in a CI run.
   */
  private async create(file: string): Promise<boolean> {
    const aside = `${file}.new-${process.pid}-${randomBytes(4).toString('hex')}`;
    await writeFile(aside, `${this.holder}\n`, { mode: 0o600 });
    try {
      await link(aside, file);
      return true;
    } catch (error) {
      if (codeOf(error) === 'EEXIST') return false;
      throw error;
    } finally {
      await unlink(aside).catch(() => undefined); // gone with a failed write only; nothing else to undo
    }
  }

  private file(id: number): string {
    return join(this.dir, String(id));
  }

  private async readHolder(file: string): Promise<string | undefined> {
    try {
      const text = await readFile(file, 'utf8');
      return text.length > maxClaimBytes ? text.slice(0, maxClaimBytes) : text.trimEnd();
    } catch (error) {
      if (codeOf(error) === 'ENOENT') return undefined;
      throw error;
    }
  }

  /**
   * Moves a stale claim out of the way; true when what it moved was stale indeed. A claim made in its place
   * meanwhile (by a daemon that removed the same stale claim first) is put back where it was.
   */
  private async removeStale(file: string): Promise<boolean> {
    const taken = `${file}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await rename(file, taken);
    } catch (error) {
      if (codeOf(error) === 'ENOENT') return true; // someone else removed it: try to claim
      throw error;
    }
    const holder = await this.readHolder(taken);
    if (holder !== undefined && holder !== this.holder && (holder === '' || (await exists(holder)))) {
      // A live claim: put it back (link fails if yet another claim is there, which then stands).
      await link(taken, file).catch((error: unknown) => {
        if (codeOf(error) !== 'EEXIST') throw error;
      });
      await unlink(taken);
      return false;
    }
    await unlink(taken);
    return true;
  }
}
