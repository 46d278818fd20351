/**
 * What a workspace must not read of the node through a proc or sysfs mount, relative to the mount: the I/O and the
 * names of every block device (each workspace's loop device and its image's path among them), every file lock on
 * the node, and the per-device state of the node's filesystems. The sandbox masks them in the proc and sysfs it
 * gives a workspace (the local runtime's sandbox init), and so do the proc and sysfs mounted for it later
 * (`mountProc`, `mountSysfs`): those showed other owners' instance ids and I/O (red team round 11 N1).
 */

/** proc files bound to /dev/null. */
export const nodeWideProcFiles: readonly string[] = ['diskstats', 'partitions', 'locks'];

/** proc directories covered by an empty read-only tmpfs. */
export const nodeWideProcDirs: readonly string[] = ['fs/ext4', 'fs/jbd2', 'fs/xfs'];

/**
 * sysfs directories covered by an empty read-only tmpfs; so is the directory holding each block device's own
 * (found through `block/*`), so that no other sysfs path reaches them.
 */
export const nodeWideSysDirs: readonly string[] = ['block', 'class/block', 'dev/block', 'fs/ext4', 'fs/xfs'];
