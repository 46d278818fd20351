import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { parseWithSchema } from '@workbay/api';
import { syscallFilterSupported } from '@workbay/nsinsider';
import { cidrProblem } from '../cidr.js';

/** A network as CIDR, or a single address (a /32 or /128). */
const networkSchema = z.string().superRefine((value, ctx) => {
  const problem = isIP(value) ? undefined : cidrProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: `${problem}, or a single address` });
});

const readinessFields = {
  /** `tcp`: a TCP connect to the IDE port succeeds; `http`: a GET answers below 500; `none`: ready once launched. */
  kind: z.enum(['tcp', 'http', 'none']),
  /** Path for the `http` probe. */
  path: z.string().startsWith('/'),
  /** The longest pause between probes; the first ones are shorter (5 ms, doubling up to this). */
  intervalMs: z.number().int().positive(),
  /** Limit for one probe. */
  probeTimeoutMs: z.number().int().positive(),
};

const readinessSchema = z.strictObject({
  kind: readinessFields.kind.default('tcp'),
  path: readinessFields.path.default('/'),
  intervalMs: readinessFields.intervalMs.default(100),
  probeTimeoutMs: readinessFields.probeTimeoutMs.default(1000),
});

const imageSchema = z.strictObject({
  /** argv of the workspace process; `${NAME}` in an argument is replaced by that variable of the workspace env. */
  command: z.array(z.string().min(1)).min(1),
  /** Extra environment for this image (the spec's env wins on conflicts). */
  env: z.record(z.string(), z.string()).optional(),
  /** Overrides parts of the runtime-wide readiness check. */
  readiness: z.strictObject(readinessFields).partial().optional(),
});

export const localRuntimeConfigSchema = z.strictObject({
  /** Where per-instance records, exit codes and logs live; must survive a manager restart. */
  stateDir: z
    .string()
    .min(1)
    .default(path.join(os.homedir(), '.workbay', 'runtime-local')),
  /** Address the workspaces' ports are reachable on; also where readiness is probed. */
  host: z.string().min(1).default('127.0.0.1'),
  nodeName: z.string().min(1).default(os.hostname()),
  /**
   * `auto`: isolated when running as root (own user, network, pid, mount and uts namespaces, an unprivileged uid);
   * `namespaces`: isolation required (start-up fails without it); `none`: trusted processes of the manager's user.
   */
  isolation: z.enum(['auto', 'namespaces', 'none']).default('auto'),
  /** Networking of isolated workspaces: one /30 per workspace (a veth pair) out of `pool`. */
  network: z
    .strictObject({
      /** IPv4 range the per-workspace /30s are taken from; at most a /30 itself, network-aligned. */
      pool: z
        .string()
        .regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'must be an IPv4 CIDR like 10.88.0.0/16')
        .refine(isUsablePool, 'must be a network-aligned IPv4 CIDR with a prefix between /8 and /30')
        .default('10.88.0.0/16'),
      /**
       * How often the host firewall is installed again (one atomic nft transaction; 0: only before each workspace
       * network is made). A ruleset flushed by a firewall reload or an operator would otherwise leave every running
       * workspace unfiltered until the next one starts.
       */
      firewallCheckIntervalMs: z.number().int().min(0).default(10_000),
      /**
       * Tracked flows (conntrack entries of connections not yet closed) one workspace may hold; new ones beyond are
       * dropped, so that a workspace cannot fill the node's conntrack table (new connections fail node-wide then).
       * The table is shared by every runtime on the machine: the last one to install it sets the value.
       */
      maxFlowsPerWorkspace: z.number().int().min(64).max(1_000_000).default(4096),
      /**
       * Workspaces with a network on this node at once, counting every runtime's; a start past it fails
       * (RESOURCE_EXHAUSTED). Three quarters of the node's conntrack table are divided among this many, so each
       * workspace's flows are `maxFlowsPerWorkspace` or that share, whichever is less, whenever it came.
       */
      maxWorkspaces: z.number().int().min(1).max(16_384).default(64),
      /**
       * TCP connections a workspace's processes may have open at once, loopback ones included (a table in its own
       * network namespace, which it cannot change): cgroup v1 lets every socket hold buffers past the workspace's TCP
       * memory cap, so the number of sockets is what bounds them. Each open connection can also become an orphan (closed
       * with bytes still to send), which counts against the node's `net.ipv4.tcp_max_orphans`: a workspace gets at most
       * three quarters of that divided by `maxWorkspaces` (1,536 with the usual 131,072 and 64).
       */
      maxConnectionsPerWorkspace: z.number().int().min(64).max(1_000_000).default(4096),
      /**
       * Where workspaces may connect beyond the node. Everything is reachable except private, shared (CGNAT),
       * link-local (the cloud metadata service), loopback, unique-local, multicast and reserved space: behind a node
       * those are its neighbours (other nodes' daemons and managers, databases, the cloud's internal services). The
       * host and other workspaces are never reachable. Like the Kubernetes runtime's egress NetworkPolicy.
       */
      egress: z
        .strictObject({
          /** Reachable on every port although the defaults keep them out (an internal registry or package mirror). */
          allowedNetworks: z.array(networkSchema).default([]),
          /** More networks kept out: the node's own public ranges, anything internal outside private space. */
          blockedNetworks: z
            .array(networkSchema.refine((c) => !c.endsWith('/0'), 'must be narrower than /0'))
            .default([]),
          /**
           * Resolvers workspaces may reach on port 53 (UDP, TCP) although the defaults keep them out. Default: the
           * nameservers of the host's `/etc/resolv.conf`, read at every install of the host firewall.
           */
          dnsServers: z.array(z.string().refine((a) => isIP(a) !== 0, 'must be an IP address')).optional(),
        })
        .prefault({}),
    })
    .prefault({}),
  /**
   * The workspace's output (`<stateDir>/logs/<id>.log`) is on the host's disk, outside the workspace's own limits:
   * it is capped while the workspace runs (see `log-writer.ts` for isolated workspaces, `log-cap.ts` for the others).
   */
  logs: z
    .strictObject({
      /** What the log and its previous part (`.1`) may take together; the log is rotated past half of it. */
      maxBytes: z
        .number()
        .int()
        .min(64 * 1024)
        .default(16 * 1024 * 1024),
      /** Fallback check of every log, for writes the file watch did not report; also bounds the overshoot then. */
      checkIntervalMs: z.number().int().positive().default(250),
    })
    .prefault({}),
  /**
   * Whether isolated workspaces may create namespaces inside their own: `off`, or `limited` for rootless containers
   * and browser sandboxes, at the price of node-wide kernel tables they can then fill (see `NestedNamespaces` in
   * sandbox-init.ts, and docs/security.md).
   */
  nestedNamespaces: z.enum(['off', 'limited']).default('off'),
  /**
   * Isolated: the seccomp filter of every workspace (`default`: no vsock, no io_uring, for 32-bit calls too; see
   * syscall-filter.ts), or `off`. x86_64 and arm64 nodes have one.
   */
  syscallFilter: z
    .enum(['default', 'off'])
    .default('default')
    .refine(
      (filter) => filter === 'off' || syscallFilterSupported(),
      `no syscall filter for this node's architecture (${process.arch}): set it to off`,
    ),
  /**
   * Isolated: raise the node-wide counts of open files, AIO events and terminals to where each workspace's memory
   * limit is the bound, not a count one workspace can fill for all (see `node-tunables.ts`). Only ever raised.
   */
  nodeTunables: z.boolean().default(true),
  /** `auto`: a cgroup per workspace when running as root and cgroups are available (v1 or v2, detected). */
  cgroups: z.enum(['auto', 'v1', 'v2', 'off']).default('auto'),
  /**
   * Parent of the workspace cgroups: relative to the manager's own cgroup, or from the hierarchy root when it
   * starts with '/'. Default: `workbay` below the manager's own cgroup on v1, `/workbay` on v2.
   */
  cgroupParent: z
    .string()
    .min(1)
    .regex(/^\/?[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/, 'must be a cgroup path without ".." segments')
    .refine((p) => !p.split('/').includes('..'), 'must not contain ".."')
    .optional(),
  /** Limits beyond a class's CPU, memory and pids, which protect the node from its workspaces (with cgroups). */
  cgroupLimits: z
    .strictObject({
      /**
       * cgroup v1: a workspace's TCP socket buffers are capped at this share of its memory limit (v1 does not count
       * them in the memory limit; v2 does, and ignores the three tcp keys)...
       */
      tcpMemoryShare: z.number().positive().max(1).default(0.25),
      /** ...and at most this many bytes (also the cap of a workspace without a memory limit). */
      tcpMemoryMaxBytes: z
        .number()
        .int()
        .min(4 * 1024 * 1024)
        .default(256 * 1024 * 1024),
      /**
       * cgroup v1: the TCP socket buffers of all workspaces together (on the parent cgroup). Default: the node's
       * `net.ipv4.tcp_mem[0]`, below which the kernel sees no TCP memory pressure.
       */
      tcpMemoryTotalBytes: z
        .number()
        .int()
        .min(16 * 1024 * 1024)
        .optional(),
      /**
       * cgroup v1, `workbay up`: the TCP socket buffers of the manager itself (the port proxy's connections), in a
       * cgroup of its own. Default: half of what lies between `tcp_mem[0]` (the workspaces' total) and `tcp_mem[1]`
       * (the node's pressure mark), at least 16 MiB; 0: not capped. See manager-tcp.ts.
       */
      managerTcpMemoryBytes: z.number().int().min(0).optional(),
      /**
       * Process ids left to the node: the parent cgroup's `pids.max` is the kernel's pid_max (or threads-max, if
       * lower) minus this. Default: a quarter of it.
       */
      pidsReserve: z.number().int().min(0).optional(),
      /**
       * Cores left to the node (the manager, the daemon, starting workspaces): the parent cgroup's CPU quota is the
       * cores this process may use minus this. Default: no quota (a quota throttles busy workspaces in bursts).
       */
      cpuReserveCores: z.number().min(0).optional(),
      /**
       * cgroup v1: the disk IO each workspace may submit to each of the node's disks (bytes and operations a second;
       * 0: no limit of that kind). It reads the host's files through its read-only root: red team round 9 read them
       * with O_DIRECT at 515 MB/s and 52k IOPS from one workspace. Its own content (a loop image) is limited by the
       * daemon's `quota.io`; buffered writes are not the task's own IO on v1 and escape this.
       */
      io: z
        .strictObject({
          readBytesPerSecond: z
            .number()
            .int()
            .min(0)
            .default(256 * 1024 * 1024),
          writeBytesPerSecond: z
            .number()
            .int()
            .min(0)
            .default(128 * 1024 * 1024),
          readIops: z.number().int().min(0).default(4000),
          writeIops: z.number().int().min(0).default(2000),
        })
        .prefault({}),
    })
    .prefault({}),
  readiness: readinessSchema.prefault({}),
  /** Image reference (exact, or a glob with `*` and `?`) → how to run it. Exact matches win, then globs in order. */
  images: z.record(z.string().min(1), imageSchema).default({}),
  /** How often processes adopted after a restart (no longer our children) are checked for exit. */
  exitPollIntervalMs: z.number().int().positive().default(500),
  /** How long to wait for processes to vanish after SIGKILL before giving up. */
  killTimeoutMs: z.number().int().positive().default(10_000),
  /** Records of instances that exited are dropped after this long even if nobody called stop(). */
  exitedRetentionMs: z
    .number()
    .int()
    .positive()
    .default(24 * 3600_000),
});

export type LocalRuntimeConfig = z.output<typeof localRuntimeConfigSchema>;
export type LocalRuntimeConfigInput = z.input<typeof localRuntimeConfigSchema>;
export type ReadinessConfig = LocalRuntimeConfig['readiness'];
export type ImageConfig = LocalRuntimeConfig['images'][string];

function isUsablePool(cidr: string): boolean {
  const [address = '', prefixText = ''] = cidr.split('/');
  const octets = address.split('.').map(Number);
  const prefix = Number(prefixText);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o > 255)) return false;
  if (!Number.isInteger(prefix) || prefix < 8 || prefix > 30) return false;
  const value = octets.reduce((acc, o) => acc * 256 + o, 0);
  return value % 2 ** (32 - prefix) === 0;
}

/** Validates the `local` runtime section; the error names the bad key, e.g. `runtime.local.readiness.kind`. */
export function parseLocalRuntimeConfig(raw: unknown, prefix = 'runtime.local'): LocalRuntimeConfig {
  return parseWithSchema(localRuntimeConfigSchema, raw ?? {}, prefix);
}
