import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { CliResult, OpInput, OpName } from './contract.js';
import { assertPid, parseOpArgs } from './contract.js';
import type { NsinsiderFailureKind } from './errors.js';
import { NsinsiderError, NsinsiderValidationError } from './errors.js';
import { runCommand } from './exec.js';
import { namespaceId, resolveHostPid, writeIdMapping } from './proc.js';
import type {
  ConnectionLimitStats,
  NamespaceKind,
  NamespaceOps,
  NetworkInfo,
  PrepareDevResult,
  VethPairResult,
} from './types.js';

async function processAlive(procRoot: string, pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`${procRoot}/${pid}/stat`, 'utf8');
    // The state follows the parenthesised command name; zombies have no namespaces left to enter.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    // ENOENT/ESRCH: the process is gone.
    return false;
  }
}

export interface NsinsiderOpsOptions {
  /** The nsinsider CLI script (default: the `bin.js` shipped beside this module). */
  cliPath?: string;
  /** Node binary that runs the CLI (default: the current one). */
  nodePath?: string;
  /** util-linux nsenter (default: `nsenter` from PATH). */
  nsenterPath?: string;
  /** Per-operation limit; the helper is killed after it (default 30 s). */
  timeoutMs?: number;
  /** /proc of the caller, for pid translation and id maps (default `/proc`). */
  procRoot?: string;
  /** Called once per spawned helper, for logging. */
  onSpawn?: (event: {
    op: string;
    pid?: number;
    namespaces: readonly NamespaceKind[];
    args: readonly string[];
  }) => void;
}

const nsFlags: Record<NamespaceKind, string> = {
  mount: '--mount',
  net: '--net',
  pid: '--pid',
  uts: '--uts',
  ipc: '--ipc',
};

interface Target {
  pid: number;
  namespaces: readonly NamespaceKind[];
}

/**
 * The real {@link NamespaceOps}: each operation runs the nsinsider CLI inside the target process's
 * namespaces, `nsenter --target <pid> --mount|--net|--pid -- node <cli> <op> --json-args <json>`, and
 * reads the JSON result line the CLI prints last. Only the namespaces an operation needs are entered.
 *
 * Entering a mount namespace means `node` and the CLI must be reachable at the same paths inside it
 * (true for namespaces that share the host's root filesystem, as the local runtime's do).
 */
export function createNsinsiderOps(options: NsinsiderOpsOptions = {}): NamespaceOps {
  const cliPath = options.cliPath ?? fileURLToPath(new URL('./bin.js', import.meta.url));
  const nodePath = options.nodePath ?? process.execPath;
  const nsenterPath = options.nsenterPath ?? 'nsenter';
  const timeoutMs = options.timeoutMs ?? 30_000;
  const procRoot = options.procRoot ?? '/proc';

  async function run<O extends OpName>(op: O, input: OpInput<O>, target: Target | undefined): Promise<unknown> {
    // Validate here as well as in the CLI: bad input must never cost a spawn, and the error names the field.
    const args = parseOpArgs(op, input);
    const cliArgs = [cliPath, op, '--json-args', JSON.stringify(args)];
    let file: string;
    let argv: string[];
    if (target) {
      assertPid(op, 'pid', target.pid);
      file = nsenterPath;
      argv = ['--target', String(target.pid), ...target.namespaces.map((n) => nsFlags[n]), '--', nodePath, ...cliArgs];
    } else {
      file = nodePath;
      argv = cliArgs;
    }
    options.onSpawn?.({ op, pid: target?.pid, namespaces: target?.namespaces ?? [], args: argv });
    const r = await runCommand(file, argv, { timeoutMs, killGroup: true });
    const stderr = r.stderr.trim();
    if (r.spawnError) {
      throw new NsinsiderError(`${op}: cannot start ${file}: ${r.spawnError.message}`, {
        op,
        kind: 'spawn',
        code: r.spawnError.code,
        stderr,
        cause: r.spawnError,
      });
    }
    if (r.timedOut) {
      throw new NsinsiderError(`${op}: no result within ${timeoutMs} ms; the helper was killed`, {
        op,
        kind: 'timeout',
        code: 'ETIMEDOUT',
        exitCode: r.exitCode,
        stderr,
      });
    }
    const line = r.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .pop();
    let parsed: CliResult | undefined;
    try {
      parsed = line ? (JSON.parse(line) as CliResult) : undefined;
    } catch {
      // Deliberate: no result line is a failure, reported just below.
      parsed = undefined;
    }
    if (!parsed || typeof parsed !== 'object' || typeof parsed.ok !== 'boolean') {
      // nsenter itself failed (no result line): most often the target process is gone.
      const gone =
        target !== undefined &&
        (/\/proc\/\d+\/ns\/\w+.*No such (file|process)/i.test(stderr) || !(await processAlive(procRoot, target.pid)));
      throw new NsinsiderError(
        gone
          ? `${op}: process ${target.pid} does not exist (its namespaces cannot be entered)`
          : `${op}: helper exited ${r.exitCode ?? r.signal} without a result: ${stderr || '(no stderr)'}`,
        { op, kind: gone ? 'not-found' : 'protocol', code: gone ? 'ESRCH' : undefined, exitCode: r.exitCode, stderr },
      );
    }
    if (parsed.ok) {
      return parsed.result;
    }
    const err = parsed.error;
    if (err.kind === 'invalid') {
      throw new NsinsiderValidationError(op, err.field ?? 'args', err.message);
    }
    throw new NsinsiderError(`${op}: ${err.message}`, {
      op,
      kind: err.kind as NsinsiderFailureKind,
      code: err.code,
      exitCode: r.exitCode,
      stderr,
    });
  }

  const at = (pid: number, ...namespaces: NamespaceKind[]): Target => ({ pid, namespaces });
  // Mount work also enters the pid namespace: once the target has its own proc mounted, tools that read
  // /proc/self (umount, mknod -m) only work from inside that pid namespace.
  const inMountNs = (pid: number, ...extra: NamespaceKind[]): Target => at(pid, 'mount', 'pid', ...extra);

  return {
    async mountProc(req) {
      await run('mount-proc', { target: req.target, mask: req.mask }, inMountNs(req.pid));
    },
    async mountSysfs(req) {
      await run('mount-sysfs', { target: req.target, readOnly: req.readOnly }, inMountNs(req.pid, 'net'));
    },
    async unmount(req) {
      await run('unmount', { target: req.target, lazy: req.lazy, recursive: req.recursive }, inMountNs(req.pid));
    },
    async makeShared(req) {
      await run('make-shared', { target: req.target }, inMountNs(req.pid));
    },
    async makeDeviceNode(req) {
      const { pid, ...args } = req;
      return (await run('mknod', args, inMountNs(pid))) as { path: string; created: boolean };
    },
    async prepareDev(req) {
      const { pid, ...args } = req;
      return (await run('prepare-dev', args, inMountNs(pid))) as PrepareDevResult;
    },
    async setupPairVeths(req) {
      const { outerPid, ...rest } = req;
      if (outerPid !== undefined) {
        assertPid('setup-pair-veths', 'outerPid', outerPid);
      }
      assertPid('setup-pair-veths', 'targetPid', rest.targetPid);
      // The outer side stays in the caller's mount and pid namespaces, so `netns <targetPid>` names a host pid.
      const pair = (await run(
        'setup-pair-veths',
        rest,
        outerPid === undefined ? undefined : at(outerPid, 'net'),
      )) as VethPairResult;
      await run('setup-peer-veth', { cidr: rest.cidr, ifName: pair.peerIfName }, at(rest.targetPid, 'net'));
      return pair;
    },
    async setIpForwarding(req) {
      await run('enable-ip-forward', { enabled: req.enabled }, at(req.pid, 'net'));
    },
    async disableIpv6(req) {
      await run('disable-ipv6', {}, at(req.pid, 'net'));
    },
    async setupConnectionLimit(req) {
      const { pid, ...args } = req;
      await run('setup-connection-limit', args, at(pid, 'net'));
    },
    async removeConnectionLimit(req) {
      const r = (await run('remove-connection-limit', {}, at(req.pid, 'net'))) as { removed: boolean };
      return r.removed;
    },
    async connectionLimitStats(req) {
      const r = (await run('connection-limit-stats', {}, at(req.pid, 'net'))) as ConnectionLimitStats | null;
      return r ?? undefined;
    },
    async networkInfo(req) {
      return (await run('dump-network-info', {}, at(req.pid, 'net'))) as NetworkInfo;
    },
    resolveHostPid(req) {
      return resolveHostPid(req.nsPid, req.anchorPid, procRoot);
    },
    namespaceId(req) {
      return namespaceId(req.pid, req.kind, procRoot);
    },
    writeIdMapping(req) {
      return writeIdMapping(req.pid, req.kind, req.mappings, procRoot);
    },
  };
}
