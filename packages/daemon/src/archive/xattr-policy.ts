/**
 * Which extended attributes of an archive entry a restore writes. The names and values come from the archive, which
 * is workspace content (hostile), and go to `setfattr --restore` running as root:
 * - a name must be printable ASCII without `\` or `=`: setfattr decodes `\ooo` escapes in names (so
 *   `security\056capability` would pass a literal comparison and be written as `security.capability`), and a name
 *   with a newline would start a block of its own in the restore input (`# file: /etc/shadow`, found by a red-team
 *   run: an ACL on a host file);
 * - unless special files are allowed, only `user.*` and POSIX ACLs are written (no `security.*`: file capabilities,
 *   IMA/EVM, LSM labels; no `trusted.*`);
 * - values are bounded as the kernel bounds them (64 KiB), and so is what one restore holds until it applies them.
 */
import type { Xattrs } from './xattr.js';

/** The kernel's limit for one value (XATTR_SIZE_MAX). */
export const maxXattrValueBytes = 64 * 1024;
/** Names are at most 255 bytes (XATTR_NAME_MAX). */
const maxXattrNameBytes = 255;
/**
 * What one restore keeps for its final setfattr run, names and a per-attribute overhead included (1.4 million
 * empty-valued attributes with long names took 1.3 GB when only values were counted: red-team round 2); past it,
 * further attributes are dropped.
 */
export const maxRestoreXattrBytes = 64 * 1024 * 1024;
/** Attributes of one entry (ext4 holds far fewer in practice). */
export const maxXattrsPerEntry = 256;
/** What one attribute costs beyond its name and value (the restore input's framing and the map entry). */
const perAttributeOverhead = 64;

const safeName = /^[\x21-\x3c\x3e-\x5b\x5d-\x7e]+$/; // printable ASCII but `=` (0x3d) and `\` (0x5c)
const capabilityXattr = 'security.capability';
const ordinaryNamespaces = (name: string): boolean =>
  name.startsWith('user.') || name === 'system.posix_acl_access' || name === 'system.posix_acl_default';

/** A name setfattr takes literally: see the module comment. */
export function isSafeXattrName(name: string): boolean {
  return safeName.test(name) && Buffer.byteLength(name) <= maxXattrNameBytes && name.includes('.');
}

export interface XattrDrops {
  /** File capabilities not restored. */
  capabilities: number;
  /** Attributes with a name setfattr could misread, or outside the ordinary namespaces. */
  names: number;
  /** Attributes over the value limit or past the restore's budget. */
  oversized: number;
}

export class XattrPolicy {
  private held = 0;
  readonly drops: XattrDrops = { capabilities: 0, names: 0, oversized: 0 };

  constructor(private readonly allowSpecial: boolean) {}

  /** The attributes to write for one entry (undefined when none is left). */
  admit(xattrs: Xattrs): Xattrs | undefined {
    let kept: Xattrs | undefined;
    let count = 0;
    for (const [name, value] of Object.entries(xattrs)) {
      if (++count > maxXattrsPerEntry) {
        this.drops.oversized++;
        continue;
      }
      if (!isSafeXattrName(name)) {
        this.drops.names++;
        continue;
      }
      if (!this.allowSpecial && name === capabilityXattr) {
        this.drops.capabilities++;
        continue;
      }
      if (!this.allowSpecial && !ordinaryNamespaces(name)) {
        this.drops.names++;
        continue;
      }
      const cost = Buffer.byteLength(name) + value.length + perAttributeOverhead;
      if (value.length > maxXattrValueBytes || this.held + cost > maxRestoreXattrBytes) {
        this.drops.oversized++;
        continue;
      }
      this.held += cost;
      (kept ??= {})[name] = value;
    }
    return kept;
  }
}
