/**
 * A command run as a workspace's host user in a mount namespace of its own, for the daemon's work on content that a
 * workspace chose: its git (git/git-spawn.ts) and the xattr walk of its backups (archive/xattr.ts).
 *
 * @module
 */

/** Where the content is bound inside a {@link Confinement.minimalRoot}, and where the command starts. */
export const minimalRootContent = '/content';

/** The host's system directories a minimal root shows read-only (links such as `/bin -> usr/bin` are copied). */
const systemDirectories = 'usr bin sbin lib lib32 lib64 libx32';

// Runs in a fresh mount namespace as root. Without a minimal root: binds the content (when there is one) at an empty
// directory and enters it, binds a passwd that knows the user (ssh refuses to run for a uid without an entry: "No
// user exists for uid"), covers the hidden directories (every workspace's content) with an empty read-only tmpfs.
// With one: an empty tmpfs becomes the root, holding the system directories read-only and the content at /content,
// and the command is chrooted there, so a path it follows (a link a running workspace swapped in) can lead nowhere
// else. Then it installs a syscall filter (when `filter` is set), becomes the user (keeping only the capabilities
// named) and runs the command. Any failure fails the command.
const confinedScript = (filterLoader: string): string =>
  'src=$1; dst=$2; uid=$3; gid=$4; pw=$5; filter=$6; sysroot=$7; caps=$8; n=$9; shift 9; ' +
  'if [ -n "$sysroot" ]; then ' +
  '  mount -t tmpfs -o nosuid,nodev,mode=755,size=64k workbay-root "$sysroot"; ' +
  `  for d in ${systemDirectories}; do ` +
  '    if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$sysroot/$d"; ' +
  '    elif [ -d "/$d" ]; then mkdir "$sysroot/$d"; mount --bind "/$d" "$sysroot/$d"; ' +
  '      mount -o remount,bind,ro,nosuid,nodev "$sysroot/$d"; fi; ' +
  '  done; ' +
  `  dst="$sysroot${minimalRootContent}"; mkdir "$dst"; ` +
  'fi; ' +
  'if [ -n "$src" ]; then mount --bind "$src" "$dst"; cd "$dst"; fi; ' +
  'if [ -n "$pw" ]; then mount --bind "$pw" /etc/passwd; fi; ' +
  'while [ "$n" -gt 0 ]; do ' +
  '  if [ -d "$1" ]; then mount -t tmpfs -o ro,nosuid,nodev,noexec,mode=755,size=4k workbay-hidden "$1"; fi; ' +
  '  shift; n=$((n - 1)); ' +
  'done; ' +
  `if [ -n "$filter" ]; then set -- perl -e '${filterLoader}' "$filter" "$@"; fi; ` +
  'set -- setpriv --reuid="$uid" --regid="$gid" --clear-groups --no-new-privs ' +
  '  --inh-caps="-all$caps" --ambient-caps="-all$caps" --bounding-set="-all$caps" -- "$@"; ' +
  'if [ -n "$sysroot" ]; then ' +
  '  mount -o remount,ro "$sysroot"; ' +
  `  exec chroot "$sysroot" sh -c 'cd "$0" && exec "$@"' "${minimalRootContent}" "$@"; ` +
  'fi; ' +
  'exec "$@"';

/** A capability the confined command keeps (as `setpriv` names it). */
export type KeptCapability = 'dac_read_search';

export interface Confinement {
  /** The host identity the command runs as (no supplementary groups, no_new_privs). */
  readonly uid: number;
  readonly gid: number;
  /** Content bound at `target` (an empty directory) before anything is hidden; the command starts there. */
  readonly mount?: { readonly source: string; readonly target: string };
  /**
   * An empty directory to build a root in: the command is chrooted into it, with only the host's system directories
   * (read-only) and the content (`mount.source`, at {@link minimalRootContent}, where it starts) to see.
   */
  readonly minimalRoot?: string;
  /** Capabilities kept (ambient) as `uid`; none by default. */
  readonly capabilities?: readonly KeptCapability[];
  /** A passwd file bound over /etc/passwd. */
  readonly passwd?: string;
  /** Directories covered with an empty read-only tmpfs once the content is bound (the working area). */
  readonly hide?: readonly string[];
  /** A syscall filter (`syscallFilterArgument`) and the Perl that installs it (`syscallFilterLoader`). */
  readonly syscallFilter?: { readonly argument: string; readonly loader: string };
}

/** The arguments of `unshare` that run `command` confined so. */
export function confinedArgs(confinement: Confinement, command: readonly string[]): string[] {
  const filter = confinement.syscallFilter;
  return [
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-euc',
    confinedScript(filter?.loader ?? ''),
    'sh',
    confinement.mount?.source ?? '',
    confinement.mount?.target ?? '',
    String(confinement.uid),
    String(confinement.gid),
    confinement.passwd ?? '',
    filter?.argument ?? '',
    confinement.minimalRoot ?? '',
    (confinement.capabilities ?? []).map((cap) => `,+${cap}`).join(''),
    String(confinement.hide?.length ?? 0),
    ...(confinement.hide ?? []),
    ...command,
  ];
}
