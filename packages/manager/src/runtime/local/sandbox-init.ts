// The sandbox init of an isolated workspace (pid 1 of its pid namespace, root until it drops to the workspace) and
// what it sets up; wrapper.ts runs it.
import { nodeWideProcDirs, nodeWideProcFiles, nodeWideSysDirs, syscallFilterLoader } from '@workbay/nsinsider';

/** The workspace's own uid/gid inside its user namespace (the original's workspace user). */
export const workspaceUid = 33333;

/**
 * Whether a workspace may create namespaces inside its own (config `nestedNamespaces`): `off` (the default, as under
 * Docker's and Kubernetes' default seccomp profiles, which refuse new user namespaces) or `limited` (rootless
 * containers, browser sandboxes) at {@link limitedNestedNamespaces}.
 *
 * Nested namespaces reach node-wide tables that no cgroup charges or bounds per workspace (red team, rounds 3 and 4):
 * 20,000 network namespaces took 2.1 GB outside a 4 GiB memory limit; four network namespaces with 262,000 conntrack
 * entries each, 975 MB of slab, 6 MB of it charged; 8 mount namespaces of 99,000 tmpfs mounts, 5.7 GB of slab; one
 * network namespace with 1,022 neighbour entries filled the node's neighbour table (`gc_thresh3`, shared by every
 * namespace), so the host could not reach a neighbouring workspace for 5 s at a time and a new start took 14 s.
 */
export type NestedNamespaces = 'off' | 'limited';

/**
 * How many namespaces of each kind a workspace may create with `nestedNamespaces: limited`, nested ones included:
 * enough for rootless containers in a workspace.
 */
export const limitedNestedNamespaces: Readonly<Record<string, number>> = {
  user: 64,
  net: 64,
  mnt: 128,
  pid: 64,
  ipc: 64,
  uts: 64,
  cgroup: 64,
  time: 64,
};

/**
 * The limits for the policy, as the init script reads them (`kind:n …`). `off` sets every kind to 0: a workspace has
 * no capability in its own user namespace, so without a nested one it could create none anyway, but each kind is set
 * so that none depends on that.
 */
export function nestedNamespaceLimits(policy: NestedNamespaces): string {
  return Object.entries(limitedNestedNamespaces)
    .map(([kind, n]) => `${kind}:${policy === 'limited' ? n : 0}`)
    .join(' ');
}

/**
 * The pseudo-terminals a workspace may hold at once, in a devpts instance of its own. The host's devpts is shared
 * by everything on the node: a workspace holding all of `kernel.pty.max` (4096) left no terminal to its neighbours
 * nor to root (red team, round 4). Instances other than the host's can take only `pty.max - pty.reserve` together,
 * so the host keeps its reserve (1024) whatever workspaces do; this bounds each of them within the rest.
 */
export const ptysPerWorkspace = 128;

/**
 * Run right after the workspace's user namespace is made, by its creator with the capabilities it has there
 * (`--keep-caps`), then dropped for good: sets the nested namespace limits (its first argument, from
 * {@link nestedNamespaceLimits}) in that namespace, where the workspace,
 * which has no capability there, cannot raise them (a namespace it nests may set its own, but every level's limit
 * counts), and execs the workspace with no capabilities at all. A kind this kernel does not have is skipped.
 */
const nestedLimitsScript = [
  'limits=$1; shift',
  'for limit in $limits; do',
  '  f=/proc/sys/user/max_${limit%%:*}_namespaces',
  '  [ -e "$f" ] || continue',
  '  echo "${limit#*:}" > "$f" || { echo "workbay: cannot limit nested namespaces ($f)" >&2; exit 125; }',
  'done',
  'exec setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=-all -- "$@"',
].join('\n');

/**
 * How /proc/self/mountinfo spells a path: space, tab, newline and backslash as a backslash and three octal digits.
 * Spelled so, a path is one word: the init takes the directories whose mounts it detaches as one argument of words.
 */
export function mountinfoPath(p: string): string {
  return p.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/**
 * Where sysfs shows the node's block devices and their filesystems, covered by an empty read-only tmpfs when they
 * exist: a loop device's `loop/backing_file` names a workspace's image (its instance id), its `stat` and `inflight`
 * count that workspace's I/O, and `/sys/fs/ext4/<device>/` the writes of the filesystem on it (red team round 6).
 * The directory holding each block device's own is covered too (`/sys/devices/virtual/block` for loop devices, the
 * disk controller's `block` directory for a disk), found from /sys/block, so that no other sysfs path reaches them.
 * The workspace's own network devices (`/sys/class/net`) stay.
 */
export const maskedSysDirs: readonly string[] = nodeWideSysDirs.map((dir) => `/sys/${dir}`);

/** Per-filesystem directories of /proc, by device (ext4's options and allocator, jbd2's commits): covered likewise. */
export const maskedProcDirs: readonly string[] = nodeWideProcDirs.map((dir) => `/proc/${dir}`);

/**
 * Node-wide /proc files that show what other workspaces do, bound to /dev/null (as Docker masks /proc files): the
 * I/O of every block device, each workspace's loop device among them (`diskstats`, `partitions` lists them), and
 * every file lock on the node by device and inode (`locks`).
 */
export const maskedProcFiles: readonly string[] = nodeWideProcFiles.map((file) => `/proc/${file}`);

/**
 * The kernel log, bound to /dev/null likewise: it names other workspaces' processes, cgroups (instance ids) and loop
 * images (an OOM kill, a full filesystem). Readable only with CAP_SYSLOG where `kernel.dmesg_restrict` is 1, by
 * every user where it is 0; masked either way.
 */
export const maskedDevFiles: readonly string[] = ['/dev/kmsg'];

/**
 * pid 1 of the workspace's pid namespace, running as root in fresh mount/uts namespaces and the workspace's
 * netns (all owned by the host's user namespace, so the workspace can change none of them later). It:
 * - makes every mount of its mount namespace private (`unshare` does already), so that nothing it mounts or
 *   detaches reaches the host, and no mount the host makes later appears in the workspace;
 * - sets the hostname; remounts its /proc with `hidepid=2`: the workspace sees only its own processes, not this init,
 *   whose command line names host paths, the host uid and the workspace's environment (red team round 5), nor
 *   anything root runs in its pid namespace;
 * - binds the content at /workspace and the in-workspace service dir at /.workbay (nosuid, nodev; read-only: the
 *   directory is on the host's disk, outside the workspace's quota, and connecting to its socket needs no write to
 *   the mount; red team round 6 wrote 2 GiB there in 1.9 s);
 * - then detaches (`umount -l`, in its own mount namespace only) every mount at or below the directories it hides
 *   or makes private (`detach`: their real paths, {@link mountinfoPath} words): the loop mount of every workspace's
 *   content below the directory holding them, the netns mount of every workspace below `/run/netns`. A tmpfs over
 *   a directory hides the files below it but not the mounts: /proc/self/mountinfo listed them all, with the
 *   neighbours' instance ids and content paths (red team round 6). Detached, they are also no longer held by this
 *   namespace (a neighbour's content stayed mounted, its loop device bound, while any workspace started before its
 *   unmount ran). Newest first, so that a mount over another goes before the one it covers; what is left after
 *   three rounds fails the start. Done before the masks and covers below are mounted, so that none of them can be
 *   taken along;
 * - masks {@link maskedProcFiles}, {@link maskedDevFiles} and {@link maskedProcDirs}, and mounts a sysfs of the workspace's netns (the host's
 *   would list the host's links) with the node's block devices and their filesystems covered ({@link maskedSysDirs});
 * - covers the host directories it must not read (every workspace's content, the runtime's and manager's state)
 *   with empty read-only tmpfs mounts, and gives the workspace private tmpfs mounts at /tmp, /var/tmp, /dev/shm and
 *   every other directory of the host that anyone may write (`/run/lock`, `/dev/mqueue`: see `sharedWritableDirs`),
 *   and a devpts instance of its own at /dev/pts, at most {@link ptysPerWorkspace} terminals;
 * - installs the workspace's syscall filter (`filter`, from `syscallFilterArgument`; empty: none), which holds for
 *   everything it starts;
 * - runs the workspace as host uid/gid `uid`/`gid` with no capabilities, no supplementary groups and no_new_privs,
 *   in a new user namespace that maps exactly that id to 33333 (an unprivileged process may map its own id, so no
 *   newuidmap and no privileged helper is involved); host root is not mapped inside;
 * - forwards TERM/HUP to it: the kernel only delivers signals to a namespace's init when it handles them, and a
 *   workspace running as pid 1 would silently ignore SIGTERM; it exits with the workspace's own status (not the
 *   128+n of a `wait` its trap interrupted). When init exits, the kernel kills the rest.
 * Any set-up failure exits 125 (reported as "the workspace sandbox could not be set up").
 */
export const sandboxInitScript = [
  'host=$1; content=$2; iws=$3; uid=$4; gid=$5; limits=$6; filter=$7; detach=$8; n=$9; shift 9',
  'fail() { echo "workbay: $*" >&2; exit 125; }',
  `filtered() { if [ -n "$filter" ]; then exec perl -e '${syscallFilterLoader}' "$filter" "$@"; fi; exec "$@"; }`,
  'hide() { mount -t tmpfs -o ro,nosuid,nodev,noexec,mode=755,size=4k workbay-hidden "$1" || fail "cannot hide $1"; }',
  // below PATH WORD...: whether the mount point PATH (mountinfo's spelling) is one of the WORDs or lies below one.
  'below() { p=$1; shift; for d do case $p in "$d"|"$d"/*) return 0;; esac; done; return 1; }',
  // unmount PATH...: detaches the mount points (mountinfo's spelling, decoded here), each with what lies below it.
  'unmount() {',
  '  for m do',
  '    shift',
  '    case $m in *\\\\*) m=$(printf %s "$m" | sed \'s/\\\\\\([0-7]\\)/\\\\0\\1/g\'); m=$(printf %bx "$m"); m=${m%x};; esac',
  '    set -- "$@" "$m"',
  '  done',
  '  umount -l -- "$@"',
  '}',
  'mount --make-rprivate / || fail "cannot make its mounts private"',
  'printf %s "$host" > /proc/sys/kernel/hostname || fail "cannot set the hostname"',
  'mount -o remount,nosuid,nodev,noexec,hidepid=2 /proc || fail "cannot hide root processes in /proc"',
  'mount --bind "$content" /workspace && mount -o remount,bind,nosuid,nodev /workspace || fail "cannot mount the content"',
  'if [ -n "$iws" ]; then',
  '  mount --bind "$iws" /.workbay && mount -o remount,bind,ro,nosuid,nodev,noexec /.workbay || fail "cannot mount $iws"',
  'fi',
  // Mount points are words in mountinfo's spelling (no blanks); `set -f` keeps a `*` in one from globbing.
  'set -f',
  'round=0',
  'while [ -n "$detach" ]; do',
  '  found=',
  '  while read -r _ _ _ _ mnt _; do below "$mnt" $detach && found="$mnt $found"; done < /proc/self/mountinfo',
  '  [ -n "$found" ] || break',
  '  round=$((round + 1))',
  '  [ "$round" -le 3 ] || fail "cannot detach the host mounts below $detach:$found"',
  '  unmount $found 2>/dev/null',
  'done',
  'set +f',
  `for f in ${[...maskedProcFiles, ...maskedDevFiles].join(' ')}; do`,
  '  if [ -e "$f" ]; then mount --bind /dev/null "$f" || fail "cannot mask $f"; fi',
  'done',
  'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys || fail "cannot mount sysfs"',
  // The directories holding the block devices' own (sysfs names have no blanks).
  'blocks=',
  'for b in $(readlink -f /sys/block/* 2>/dev/null); do',
  '  case " $blocks " in *" ${b%/*} "*) ;; *) blocks="$blocks ${b%/*}" ;; esac',
  'done',
  `for d in $blocks ${[...maskedSysDirs, ...maskedProcDirs].join(' ')}; do`,
  '  if [ -d "$d" ]; then hide "$d"; fi',
  'done',
  'while [ "$n" -gt 0 ]; do',
  '  hide "$1"',
  '  shift; n=$((n - 1))',
  'done',
  'm=$1; shift',
  'while [ "$m" -gt 0 ]; do',
  '  if [ -d "$1" ]; then mount -t tmpfs -o nosuid,nodev,mode=1777 workbay-tmp "$1" || fail "cannot mount a tmpfs at $1"; fi',
  '  shift; m=$((m - 1))',
  'done',
  'if [ -d /dev/pts ]; then',
  `  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,max=${ptysPerWorkspace},nosuid,noexec workbay-devpts /dev/pts || fail "cannot mount a devpts instance"`,
  '  mount --bind /dev/pts/ptmx /dev/ptmx || fail "cannot point /dev/ptmx at its devpts instance"',
  'fi',
  'cd /workspace || fail "cannot enter /workspace"',
  `filtered setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- unshare --user --map-user=${workspaceUid} --map-group=${workspaceUid} --keep-caps -- /bin/sh -c '${nestedLimitsScript}' workbay-limits "$limits" "$@" &`,
  'child=$!',
  'trap \'kill -TERM "$child" 2>/dev/null\' TERM',
  'trap \'kill -HUP "$child" 2>/dev/null\' HUP',
  'while :; do',
  '  wait "$child"; rc=$?',
  '  kill -0 "$child" 2>/dev/null && continue',
  // A trapped signal cuts `wait` short with 128+n even when the child exits cleanly at that moment; the child's
  // own status is still there to collect (127: it was collected already, and rc is it).
  '  wait "$child"; again=$?',
  '  [ "$again" -ne 127 ] && rc=$again',
  '  exit "$rc"',
  'done',
].join('\n');
