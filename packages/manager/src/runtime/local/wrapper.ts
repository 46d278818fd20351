/**
 * The tiny shell wrapper every workspace runs under. It is the leader of the workspace's process group and:
 * 1. writes its own pid into the workspace cgroup(s), so that everything it execs is accounted there from the start;
 * 2. runs the workspace, under `unshare` (own pid/mount/uts namespaces) when isolated;
 * 3. records the exit status in a file, which survives a manager restart (an adopted process is no longer the
 *    manager's child, so its status could not be collected otherwise).
 *
 * It traps TERM/INT/HUP with a no-op so that a stop signal sent to the process group reaches the workspace while
 * the wrapper itself stays to record the status. Traps are reset on exec, so the workspace sees default handlers.
 */
const outerScript = [
  'exit_file=$1; n=$2; shift 2',
  'while [ "$n" -gt 0 ]; do',
  '  if ! echo $$ > "$1"; then echo "workbay: cannot join cgroup $1" >&2; echo 125 > "$exit_file"; exit 125; fi',
  '  shift; n=$((n - 1))',
  'done',
  'ns=$1; host=$2; init=$3; shift 3',
  'trap : TERM INT HUP',
  'if [ "$ns" = 1 ]; then',
  '  unshare --pid --fork --mount --uts --mount-proc --kill-child -- /bin/sh -c "$init" "$host" "$@"',
  'else',
  '  "$@"',
  'fi',
  'rc=$?',
  'printf "%s\\n" "$rc" > "$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file"',
  'exit $rc',
].join('\n');

/**
 * pid 1 of the workspace's pid namespace. It sets the hostname, runs the workspace as its child and forwards
 * TERM/HUP to it: the kernel only delivers signals to a namespace's init when it handles them, and a workspace
 * running as pid 1 would silently ignore SIGTERM. When it exits, the kernel kills whatever is left in the namespace.
 */
export const initScript = [
  'printf %s "$0" > /proc/sys/kernel/hostname || { echo "workbay: cannot set the hostname" >&2; exit 125; }',
  '"$@" &',
  'child=$!',
  'trap \'kill -TERM "$child" 2>/dev/null\' TERM',
  'trap \'kill -HUP "$child" 2>/dev/null\' HUP',
  'while :; do',
  '  wait "$child"; rc=$?',
  '  kill -0 "$child" 2>/dev/null || exit "$rc"',
  'done',
].join('\n');

export interface WrapperInvocation {
  readonly file: string;
  readonly args: string[];
}

/** The argv that runs `command` inside the wrapper. */
export function wrapperInvocation(options: {
  readonly exitFile: string;
  readonly cgroupProcsFiles: readonly string[];
  readonly namespaced: boolean;
  readonly hostname: string;
  readonly command: readonly string[];
}): WrapperInvocation {
  return {
    file: '/bin/sh',
    args: [
      '-c',
      outerScript,
      'workbay-workspace',
      options.exitFile,
      String(options.cgroupProcsFiles.length),
      ...options.cgroupProcsFiles,
      options.namespaced ? '1' : '0',
      options.hostname,
      initScript,
      ...options.command,
    ],
  };
}
