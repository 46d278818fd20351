import { join } from 'node:path';
import type { OpArgs } from './contract.js';
import { OpFailure } from './errors.js';
import type { ToolRunner } from './inside-tools.js';
import { classifyToolError, tool } from './inside-tools.js';
import { nodeWideProcDirs, nodeWideProcFiles, nodeWideSysDirs } from './node-masks.js';
import type { DeviceNodeResult, PrepareDevResult } from './types.js';

// Operations in the target's mount namespace: mounts, and the device nodes under its /dev. Paths are resolved only
// by the tools running there.

/** What `stat` says about each of `paths` (absent ones are missing from the map); other failures throw. */
async function probe(t: ToolRunner, paths: readonly string[]): Promise<Map<string, { type: string; rdev: string }>> {
  // NUL-separated fields: a path may hold any byte but NUL. %t/%T: device major/minor in hex.
  const r = await t.run('stat', ['--printf', '%F\\0%t:%T\\0%n\\0', '--', ...paths]);
  const problems = r.stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/no such file or directory|not a directory/i.test(l));
  if (r.exitCode !== 0 && problems.length > 0) {
    throw new OpFailure(classifyToolError(problems.join('\n')), `cannot inspect: ${problems.join('; ').slice(0, 400)}`);
  }
  const fields = r.stdout.split('\0');
  const found = new Map<string, { type: string; rdev: string }>();
  for (let i = 0; i + 2 < fields.length; i += 3) {
    found.set(fields[i + 2]!, { type: fields[i]!, rdev: fields[i + 1]! });
  }
  return found;
}

/**
 * Mounts at `target`, creating the mount point only when it is missing and `create` allows it (one tool run in the
 * usual case).
 */
async function mountCreating(t: ToolRunner, target: string, args: readonly string[], create: boolean): Promise<void> {
  try {
    await tool(t, 'mount', [...args, target]);
  } catch (e) {
    if (!create || !(e instanceof OpFailure) || e.code !== 'ENOENT') throw e;
    await tool(t, 'mkdir', ['-p', '--', target]);
    await tool(t, 'mount', [...args, target]);
  }
}

// OCI runtime defaults: what a container should not read from proc, and what it must not write.
const PROC_MASKED = [
  'acpi',
  'asound',
  'kcore',
  'keys',
  'latency_stats',
  'timer_list',
  'timer_stats',
  'sched_debug',
  'scsi',
];
const PROC_READ_ONLY = ['bus', 'fs', 'irq', 'sys', 'sysrq-trigger'];

/** An empty read-only tmpfs over a directory: nothing below it can be read. */
const cover = (path: string): string[] => ['-t', 'tmpfs', '-o', 'ro,nosuid,nodev,noexec,size=4k', 'tmpfs', path];

/** Runs independent mounts at once (the kernel serialises the mount table changes); throws the first failure. */
async function mountAll(t: ToolRunner, argvs: readonly string[][]): Promise<void> {
  const settled = await Promise.allSettled(argvs.map((argv) => tool(t, 'mount', argv)));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * Mounts a proc at `target`; masked (the default), like the workspace's own: `hidepid=2` (a workspace user sees only
 * its own processes, not the sandbox init whose command line names host paths), the OCI runtime's masks and
 * read-only entries, and the node-wide files and directories of {@link nodeWideProcFiles}.
 */
export async function mountProc(
  args: OpArgs<'mount-proc'>,
  t: ToolRunner,
): Promise<{ target: string; masked: string[] }> {
  const options = `nosuid,nodev,noexec${args.mask ? ',hidepid=2' : ''}`;
  await mountCreating(t, args.target, ['-t', 'proc', '-o', options, 'proc'], args.createTarget);
  if (!args.mask) return { target: args.target, masked: [] };
  try {
    // The entries depend on the kernel: one stat of the new proc says which exist and what they are.
    const names = [...PROC_MASKED, ...PROC_READ_ONLY, ...nodeWideProcFiles, ...nodeWideProcDirs];
    const present = await probe(
      t,
      names.map((n) => join(args.target, n)),
    );
    const kindOf = (name: string): string | undefined => present.get(join(args.target, name))?.type;
    const masks: Array<{ name: string; argv: string[] }> = [];
    for (const name of [...PROC_MASKED, ...nodeWideProcFiles, ...nodeWideProcDirs]) {
      const kind = kindOf(name);
      if (kind === undefined) continue;
      const p = join(args.target, name);
      masks.push({ name, argv: kind === 'directory' ? cover(p) : ['--bind', '/dev/null', p] });
    }
    // A read-only bind of the entry onto itself (mount does the bind and the read-only remount). First: a bind
    // of `fs` would cover the masks below it (`fs/ext4`) made before it.
    const readOnly = PROC_READ_ONLY.filter((name) => kindOf(name) !== undefined);
    await mountAll(
      t,
      readOnly.map((name) => ['--bind', '-o', 'ro', join(args.target, name), join(args.target, name)]),
    );
    await mountAll(
      t,
      masks.map((m) => m.argv),
    );
    return { target: args.target, masked: [...readOnly, ...masks.map((m) => m.name)] };
  } catch (e) {
    // Never leave a half-masked proc behind.
    await t.run('umount', ['-R', '-l', args.target]).catch(() => undefined);
    throw e;
  }
}

/**
 * Mounts the sysfs of the target's network namespace at `target`, with the node's block devices and their
 * filesystems covered ({@link nodeWideSysDirs}, and the directories holding the devices' own).
 */
export async function mountSysfs(args: OpArgs<'mount-sysfs'>, t: ToolRunner): Promise<{ target: string }> {
  const opts = ['nosuid', 'nodev', 'noexec', ...(args.readOnly ? ['ro'] : [])].join(',');
  await mountCreating(t, args.target, ['-t', 'sysfs', '-o', opts, 'sysfs'], args.createTarget);
  try {
    const block = join(args.target, 'block');
    const listed = await t.run('ls', ['-1', '--', block]);
    const devices = listed.exitCode === 0 ? listed.stdout.split('\n').filter((name) => name !== '') : [];
    const holders = new Set<string>();
    if (devices.length > 0) {
      const resolved = await tool(t, 'readlink', ['-f', '--', ...devices.map((name) => join(block, name))]);
      // Each device's own directory sits in its controller's `block` directory (sysfs names hold no newline).
      for (const path of resolved.stdout.split('\n'))
        if (path !== '') holders.add(path.slice(0, path.lastIndexOf('/')));
    }
    const present = await probe(t, [...nodeWideSysDirs.map((name) => join(args.target, name)), ...holders]);
    await mountAll(
      t,
      [...present.keys()].map((p) => cover(p)),
    );
  } catch (e) {
    // Never leave the node's devices readable behind a failure.
    await t.run('umount', ['-R', '-l', args.target]).catch(() => undefined);
    throw e;
  }
  return { target: args.target };
}

export async function unmount(args: OpArgs<'unmount'>, t: ToolRunner): Promise<{ target: string }> {
  await tool(t, 'umount', [...(args.recursive ? ['-R'] : []), ...(args.lazy ? ['-l'] : []), args.target]);
  return { target: args.target };
}

export async function makeShared(args: OpArgs<'make-shared'>, t: ToolRunner): Promise<{ target: string }> {
  await tool(t, 'mount', ['--make-shared', args.target]);
  return { target: args.target };
}

/** `chown` argument with numeric ids (a leading '+' keeps GNU chown from reading them as user names). */
function owner(uid: number | undefined, gid: number | undefined): string {
  return `${uid === undefined ? '' : `+${uid}`}${gid === undefined ? '' : `:+${gid}`}`;
}

export async function mknod(args: OpArgs<'mknod'>, t: ToolRunner): Promise<DeviceNodeResult> {
  const mode = args.mode.toString(8).padStart(4, '0');
  await tool(t, 'mknod', [
    '-m',
    mode,
    args.path,
    args.type === 'char' ? 'c' : 'b',
    String(args.major),
    String(args.minor),
  ]);
  if (args.uid !== undefined || args.gid !== undefined) {
    // -h: never through a link someone put at the path since mknod made it.
    await tool(t, 'chown', ['-h', owner(args.uid, args.gid), '--', args.path]);
  }
  return { path: args.path, created: true };
}

export async function prepareDev(args: OpArgs<'prepare-dev'>, t: ToolRunner): Promise<PrepareDevResult> {
  const nodes = [
    { path: join(args.devDir, 'net', 'tun'), major: 10, minor: 200 },
    { path: join(args.devDir, 'fuse'), major: 10, minor: 229 },
  ];
  const kmsg = join(args.devDir, 'kmsg');
  await tool(t, 'mkdir', ['-p', '--', join(args.devDir, 'net')]);
  const present = await probe(t, [...nodes.map((n) => n.path), kmsg]);
  const created: string[] = [];
  const existing: string[] = [];
  for (const n of nodes) {
    const st = present.get(n.path);
    if (!st) continue;
    if (st.type !== 'character special file' || st.rdev !== `${n.major.toString(16)}:${n.minor.toString(16)}`) {
      throw new OpFailure('EEXIST', `${n.path} exists but is not the character device ${n.major}:${n.minor}`);
    }
    // An existing node belongs to whoever made it (possibly the host): leave it alone.
    existing.push(n.path);
  }
  const missing = nodes.filter((n) => !present.has(n.path));
  for (const n of missing) {
    await tool(t, 'mknod', ['-m', '0666', n.path, 'c', String(n.major), String(n.minor)]);
    created.push(n.path);
  }
  if (missing.length > 0) {
    await tool(t, 'chown', ['-h', owner(args.uid, args.gid), '--', ...missing.map((n) => n.path)]);
  }
  // Some tools refuse to start without /dev/kmsg; an empty file satisfies them. install unlinks and creates
  // (O_EXCL), so a link planted there is replaced, not followed.
  if (!present.has(kmsg)) {
    await tool(t, 'install', ['-m', '0644', '/dev/null', kmsg]);
    created.push(kmsg);
  }
  return { created, existing };
}
