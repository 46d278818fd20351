/**
 * Host uids/gids of workspaces (isolation contract): when the daemon runs as root every workspace gets its own
 * id (uid == gid) from the configured range, unique among the workspaces this daemon knows, kept in the
 * session state so that it survives a restart, and freed when the workspace is disposed.
 *
 * Ids are handed out round-robin from just after the last one given, so that a freed id is reused as late as
 * possible (a file a disposed workspace left somewhere stays unowned by a new workspace for as long as the
 * range allows).
 */
import { ResourceExhaustedError } from '../errors.js';

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
}

export class HostIdAllocator {
  private readonly used = new Set<number>();
  private cursor = 0;

  constructor(readonly range: HostIdRange) {}

  /** Marks an id as taken (a workspace loaded from disk), in the range or not. */
  reserve(id: number): void {
    if (this.range.shared) return;
    this.used.add(id);
    if (id >= this.range.base && id < this.range.base + this.range.count) this.cursor = id - this.range.base + 1;
  }

  /** A free id; RESOURCE_EXHAUSTED when every id of the range belongs to a live workspace. */
  allocate(): number {
    const { base, count } = this.range;
    if (this.range.shared) return base;
    for (let step = 0; step < count; step++) {
      const offset = (this.cursor + step) % count;
      const id = base + offset;
      if (this.used.has(id)) continue;
      this.used.add(id);
      this.cursor = (offset + 1) % count;
      return id;
    }
    throw new ResourceExhaustedError(
      `every workspace host id of this node is in use (${count} from ${base}; see workspaceIds in the daemon config)`,
    );
  }

  release(id: number): void {
    this.used.delete(id);
  }

  get inUse(): number {
    return this.used.size;
  }
}
