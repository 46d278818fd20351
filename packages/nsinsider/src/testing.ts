import { spawn } from 'node:child_process';
import { readFile, readlink } from 'node:fs/promises';
import type { CommandResult } from './exec.js';
import { runCommand } from './exec.js';
import { parseIpv4Cidr } from './contract.js';
import { nsenterFlags } from './proc.js';
import type { NamespaceKind, NamespaceOps } from './types.js';

/**
 * Test kit (`@workbay/nsinsider/testing`): throwaway namespaces held open by a sleeping process, for
 * integration tests of namespace operations. Requires root and util-linux unshare/nsenter.
 */

export interface NamespaceSandbox {
  /** Host pid of the sandbox's init (pid 1 inside its pid namespace). */
  readonly pid: number;
  /** Runs a command inside the sandbox's namespaces (default: mount, net and pid). */
  run(
    argv: readonly string[],
    namespaces?: readonly NamespaceKind[],
    options?: { timeoutMs?: number; input?: string },
  ): Promise<CommandResult>;
  /** Like {@link run}, but rejects unless the command exits 0; resolves to its stdout. */
  check(argv: readonly string[], namespaces?: readonly NamespaceKind[]): Promise<string>;
  /** Kills the sandbox; its namespaces (mounts, links, nftables) go with it. Idempotent. */
  stop(): Promise<void>;
}

export interface NamespaceSandboxOptions {
  /** Namespaces to create (default: pid, mount, net, uts). */
  namespaces?: ReadonlyArray<'pid' | 'mount' | 'net' | 'uts' | 'ipc' | 'user'>;
  /** How long to wait for the sandbox to come up (default 10 s). */
  startTimeoutMs?: number;
}

const unshareFlags = {
  pid: '--pid',
  mount: '--mount',
  net: '--net',
  uts: '--uts',
  ipc: '--ipc',
  user: '--user',
} as const;

export async function startNamespaceSandbox(options: NamespaceSandboxOptions = {}): Promise<NamespaceSandbox> {
  const namespaces = options.namespaces ?? ['pid', 'mount', 'net', 'uts'];
  const withPid = namespaces.includes('pid');
  const args = [
    ...namespaces.map((n) => unshareFlags[n]),
    // With a pid namespace unshare must fork; --kill-child takes the sandbox down with unshare.
    ...(withPid ? ['--fork', '--kill-child'] : []),
    '--',
    'sleep',
    'infinity',
  ];
  const child = spawn('unshare', args, { stdio: 'ignore', detached: false });
  const unsharePid = child.pid;
  if (unsharePid === undefined) {
    throw new Error('cannot start unshare');
  }
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });
  child.on('error', () => {
    exited = true;
  });

  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
  const ownNet = await readlink('/proc/self/ns/net');
  const ownMnt = await readlink('/proc/self/ns/mnt');
  let pid: number | undefined;
  while (pid === undefined) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`namespace sandbox did not start (unshare ${args.join(' ')})`);
    }
    let candidate: number | undefined = unsharePid;
    if (withPid) {
      // Probes while polling for readiness: a process not there yet reads as not ready.
      const children = await readFile(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').catch(() => '');
      candidate = children.trim() ? Number(children.trim().split(/\s+/)[0]) : undefined;
    }
    if (candidate !== undefined) {
      // Ready once the process has left our namespaces and exec'd sleep.
      const [net, mnt, comm] = await Promise.all([
        readlink(`/proc/${candidate}/ns/net`).catch(() => ownNet),
        readlink(`/proc/${candidate}/ns/mnt`).catch(() => ownMnt),
        readFile(`/proc/${candidate}/comm`, 'utf8').catch(() => ''),
      ]);
      const left = (!namespaces.includes('net') || net !== ownNet) && (!namespaces.includes('mount') || mnt !== ownMnt);
      if (left && comm.trim() === 'sleep') {
        pid = candidate;
        break;
      }
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  const sandboxPid = pid;

  const run: NamespaceSandbox['run'] = (argv, ns = ['mount', 'net', 'pid'], opts = {}) =>
    runCommand('nsenter', ['--target', String(sandboxPid), ...ns.map((n) => nsenterFlags[n]), '--', ...argv], {
      timeoutMs: opts.timeoutMs ?? 20_000,
      input: opts.input,
    });

  return {
    pid: sandboxPid,
    run,
    async check(argv, ns) {
      const r = await run(argv, ns);
      if (r.exitCode !== 0) {
        throw new Error(`${argv.join(' ')} in sandbox ${sandboxPid} exited ${r.exitCode}: ${r.stderr.trim()}`);
      }
      return r.stdout;
    },
    async stop() {
      for (const p of [sandboxPid, unsharePid]) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      if (!exited) {
        await new Promise<void>((resolve) => {
          child.once('exit', () => resolve());
          setTimeout(resolve, 10_000);
        });
      }
      // SIGKILL is delivered asynchronously: on a loaded machine the sandbox process can still be alive, with its
      // namespaces, after unshare exited. Stopped means it is gone or a zombie (which has left its namespaces).
      const stopDeadline = Date.now() + 10_000;
      while (Date.now() < stopDeadline) {
        const stat = await readFile(`/proc/${sandboxPid}/stat`, 'utf8').catch(() => '');
        // The state follows the parenthesized command name, which may itself contain ') '.
        const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
        if (stat === '' || state === 'Z' || state === 'X') return;
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}

/** One call recorded by {@link createRecordingNamespaceOps}. */
export interface RecordedNamespaceCall {
  readonly method: keyof NamespaceOps;
  readonly request: unknown;
}

/**
 * A fake {@link NamespaceOps} for unit tests of code that consumes the interface: every call is recorded
 * and resolves with a neutral result (pids translate to themselves, every process shares one set of
 * namespaces) unless `overrides` says otherwise. It does no validation: use the real implementation in
 * integration tests.
 */
export function createRecordingNamespaceOps(overrides: Partial<NamespaceOps> = {}): {
  ops: NamespaceOps;
  calls: RecordedNamespaceCall[];
} {
  const calls: RecordedNamespaceCall[] = [];
  const defaults: NamespaceOps = {
    mountProc: async () => undefined,
    mountSysfs: async () => undefined,
    unmount: async () => undefined,
    makeShared: async () => undefined,
    makeDeviceNode: async (req) => ({ path: req.path, created: true }),
    prepareDev: async () => ({ created: [], existing: [] }),
    setupPairVeths: async (req) => {
      const cidr = parseIpv4Cidr(req.cidr);
      return {
        hostIfName: req.hostIfName ?? 'veth0',
        peerIfName: req.peerIfName ?? 'eth0',
        hostAddress: cidr.first,
        peerAddress: cidr.second,
        prefixLength: cidr.prefixLength,
      };
    },
    setIpForwarding: async () => undefined,
    disableIpv6: async () => undefined,
    setupConnectionLimit: async () => undefined,
    removeConnectionLimit: async () => true,
    connectionLimitStats: async () => undefined,
    networkInfo: async () => ({ links: [], addresses: [], routes: [] }),
    resolveHostPid: async (req) => req.nsPid,
    namespaceId: async (req) => `${req.kind}:[1]`,
    writeIdMapping: async () => undefined,
  };
  const ops = {} as Record<keyof NamespaceOps, (req: never) => Promise<unknown>>;
  for (const method of Object.keys(defaults) as Array<keyof NamespaceOps>) {
    const impl = (overrides[method] ?? defaults[method]) as (req: never) => Promise<unknown>;
    ops[method] = (req: never) => {
      calls.push({ method, request: req });
      return impl(req);
    };
  }
  return { ops: ops as unknown as NamespaceOps, calls };
}
