import { cliInvoker } from './cli-ops.js';
import type { OpInput, OpName } from './contract.js';
import { assertPid, parseOpArgs } from './contract.js';
import { isNsinsiderError, isNsinsiderValidationError, NsinsiderError, OpFailure } from './errors.js';
import type { CommandResult } from './exec.js';
import { runCommand } from './exec.js';
import { systemToolPath } from './host-tool.js';
import type { ToolRunner } from './inside-tools.js';
import { insideHandlers } from './inside.js';
import { namespaceId, processAlive, resolveHostPid, writeIdMapping, nsenterFlags } from './proc.js';
import type {
  ConnectionLimitStats,
  NamespaceKind,
  NamespaceOps,
  NetworkInfo,
  PrepareDevResult,
  VethPairResult,
} from './types.js';

export interface NsinsiderOpsOptions {
  /**
   * Runs every operation through the nsinsider CLI at this path instead (`nsenter … -- node <cliPath> <op>`: one
   * Node start-up, about 100 ms, per operation). Only for callers that must run their own build of the CLI; by
   * default (neither this nor `nodePath` set) the operations run the system's tools directly under nsenter.
   */
  cliPath?: string;
  /** Node binary for the CLI mode (see `cliPath`; default the current one). Setting it selects the CLI mode. */
  nodePath?: string;
  /** util-linux nsenter (default: `nsenter` from the search path). */
  nsenterPath?: string;
  /**
   * The search path (PATH) for nsenter and the tools (mount, umount, mkdir, mknod, chown, stat, install, tee, ip,
   * nft); default the system's directories ({@link systemToolPath}), never the process's own. Tools run inside a
   * target's mount namespace are looked up there.
   */
  toolSearchPath?: string;
  /** Per-operation limit; whatever runs for it then is killed (default 30 s). */
  timeoutMs?: number;
  /** /proc of the caller, for pid translation and id maps (default `/proc`). */
  procRoot?: string;
  /** Called once per spawned process (each tool run, or the CLI in the CLI mode), for logging. */
  onSpawn?: (event: {
    op: string;
    pid?: number;
    namespaces: readonly NamespaceKind[];
    args: readonly string[];
  }) => void;
}

interface Target {
  pid: number;
  namespaces: readonly NamespaceKind[];
}

/** An operation's failure as the library reports it. */
function asNsinsiderError(op: string, e: unknown): Error {
  if (isNsinsiderError(e) || isNsinsiderValidationError(e)) return e;
  if (e instanceof OpFailure) {
    return new NsinsiderError(`${op}: ${e.message}`, {
      op,
      kind: e.kind,
      code: e.code,
      exitCode: e.exitCode,
      stderr: e.stderr,
    });
  }
  // A tool's output we could not read (ip's JSON, …).
  return new NsinsiderError(`${op}: ${e instanceof Error ? e.message : String(e)}`, {
    op,
    kind: 'failed',
    code: 'EFAILED',
    cause: e,
  });
}

/**
 * The real {@link NamespaceOps}: each operation runs the system's tools (mount, ip, nft, …) inside the target
 * process's namespaces, each as `nsenter --target <pid> --mount|--net|--pid -- <tool> <args>`, entering only the
 * namespaces the operation needs; no Node process starts for an operation. With `cliPath` or `nodePath` set,
 * operations run through the nsinsider CLI instead (see {@link NsinsiderOpsOptions.cliPath}).
 *
 * Tools run in a mount namespace are looked up in it: the local runtime's namespaces share the host's root
 * file system, so they are the host's.
 */
export function createNsinsiderOps(options: NsinsiderOpsOptions = {}): NamespaceOps {
  const nsenterPath = options.nsenterPath ?? 'nsenter';
  const timeoutMs = options.timeoutMs ?? 30_000;
  const procRoot = options.procRoot ?? '/proc';
  // Messages in English: failures are classified by what nsenter and the tools print.
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    LC_ALL: 'C',
    PATH: options.toolSearchPath ?? systemToolPath,
  };
  const cliMode = options.cliPath !== undefined || options.nodePath !== undefined;

  /** Runs the tools of one operation in `target`'s namespaces (the caller's own without a target). */
  function runner(op: string, target: Target | undefined, deadline: number): ToolRunner {
    return {
      async run(file, args, input) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          throw new OpFailure('ETIMEDOUT', `no result within ${timeoutMs} ms`, 'timeout');
        }
        const command = target ? nsenterPath : file;
        const argv = target
          ? ['--target', String(target.pid), ...target.namespaces.map((n) => nsenterFlags[n]), '--', file, ...args]
          : [...args];
        options.onSpawn?.({ op, pid: target?.pid, namespaces: target?.namespaces ?? [], args: argv });
        const r = await runCommand(command, argv, { timeoutMs: remaining, killGroup: true, input, env });
        if (r.spawnError) {
          const missingTool = !target && r.spawnError.code === 'ENOENT';
          throw new OpFailure(
            r.spawnError.code ?? 'ESPAWN',
            `cannot start ${command}: ${r.spawnError.message}${missingTool ? ` (is ${command} installed?)` : ''}`,
            missingTool ? 'unsupported' : 'spawn',
          );
        }
        if (r.timedOut) {
          throw new OpFailure('ETIMEDOUT', `no result within ${timeoutMs} ms; ${file} was killed`, 'timeout', {
            exitCode: r.exitCode,
            stderr: r.stderr.trim(),
          });
        }
        // nsenter's own failures (it never ran the tool) say so first; a tool's messages start with its name.
        if (target && r.exitCode !== 0 && r.stderr.startsWith('nsenter: ')) {
          throw await nsenterFailure(target, file, r);
        }
        return r;
      },
    };
  }

  async function nsenterFailure(target: Target, file: string, r: CommandResult): Promise<OpFailure> {
    const stderr = r.stderr.trim();
    const tool = { exitCode: r.exitCode, stderr };
    if (/^nsenter: failed to execute /.test(stderr)) {
      // Missing from the target's file system: the workspace's own doing when its mount namespace was entered.
      const inWorkspaceFs = target.namespaces.includes('mount');
      return new OpFailure(
        /no such file/i.test(stderr) ? 'ENOENT' : 'EACCES',
        `cannot run ${file} in the namespaces of process ${target.pid}: ${stderr.slice(0, 200)}`,
        inWorkspaceFs ? 'protocol' : 'unsupported',
        tool,
      );
    }
    const gone =
      /\/proc\/\d+\/ns\/\w+.*No such (file|process)/i.test(stderr) || !(await processAlive(procRoot, target.pid));
    return gone
      ? new OpFailure(
          'ESRCH',
          `process ${target.pid} does not exist (its namespaces cannot be entered)`,
          'not-found',
          tool,
        )
      : new OpFailure(
          'EPROTO',
          `cannot enter the namespaces of process ${target.pid}: ${stderr.slice(0, 200)}`,
          'protocol',
          tool,
        );
  }

  const viaCli = cliMode ? cliInvoker(options, { nsenterPath, timeoutMs, procRoot, env }) : undefined;

  async function run<O extends OpName>(op: O, input: OpInput<O>, target: Target | undefined): Promise<unknown> {
    // Validated before anything runs: bad input never costs a spawn, and the error names the field.
    const args = parseOpArgs(op, input);
    if (target) assertPid(op, 'pid', target.pid);
    if (viaCli) return viaCli(op, args, target);
    const handler = insideHandlers[op] as (a: typeof args, tools: ToolRunner) => Promise<unknown>;
    try {
      return await handler(args, runner(op, target, Date.now() + timeoutMs));
    } catch (e) {
      throw asNsinsiderError(op, e);
    }
  }

  const at = (pid: number, ...namespaces: NamespaceKind[]): Target => ({ pid, namespaces });
  // Mount work also enters the pid namespace: once the target has its own proc mounted, tools that read
  // /proc/self (umount, mknod -m) only work from inside that pid namespace.
  const inMountNs = (pid: number, ...extra: NamespaceKind[]): Target => at(pid, 'mount', 'pid', ...extra);

  return {
    async mountProc(req) {
      await run(
        'mount-proc',
        { target: req.target, mask: req.mask, createTarget: req.createTarget },
        inMountNs(req.pid),
      );
    },
    async mountSysfs(req) {
      await run(
        'mount-sysfs',
        { target: req.target, readOnly: req.readOnly, createTarget: req.createTarget },
        inMountNs(req.pid, 'net'),
      );
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
