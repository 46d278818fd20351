/**
 * A command run as a workspace's host user in a mount namespace of its own, for the daemon's work on content that a
 * workspace chose: its git (git/git-spawn.ts) and the xattr walk of its backups (archive/xattr.ts).
 *
 * @module
 */

// Runs in a fresh mount namespace as root: binds the content (when there is one) at an empty directory and enters
// it, binds a passwd that knows the user (ssh refuses to run for a uid without an entry: "No user exists for uid"),
// covers the hidden directories (every workspace's content) with an empty read-only tmpfs, then installs a syscall
// filter (when `filter` is set), becomes the user and runs the command. Any failure fails the command.
const confinedScript = (filterLoader: string): string =>
  'src=$1; dst=$2; uid=$3; gid=$4; pw=$5; filter=$6; n=$7; shift 7; ' +
  'if [ -n "$src" ]; then mount --bind "$src" "$dst"; cd "$dst"; fi; ' +
  'if [ -n "$pw" ]; then mount --bind "$pw" /etc/passwd; fi; ' +
  'while [ "$n" -gt 0 ]; do ' +
  '  if [ -d "$1" ]; then mount -t tmpfs -o ro,nosuid,nodev,noexec,mode=755,size=4k workbay-hidden "$1"; fi; ' +
  '  shift; n=$((n - 1)); ' +
  'done; ' +
  `if [ -n "$filter" ]; then set -- perl -e '${filterLoader}' "$filter" "$@"; fi; ` +
  'exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --no-new-privs -- "$@"';

export interface Confinement {
  /** The host identity the command runs as (no supplementary groups, no_new_privs). */
  readonly uid: number;
  readonly gid: number;
  /** Content bound at `target` (an empty directory) before anything is hidden; the command starts there. */
  readonly mount?: { readonly source: string; readonly target: string };
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
    String(confinement.hide?.length ?? 0),
    ...(confinement.hide ?? []),
    ...command,
  ];
}
