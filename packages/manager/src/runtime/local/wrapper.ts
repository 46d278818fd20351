import { existsSync } from 'node:fs';
import { syscallFilterLoader } from '@workbay/nsinsider';
import { logWriterScript } from './log-writer.js';

/**
 * The tiny shell wrapper every workspace runs under. It is the leader of the workspace's process group and:
 * 1. writes its own pid into the workspace cgroup(s), so that everything it execs is accounted there from the start;
 * 2. runs the workspace, isolated (see {@link sandboxInitScript}) or as a plain child;
 * 3. records the exit status in a file, which survives a manager restart (an adopted process is no longer the
 *    manager's child, so its status could not be collected otherwise).
 *
 * It traps TERM/INT/HUP with a no-op so that a stop signal sent to the process group reaches the workspace while
 * the wrapper itself stays to record the status. Traps are reset on exec, so the workspace sees default handlers.
 *
 * Isolated, the wrapper enters the workspace's prepared network namespace (`nsenter --net`) and creates its pid,
 * mount, uts, ipc and cgroup namespaces (`unshare --mount-proc`); pid 1 there is the sandbox init, still root, which
 * sets up the mounts and only then drops to the workspace identity. The ipc namespace keeps SysV shared memory and
 * message queues to the workspace (they die with it, and its `shmmni` is its own); the cgroup namespace shows the
 * workspace its own cgroup as `/`, not the node's layout.
 *
 * The wrapper and the init run as root with a fixed environment ({@link trustedEnv}): the workspace's environment is
 * its user's settings and content's choices (a `PATH` into the repository, `LD_PRELOAD`), so it reaches the
 * workspace command alone, through `env -i` at the very end (see {@link wrapperInvocation}).
 *
 * Before all of that it closes every descriptor above 2 ({@link closeInheritedFds}; not isolated, only with bash).
 */
const outerScript = [
  'exit_file=$1; n=$2; shift 2',
  'while [ "$n" -gt 0 ]; do',
  '  if ! echo $$ > "$1"; then echo "workbay: cannot join cgroup $1" >&2; echo 125 > "$exit_file"; exit 125; fi',
  '  shift; n=$((n - 1))',
  'done',
  'mode=$1; shift',
  'trap : TERM INT HUP',
  'if [ "$mode" = isolated ]; then',
  '  netns=$1; log=$2; log_max=$3; writer=$4; init=$5; shift 5',
  // The workspace writes into a pipe, and the log writer (root, outside its pid namespace, ignoring the stop signals so
  // that it takes the last words too) appends to the log and caps it (log-writer.ts): the workspace never holds the log
  // file itself, so it cannot fallocate it (20 GB of the host's disk in one call, red team round 5), reserve blocks past
  // its end, truncate it or clear its O_APPEND. The pipe also pushes back on a workspace writing faster than the disk
  // takes it. Without Perl, `cat` appends and the manager's LogCap caps the log from outside.
  '  nsenter --net="$netns" -- unshare --pid --fork --mount --uts --ipc --cgroup --mount-proc --kill-child -- /bin/sh -c "$init" workbay-init "$@" 2>&1 | { trap "" TERM INT HUP; if [ -n "$log" ] && command -v perl >/dev/null; then exec perl -e "$writer" "$log" "$log_max"; fi; exec cat; }',
  '  rc=${PIPESTATUS[0]}',
  'else',
  '  "$@"',
  '  rc=$?',
  'fi',
  'printf "%s\\n" "$rc" > "$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file"',
  'exit $rc',
].join('\n');

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
 * pid 1 of the workspace's pid namespace, running as root in fresh mount/uts namespaces and the workspace's
 * netns (all owned by the host's user namespace, so the workspace can change none of them later). It:
 * - sets the hostname; mounts a sysfs of the workspace's netns (the host's would list the host's links);
 * - remounts its /proc with `hidepid=2`: the workspace sees only its own processes, not this init, whose command
 *   line names host paths, the host uid and the workspace's environment (red team round 5), nor anything root
 *   runs in its pid namespace;
 * - binds the content at /workspace and the in-workspace service dir at /.workbay (nosuid, nodev; read-only: the
 *   directory is on the host's disk, outside the workspace's quota, and connecting to its socket needs no write to
 *   the mount; red team round 6 wrote 2 GiB there in 1.9 s);
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
  'host=$1; content=$2; iws=$3; uid=$4; gid=$5; limits=$6; filter=$7; n=$8; shift 8',
  'fail() { echo "workbay: $*" >&2; exit 125; }',
  `filtered() { if [ -n "$filter" ]; then exec perl -e '${syscallFilterLoader}' "$filter" "$@"; fi; exec "$@"; }`,
  'printf %s "$host" > /proc/sys/kernel/hostname || fail "cannot set the hostname"',
  'mount -o remount,nosuid,nodev,noexec,hidepid=2 /proc || fail "cannot hide root processes in /proc"',
  'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys || fail "cannot mount sysfs"',
  'mount --bind "$content" /workspace && mount -o remount,bind,nosuid,nodev /workspace || fail "cannot mount the content"',
  'if [ -n "$iws" ]; then',
  '  mount --bind "$iws" /.workbay && mount -o remount,bind,ro,nosuid,nodev,noexec /.workbay || fail "cannot mount $iws"',
  'fi',
  'while [ "$n" -gt 0 ]; do',
  '  mount -t tmpfs -o ro,nosuid,nodev,noexec,mode=755,size=4k workbay-hidden "$1" || fail "cannot hide $1"',
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

export interface WrapperInvocation {
  readonly file: string;
  readonly args: string[];
  /** The wrapper's own environment: {@link trustedEnv}, never the workspace's. */
  readonly env: Record<string, string>;
}

/**
 * Closes every descriptor above 2 before anything else runs: the manager's own are close-on-exec, but whatever
 * started the manager may have left it some that are not (`workbay up 300>>file`), and a root-owned file or socket
 * must not reach the workspace (nor the root tools on the way). The runtime passes nothing above 2 on purpose. The
 * glob lists /proc/self/fd before the loop closes anything; its own directory descriptor is closed again harmlessly
 * (closing a closed descriptor is not an error in bash).
 *
 * It needs bash: dash, the usual /bin/sh, only closes single-digit descriptors, and bash (Essential on Debian, in
 * every mainstream distribution's base) is a shell, not a new interpreter. Isolated workspaces always get it (a start
 * without /bin/bash fails); trusted ones (not isolated) when the machine has bash, else /bin/sh without the loop:
 * they run as the manager's own user, who can open its descriptors through /proc anyway, and a minimal image
 * (`/bin/sh` only) must still run them.
 */
const closeInheritedFds = 'for fd in /proc/self/fd/*; do fd=${fd##*/}; if [ "$fd" -gt 2 ]; then exec {fd}>&-; fi; done';

/** Runs the wrapper when it closes inherited descriptors ({@link closeInheritedFds}). */
const wrapperShell = '/bin/bash';

const hasWrapperShell = existsSync(wrapperShell);

/** The search path of every root tool the wrapper and the init run (absolute directories only, no cwd). */
export const trustedPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The whole environment of the root wrapper and init. */
export const trustedEnv: Readonly<Record<string, string>> = { PATH: trustedPath, LC_ALL: 'C' };

const envNamePattern = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/**
 * `command` run with exactly `env` and nothing of the caller's: `env -i NAME=VALUE… command…`, `env` found on the
 * trusted path, the command on the workspace's own PATH (env sets it first). A program name with a `=` would be
 * taken for one more variable, so it goes through `sh -c 'exec "$@"'` instead.
 */
export function withOnlyEnv(env: Readonly<Record<string, string>>, command: readonly string[]): string[] {
  const pairs = Object.entries(env).map(([name, value]) => {
    // Names are validated at the API edge; one from elsewhere (image config) must not become an env option.
    if (!envNamePattern.test(name)) throw new Error(`invalid environment variable name '${name.slice(0, 64)}'`);
    return `${name}=${value}`;
  });
  const program = command[0] ?? '';
  const run = program.includes('=') ? ['/bin/sh', '-c', 'exec "$@"', 'workbay-exec', ...command] : command;
  return ['env', '-i', ...pairs, ...run];
}

/** How an isolated workspace is set up; absent = a plain child process of the manager's user. */
export interface SandboxSpec {
  /** Path of the workspace's prepared network namespace (`/run/netns/<name>`). */
  readonly netnsPath: string;
  readonly hostname: string;
  /** Host path of the content, bound to /workspace. */
  readonly contentDir: string;
  /** Host path bound to /.workbay, when it exists. */
  readonly iwsDir?: string;
  /** Host directories to cover with an empty tmpfs (no one an ancestor of another). */
  readonly hideDirs?: readonly string[];
  /** Directories that get a private, writable tmpfs (default /tmp, /var/tmp and /dev/shm). */
  readonly privateDirs?: readonly string[];
  /** Host uid/gid the workspace runs as (33333 inside its user namespace). */
  readonly uid: number;
  readonly gid: number;
  /** Whether it may create namespaces inside its own (default `off`). */
  readonly nestedNamespaces?: NestedNamespaces;
  /** The syscall filter to install (`syscallFilterArgument`), or none. */
  readonly syscallFilter?: string;
}

const defaultPrivateDirs = ['/tmp', '/var/tmp', '/dev/shm'];

/** A list as the init script reads it: its length, then its items. */
function counted(items: readonly string[]): string[] {
  return [String(items.length), ...items];
}

/** The argv that runs `command` inside the wrapper. */
export function wrapperInvocation(options: {
  readonly exitFile: string;
  readonly cgroupProcsFiles: readonly string[];
  readonly sandbox?: SandboxSpec;
  /**
   * The log the wrapper's output goes to and its cap: an isolated workspace's log writer caps it itself
   * (log-writer.ts). Without it, the writer is `cat` and only the manager's LogCap caps the log.
   */
  readonly log?: { readonly file: string; readonly maxBytes: number };
  readonly command: readonly string[];
  /** The workspace's environment: given to `command` only. */
  readonly env: Readonly<Record<string, string>>;
}): WrapperInvocation {
  const s = options.sandbox;
  const closeFds = s !== undefined || hasWrapperShell;
  const mode = s
    ? [
        'isolated',
        s.netnsPath,
        options.log?.file ?? '',
        String(options.log?.maxBytes ?? 0),
        logWriterScript,
        sandboxInitScript,
        s.hostname,
        s.contentDir,
        s.iwsDir ?? '',
        String(s.uid),
        String(s.gid),
        nestedNamespaceLimits(s.nestedNamespaces ?? 'off'),
        s.syscallFilter ?? '',
        String(s.hideDirs?.length ?? 0),
        ...(s.hideDirs ?? []),
        ...counted(s.privateDirs ?? defaultPrivateDirs),
      ]
    : ['plain'];
  return {
    file: closeFds ? wrapperShell : '/bin/sh',
    args: [
      '-c',
      closeFds ? `${closeInheritedFds}\n${outerScript}` : outerScript,
      'workbay-workspace',
      options.exitFile,
      String(options.cgroupProcsFiles.length),
      ...options.cgroupProcsFiles,
      ...mode,
      ...withOnlyEnv(options.env, options.command),
    ],
    env: { ...trustedEnv },
  };
}
