/**
 * What a restore may create from an archive (invariant 10). Archives (snapshots, backups, prebuilds) are
 * workspace content, hence hostile: unless the operator enables them (`restore.allowSpecialFiles`), device
 * nodes and FIFOs are not created, set-id bits and the sticky bit are cleared on everything but directories, and
 * only ordinary extended attributes are restored ({@link XattrPolicy}: no file capabilities, no names setfattr
 * could misread, bounded values). Everything written gets the workspace's host
 * identity instead of the owners the archive claims. Whatever is dropped is logged (the first few by name) and
 * counted.
 */
import type { TreeEntry } from './tree.js';
import { XattrPolicy } from './xattr-policy.js';

export interface EntryPolicyOptions {
  /** Create device nodes and FIFOs and keep set-id bits and file capabilities (default false). */
  readonly allowSpecialFiles?: boolean;
  /** Owner of everything written, instead of the archive's owners. */
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/** What a restore left out or changed. */
export interface DroppedEntries {
  /** Device nodes and FIFOs not created. */
  readonly specialFiles: number;
  /** Entries whose setuid/setgid/sticky bits were cleared. */
  readonly setIdBits: number;
  /** `security.capability` xattrs not restored. */
  readonly capabilities: number;
  /** Other xattrs not restored: unsafe names, other namespaces, oversized values. */
  readonly xattrs: number;
}

/** Named one by one in the log; the rest only in the summary. */
const namedDrops = 20;

export class EntryPolicy {
  private readonly allowSpecial: boolean;
  private specialFiles = 0;
  private setIdBits = 0;
  private readonly xattrPolicy: XattrPolicy;

  constructor(
    private readonly options: EntryPolicyOptions,
    private readonly warn: (message: string) => void,
  ) {
    this.allowSpecial = options.allowSpecialFiles ?? false;
    this.xattrPolicy = new XattrPolicy(this.allowSpecial);
  }

  get owner(): { readonly uid: number; readonly gid: number } | undefined {
    return this.options.owner;
  }

  get dropped(): DroppedEntries {
    const { capabilities, names, oversized } = this.xattrPolicy.drops;
    return { specialFiles: this.specialFiles, setIdBits: this.setIdBits, capabilities, xattrs: names + oversized };
  }

  private note(count: number, message: string): void {
    if (count <= namedDrops) this.warn(message);
  }

  /** The entry as it will be written, or undefined when it is not written at all. */
  admit(entry: TreeEntry): TreeEntry | undefined {
    // A mode that is not a number would be read one way here (a string is coerced as decimal) and another by
    // fchmod (as octal): such an entry is not written at all. Manifests are validated before; this is the second line.
    if (!Number.isInteger(entry.mode) || entry.mode < 0 || entry.mode > 0o177777) {
      this.specialFiles++;
      this.note(this.specialFiles, `dropped '${entry.path.slice(0, 256)}' (its mode is not a valid number)`);
      return undefined;
    }
    let out = entry;
    if (!this.allowSpecial) {
      if (entry.type === 'fifo' || entry.type === 'character-device' || entry.type === 'block-device') {
        this.specialFiles++;
        this.note(
          this.specialFiles,
          `dropped ${entry.type} '${entry.path.slice(0, 256)}' (special files are disabled)`,
        );
        return undefined;
      }
      // Directories keep setgid (group inheritance) and sticky (shared /tmp-like dirs); neither grants anything.
      const forbidden = entry.type === 'directory' ? 0o4000 : 0o7000;
      if ((entry.mode & forbidden) !== 0) {
        this.setIdBits++;
        this.note(
          this.setIdBits,
          `cleared set-id bits of '${entry.path.slice(0, 256)}' (${(entry.mode & 0o7777).toString(8)})`,
        );
        out = { ...out, mode: entry.mode & ~forbidden & 0o7777 };
      }
    }
    if (entry.xattrs) {
      // Every mode: the names reach setfattr as root (see XattrPolicy).
      const before = this.xattrPolicy.drops.capabilities;
      const kept = this.xattrPolicy.admit(entry.xattrs);
      if (this.xattrPolicy.drops.capabilities > before) {
        this.note(this.xattrPolicy.drops.capabilities, `dropped file capabilities of '${entry.path.slice(0, 256)}'`);
      }
      if (kept !== entry.xattrs) {
        const { xattrs: _all, ...withoutXattrs } = out;
        void _all;
        out = kept ? { ...withoutXattrs, xattrs: kept } : withoutXattrs;
      }
    }
    const owner = this.options.owner;
    if (owner && (out.uid !== owner.uid || out.gid !== owner.gid)) out = { ...out, uid: owner.uid, gid: owner.gid };
    return out;
  }

  /** One line for the log after a restore, or undefined when nothing was dropped. */
  summary(): string | undefined {
    const { specialFiles, setIdBits, capabilities, xattrs } = this.dropped;
    if (specialFiles + setIdBits + capabilities + xattrs === 0) return undefined;
    return `restore dropped ${specialFiles} special files, cleared set-id bits on ${setIdBits} entries, dropped ${capabilities} file capabilities (restore.allowSpecialFiles is off) and ${xattrs} other extended attributes (unsafe names, other namespaces, oversized)`;
  }
}
