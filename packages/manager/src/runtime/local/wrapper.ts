import { existsSync } from 'node:fs';
import { systemToolEnv, systemToolPath } from '@workbay/nsinsider';
import { logWriterScript } from './log-writer.js';
import { mountinfoPath, nestedNamespaceLimits, sandboxInitScript } from './sandbox-init.js';
import type { NestedNamespaces } from './sandbox-init.js';
import { execWithEnv, findPerl, withOnlyEnv } from './workspace-exec.js';

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
 * workspace command alone, at the very end, carried encoded past the root tools (see workspace-exec.ts).
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

export interface WrapperInvocation {
  readonly file: string;
  readonly args: string[];
  /** The wrapper's own environment: {@link trustedEnv}, never the workspace's (which it carries encoded). */
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

/**
 * Where a wrapper spawned ahead of its start waits ({@link wrapperInvocation}'s `gated`): the variable names the
 * content directory, and nothing else happens until the runtime writes `go` to descriptor 3. End of file there (the
 * start was given up, or the manager is gone: the kernel closes its end) ends the wrapper with 125, before it joined a
 * cgroup, ran anything or wrote an exit status. So the fork and the shell's start-up, about 9 ms, happen while the
 * daemon still produces the content, and the workspace still never runs on content that is not complete.
 */
const gateVariable = 'WORKBAY_GATE_DIR';
const gateScript = [
  `if [ -n "\${${gateVariable}-}" ]; then`,
  '  IFS= read -r go <&3 || go=',
  '  exec 3<&-',
  '  if [ "$go" != go ]; then exit 125; fi',
  `  cd -- "$${gateVariable}" || exit 125`,
  `  unset ${gateVariable}`,
  'fi',
].join('\n');

/** Runs the wrapper when it closes inherited descriptors ({@link closeInheritedFds}). */
const wrapperShell = '/bin/bash';

const hasWrapperShell = existsSync(wrapperShell);

/** The search path of every root tool the wrapper and the init run (absolute directories only, no cwd). */
export const trustedPath = systemToolPath;

/** The whole environment of the root wrapper and init. */
export const trustedEnv: Readonly<Record<string, string>> = systemToolEnv;

/** Perl on the trusted path, which gives the workspace command its environment (workspace-exec.ts), if any. */
const perl = findPerl(trustedPath);

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
  /**
   * Directories below which every host mount is detached in the workspace's mount namespace, as real paths (the
   * kernel lists mounts by them): by default the hidden and private ones.
   */
  readonly detachDirs?: readonly string[];
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
  /** Perl's path (default: found on the trusted path at start-up); `null`: run without, through `env -i`. */
  readonly perl?: string | null;
  /**
   * Spawned ahead of its start: it waits at its gate (see {@link gateScript}) and then changes into this directory,
   * the content's; the spawn gives it descriptor 3 and a working directory that exists already.
   */
  readonly gated?: { readonly contentDir: string };
}): WrapperInvocation {
  const s = options.sandbox;
  const perlPath = options.perl === undefined ? perl : (options.perl ?? undefined);
  const exec = perlPath
    ? execWithEnv(perlPath, options.env, options.command)
    : { argv: withOnlyEnv(options.env, options.command), carriers: {} };
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
        (s.detachDirs ?? [...(s.hideDirs ?? []), ...(s.privateDirs ?? defaultPrivateDirs)])
          .map(mountinfoPath)
          .join(' '),
        String(s.hideDirs?.length ?? 0),
        ...(s.hideDirs ?? []),
        ...counted(s.privateDirs ?? defaultPrivateDirs),
      ]
    : ['plain'];
  const script = closeFds ? `${closeInheritedFds}\n${outerScript}` : outerScript;
  return {
    file: closeFds ? wrapperShell : '/bin/sh',
    args: [
      '-c',
      options.gated ? `${gateScript}\n${script}` : script,
      'workbay-workspace',
      options.exitFile,
      String(options.cgroupProcsFiles.length),
      ...options.cgroupProcsFiles,
      ...mode,
      ...exec.argv,
    ],
    env: {
      ...trustedEnv,
      ...exec.carriers,
      ...(options.gated ? { [gateVariable]: options.gated.contentDir } : {}),
    },
  };
}
