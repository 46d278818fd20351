/**
 * Host uids/gids of workspaces (isolation contract): when the daemon runs as root every workspace gets its own
 * id (uid == gid) from the configured range, unique among the workspaces this daemon knows and, through
 * {@link NodeHostIdClaims}, among those of every daemon of the node; kept in the session state so that it survives
 * a restart, and freed when the workspace is disposed.
 *
 * Ids are handed out round-robin from just after the last one given, so that a freed id is reused as late as
 * possible (a file a disposed workspace left somewhere stays unowned by a new workspace for as long as the
 * range allows).
 */
import { ResourceExhaustedError } from '../errors.js';
import type { NodeHostIdClaims } from './host-id-claims.js';

export interface HostIdRange {
  /** First id of the range. */
  readonly base: number;
  /** How many ids the range has. */
  readonly count: number;
  /**
   * Every workspace gets `base`: for runtimes that run every workspace as one uid, such as the Kubernetes runtime's
   * pods (`runAsUser`, 33333 by default), which must be able to write the content the daemon hands them. Workspaces
   * are then told apart by their mounts only, not by their owner on the node.
   */
  readonly shared?: boolean;
  /** The node's claims directory ({@link NodeHostIdClaims}); absent: ids are unique within this daemon only. */
  readonly claimsDir?: string;
}

export class HostIdAllocator {
  private readonly used = new Set<number>();
  private cursor = 0;

  constructor(
    readonly range: HostIdRange,
    /** Node-wide claims; without them ids are unique among this daemon's workspaces only. */
    private readonly claims?: NodeHostIdClaims,
  ) {}

  /**
   * Takes the ids of the workspaces loaded from disk (in the range or not) and claims them node-wide again; gives
   * back this daemon's claims of ids no workspace has any more. Returns the ids another daemon holds as well (two
   * daemons that ran before claims existed): they stay in use here, nothing can be done for them but to say so.
   */
  async adopt(ids: readonly number[]): Promise<number[]> {
    if (this.range.shared) return [];
    for (const id of ids) {
      this.used.add(id);
      if (id >= this.range.base && id < this.range.base + this.range.count) {
        this.cursor = (id - this.range.base + 1) % this.range.count;
      }
    }
    if (!this.claims) return [];
    await this.claims.prepare();
    const contested: number[] = [];
    for (const id of ids) if (!(await this.claims.claim(id))) contested.push(id);
    await this.claims.releaseAllBut(new Set(ids));
    return contested;
  }

  /**
   * A free id, claimed node-wide; RESOURCE_EXHAUSTED when every id of the range belongs to a live workspace here or
   * of another daemon. An id is taken here before the first await, so concurrent calls never get the same one.
   */
  async allocate(): Promise<number> {
    const { base, count } = this.range;
    if (this.range.shared) return base;
    for (let scanned = 0; scanned < count; scanned++) {
      const id = base + this.cursor;
      this.cursor = (this.cursor + 1) % count;
      if (this.used.has(id)) continue;
      this.used.add(id);
      if (!this.claims || (await this.claims.claim(id))) return id;
      // Another daemon's workspace has it: skipped this round (a later round tries it again).
      this.used.delete(id);
    }
    throw new ResourceExhaustedError(
      `every workspace host id of this node is in use (${count} from ${base}; see workspaceIds in the daemon config)`,
    );
  }

  async release(id: number): Promise<void> {
    if (this.range.shared) return;
    this.used.delete(id);
    await this.claims?.release(id);
  }

  get inUse(): number {
    return this.used.size;
  }
}
