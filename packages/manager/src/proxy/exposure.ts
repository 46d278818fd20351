/**
 * Which ports a workspace may expose, and where the proxy may send its traffic: only to the workspace's own
 * runtime host, only to its IDE port and the ports it exposes, and never to anything that is not the workspace's
 * own. With its own address (the isolated local runtime, a pod: an IP address that is not one of this host's) every port of that address is the workspace's.
 * On a shared host (no isolation: the workspace listens on the host's loopback like everything else) a port is the
 * workspace's only if it is none of these: the manager's and daemon's own endpoints, a port below 1024 (the
 * system's), the IDE port range (other workspaces' IDEs), another live workspace's IDE or exposed port.
 *
 * ControlPort calls {@link validateExposure} (INVALID_ARGUMENT naming `spec.port`); the proxy calls
 * {@link checkTarget} on every request, which also covers ports that came in through StartWorkspace or older
 * records.
 *
 * @module
 */
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { InvalidArgumentError } from '@workbay/api';
import type { WorkspaceRecord } from '../domain/types.js';

/** No workspace exposes more ports than this (ControlPort and StartWorkspace `spec.ports`). */
export const maxExposedPorts = 64;

/** The ports the manager and its daemon listen on (gRPC, proxy, metrics/admin, daemon); filled as they bind. */
export class ReservedEndpoints {
  private readonly ports = new Set<number>();

  /** Adds a `host:port` (or `[v6]:port`) address; ignores '' and unparsable text (nothing is listening there). */
  add(address: string | undefined): this {
    const match = /:([0-9]{1,5})$/.exec(address ?? '');
    const port = match ? Number(match[1]) : 0;
    if (port > 0 && port <= 65535) this.ports.add(port);
    return this;
  }

  has(port: number): boolean {
    return this.ports.has(port);
  }

  list(): number[] {
    return [...this.ports].sort((a, b) => a - b);
  }
}

export interface ExposureContext {
  readonly reserved: ReservedEndpoints;
  /** Every record the manager holds (the workspace itself included; it is skipped). */
  readonly workspaces: Iterable<WorkspaceRecord>;
  /** The range IDE ports are handed out from. */
  readonly idePorts?: { readonly from: number; readonly to: number };
}

/** Where the proxy sends a workspace's port (its IDE when `port` is undefined); undefined before it has a host. */
export function routeTarget(record: WorkspaceRecord, port?: number): { host: string; port: number } | undefined {
  const host = record.progress.runtimeHost;
  if (!host) return undefined;
  const wanted = port ?? record.progress.idePort;
  const mapped = record.progress.portMap?.[String(wanted)];
  return { host, port: mapped ?? wanted };
}

function isLoopbackOrUnspecified(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return (
    h === '' ||
    h === 'localhost' ||
    h.endsWith('.localhost') ||
    /^(::ffff:)?127\./.test(h) ||
    /^(::ffff:)?0\.0\.0\.0$/.test(h) ||
    h === '::1' ||
    h === '::' ||
    h === '0:0:0:0:0:0:0:1'
  );
}

let localAddresses: { readonly at: number; readonly set: ReadonlySet<string> } | undefined;

/** The host's interface addresses, re-read at most once a second (the proxy asks on every request). */
function hostAddresses(): ReadonlySet<string> {
  const now = Date.now();
  if (!localAddresses || now - localAddresses.at > 1000) {
    const set = new Set<string>();
    for (const addresses of Object.values(networkInterfaces())) {
      for (const a of addresses ?? []) set.add(a.address.toLowerCase());
    }
    localAddresses = { at: now, set };
  }
  return localAddresses.set;
}

/** True when `host` is the machine's own (loopback, unspecified, or an address of one of its interfaces). */
export function isSharedHost(host: string | undefined): boolean {
  if (host === undefined || isLoopbackOrUnspecified(host)) return true;
  // A name may resolve to this host: only an address can be proven to be somebody else's.
  if (isIP(host.replace(/^\[|\]$/g, '')) === 0) return true;
  return hostAddresses().has(host.toLowerCase().replace(/^\[|\]$/g, ''));
}

/** Live: anything not stopped still holds its ports. */
function live(record: WorkspaceRecord): boolean {
  return record.phase !== 'stopped';
}

/**
 * Why `targetPort` on the workspace's shared host is not the workspace's own, or undefined when it is. Only called
 * for shared hosts; `ownIde` is the workspace's own IDE host port (always its own).
 */
function notOwnReason(
  record: WorkspaceRecord,
  targetPort: number,
  context: ExposureContext,
  checkIdeRange: boolean,
): string | undefined {
  const ownIde = routeTarget(record)?.port ?? record.progress.idePort;
  if (targetPort === ownIde && ownIde > 0) return undefined;
  if (context.reserved.has(targetPort)) return `port ${targetPort} is one of the manager's own endpoints`;
  if (targetPort < 1024) return `port ${targetPort} is a system port of this host (below 1024)`;
  const range = context.idePorts;
  if (checkIdeRange && range && targetPort >= range.from && targetPort <= range.to) {
    return `port ${targetPort} is in the IDE port range ${range.from}-${range.to} (other workspaces' IDEs)`;
  }
  for (const other of context.workspaces) {
    if (other.id === record.id || !live(other)) continue;
    if (other.progress.runtimeHost && !isSharedHost(other.progress.runtimeHost)) continue;
    const theirs = [routeTarget(other)?.port ?? other.progress.idePort];
    for (const p of other.spec.ports) theirs.push(routeTarget(other, p.port)?.port ?? p.port);
    if (theirs.includes(targetPort)) return `port ${targetPort} belongs to another workspace`;
  }
  return undefined;
}

/** INVALID_ARGUMENT naming `field` unless `port` is 1-65535. */
export function validatePortNumber(port: number, field = 'spec.port'): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidArgumentError(field, `${String(port).slice(0, 16)} is not a port number (1-65535)`);
  }
}

/**
 * ControlPort's check of a port to expose: a port number, within the bound on exposed ports, and the workspace's
 * own. Throws INVALID_ARGUMENT naming `field`. Unexposing needs only a port number.
 */
export function validateExposure(
  record: WorkspaceRecord,
  port: number,
  expose: boolean,
  context: ExposureContext,
  field = 'spec.port',
): void {
  validatePortNumber(port, field);
  if (!expose) return;
  const already = record.spec.ports.some((p) => p.port === port);
  if (!already && record.spec.ports.length >= maxExposedPorts) {
    throw new InvalidArgumentError(field, `workspace ${record.id} already exposes ${maxExposedPorts} ports (the most)`);
  }
  const target = routeTarget(record, port);
  // Before the runtime reported a host, assume the strictest case: a shared host.
  if (!isSharedHost(target?.host)) return;
  const reason = notOwnReason(record, target?.port ?? port, context, true);
  if (reason) throw new InvalidArgumentError(field, `${reason}, not workspace ${record.id}'s own`);
}

/**
 * The proxy's check before it connects: the workspace's own host and a port it may reach. Returns the target, or
 * why not. `port` undefined is the IDE.
 */
export function checkTarget(
  record: WorkspaceRecord,
  port: number | undefined,
  context: ExposureContext,
): { readonly host: string; readonly port: number } | { readonly refused: string } {
  const target = routeTarget(record, port);
  if (!target) return { refused: `workspace ${record.id} has no address yet` };
  if (port !== undefined && !record.spec.ports.some((p) => p.port === port)) {
    return { refused: `port ${port} of workspace ${record.id} is not exposed` };
  }
  if (!isSharedHost(target.host)) return target;
  if (port === undefined) {
    // The IDE port comes from the manager's allocator; it still must not be one of the manager's endpoints.
    return context.reserved.has(target.port) ? { refused: `the IDE port of ${record.id} is reserved` } : target;
  }
  // The IDE range is not checked here: a port exposed before a later IDE took it is caught by the live records.
  const reason = notOwnReason(record, target.port, context, false);
  return reason ? { refused: `${reason}, not workspace ${record.id}'s own` } : target;
}
