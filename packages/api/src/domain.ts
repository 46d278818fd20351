/**
 * Domain vocabulary: string unions for the wire enums, with converters in both directions.
 *
 * Proto enums stay on the wire; code above the gRPC boundary speaks these unions ('running', 'owner-only',
 * ...). Each converter is built by {@link defineEnumConverter}, whose rules are:
 * 1. The mapping is a `Record` over every known value of the proto enum (all except `UNRECOGNIZED`). Adding a
 *    value to a `.proto` enum therefore fails compilation here until the mapping names its domain value.
 * 2. The mapping is a bijection onto the declared domain values; this is checked once when the module loads,
 *    so a domain value without a proto value (or mapped twice) fails every test that imports the package.
 * 3. `fromProto` rejects `UNRECOGNIZED` and any number outside the enum, `toProto` any string outside the
 *    union, both with an {@link InvalidArgumentError} naming the field.
 *
 * @module
 */
import { InvalidArgumentError } from './errors.js';
import {
  CloneTargetMode as ProtoCloneTargetMode,
  GitAuthMethod as ProtoGitAuthMethod,
} from './generated/contentservice/initializer.js';
import { FSShiftMethod as ProtoFSShiftMethod } from './generated/iws/workspace_daemon.js';
import { WorkspaceContentState as ProtoWorkspaceContentState } from './generated/wsdaemon/daemon.js';
import {
  AdmissionLevel as ProtoAdmissionLevel,
  PortProtocol as ProtoPortProtocol,
  PortVisibility as ProtoPortVisibility,
  StopWorkspacePolicy as ProtoStopWorkspacePolicy,
  TimeoutType as ProtoTimeoutType,
  WorkspaceConditionBool as ProtoWorkspaceConditionBool,
  WorkspaceFeatureFlag as ProtoWorkspaceFeatureFlag,
  WorkspacePhase as ProtoWorkspacePhase,
  WorkspaceType as ProtoWorkspaceType,
} from './generated/wsman/core.js';

/** A domain value: a string literal, or for three-valued booleans `true | false | undefined`. */
export type DomainEnumValue = string | boolean | undefined;

/** Converts between a proto enum `P` (without `UNRECOGNIZED`) and a domain union `D`. */
export interface EnumConverter<P extends number, D extends DomainEnumValue> {
  /** Name of the proto enum, used in error messages. */
  readonly name: string;
  /** Every domain value, in proto number order. */
  readonly values: readonly D[];
  /** The proto value for a domain value; throws InvalidArgumentError for anything else. */
  toProto(value: D, field?: string): P;
  /** The domain value for a proto value; throws InvalidArgumentError for UNRECOGNIZED or unknown numbers. */
  fromProto(value: number, field?: string): D;
  /** True if `value` is one of the domain values. */
  is(value: unknown): value is D;
}

/**
 * Builds an {@link EnumConverter}. `P` must be the proto enum without its `UNRECOGNIZED` member, e.g.
 * `Exclude<wsman.WorkspacePhase, wsman.WorkspacePhase.UNRECOGNIZED>`; `values` lists the domain union.
 */
export function defineEnumConverter<P extends number, D extends DomainEnumValue>(
  name: string,
  values: readonly D[],
  mapping: { readonly [K in P]: D },
): EnumConverter<P, D> {
  const toProto = new Map<D, P>();
  const fromProto = new Map<number, D>();
  for (const [key, domain] of Object.entries(mapping) as [string, D][]) {
    const proto = Number(key) as P;
    if (!values.includes(domain)) throw new TypeError(`${name}: ${String(domain)} is not a declared domain value`);
    if (toProto.has(domain)) throw new TypeError(`${name}: ${String(domain)} is mapped twice`);
    toProto.set(domain, proto);
    fromProto.set(proto, domain);
  }
  for (const domain of values) {
    if (!toProto.has(domain)) throw new TypeError(`${name}: ${String(domain)} has no proto value`);
  }
  const ordered = Object.freeze([...fromProto.keys()].sort((a, b) => a - b).map((p) => fromProto.get(p) as D));
  return Object.freeze({
    name,
    values: ordered,
    toProto(value: D, field: string = name): P {
      const proto = toProto.get(value);
      if (proto === undefined) {
        throw new InvalidArgumentError(
          field,
          `'${String(value)}' is not a valid ${name}; expected one of ${list(ordered)}`,
        );
      }
      return proto;
    },
    fromProto(value: number, field: string = name): D {
      if (!fromProto.has(value)) throw new InvalidArgumentError(field, `unrecognized ${name} value ${value}`);
      return fromProto.get(value) as D;
    },
    is(value: unknown): value is D {
      return toProto.has(value as D);
    },
  });
}

function list(values: readonly DomainEnumValue[]): string {
  return values.map((v) => (typeof v === 'string' ? `'${v}'` : String(v))).join(', ');
}

type Known<E extends number, U extends E> = Exclude<E, U>;

// ---------------------------------------------------------------------------------------------------------------
// wsman

/** Coarse position in a workspace's lifecycle. `stopped` is terminal. */
export type WorkspacePhase =
  'unknown' | 'pending' | 'creating' | 'initializing' | 'running' | 'interrupted' | 'stopping' | 'stopped';

export const workspacePhase = defineEnumConverter<
  Known<ProtoWorkspacePhase, ProtoWorkspacePhase.UNRECOGNIZED>,
  WorkspacePhase
>(
  'WorkspacePhase',
  ['unknown', 'pending', 'creating', 'initializing', 'running', 'interrupted', 'stopping', 'stopped'],
  {
    [ProtoWorkspacePhase.UNKNOWN]: 'unknown',
    [ProtoWorkspacePhase.PENDING]: 'pending',
    [ProtoWorkspacePhase.CREATING]: 'creating',
    [ProtoWorkspacePhase.INITIALIZING]: 'initializing',
    [ProtoWorkspacePhase.RUNNING]: 'running',
    [ProtoWorkspacePhase.INTERRUPTED]: 'interrupted',
    [ProtoWorkspacePhase.STOPPING]: 'stopping',
    [ProtoWorkspacePhase.STOPPED]: 'stopped',
  },
);

/** How gracefully a workspace stops: `abort` skips the final backup. */
export type StopPolicy = 'normally' | 'immediately' | 'abort';

export const stopPolicy = defineEnumConverter<
  Known<ProtoStopWorkspacePolicy, ProtoStopWorkspacePolicy.UNRECOGNIZED>,
  StopPolicy
>('StopWorkspacePolicy', ['normally', 'immediately', 'abort'], {
  [ProtoStopWorkspacePolicy.NORMALLY]: 'normally',
  [ProtoStopWorkspacePolicy.IMMEDIATELY]: 'immediately',
  [ProtoStopWorkspacePolicy.ABORT]: 'abort',
});

/** Who may reach a workspace and its ports. */
export type AdmissionLevel = 'owner-only' | 'everyone';

export const admissionLevel = defineEnumConverter<
  Known<ProtoAdmissionLevel, ProtoAdmissionLevel.UNRECOGNIZED>,
  AdmissionLevel
>('AdmissionLevel', ['owner-only', 'everyone'], {
  [ProtoAdmissionLevel.ADMIT_OWNER_ONLY]: 'owner-only',
  [ProtoAdmissionLevel.ADMIT_EVERYONE]: 'everyone',
});

/** Who may reach a port through the proxy. */
export type PortVisibility = 'private' | 'public';

export const portVisibility = defineEnumConverter<
  Known<ProtoPortVisibility, ProtoPortVisibility.UNRECOGNIZED>,
  PortVisibility
>('PortVisibility', ['private', 'public'], {
  [ProtoPortVisibility.PORT_VISIBILITY_PRIVATE]: 'private',
  [ProtoPortVisibility.PORT_VISIBILITY_PUBLIC]: 'public',
});

/** The protocol a port speaks behind the proxy. */
export type PortProtocol = 'http' | 'https';

export const portProtocol = defineEnumConverter<Known<ProtoPortProtocol, ProtoPortProtocol.UNRECOGNIZED>, PortProtocol>(
  'PortProtocol',
  ['http', 'https'],
  {
    [ProtoPortProtocol.PORT_PROTOCOL_HTTP]: 'http',
    [ProtoPortProtocol.PORT_PROTOCOL_HTTPS]: 'https',
  },
);

/** Purpose of a workspace. `probe` exists only for 2022-era clients. */
export type WorkspaceType = 'regular' | 'prebuild' | 'probe' | 'imagebuild';

export const workspaceType = defineEnumConverter<
  Known<ProtoWorkspaceType, ProtoWorkspaceType.UNRECOGNIZED>,
  WorkspaceType
>('WorkspaceType', ['regular', 'prebuild', 'probe', 'imagebuild'], {
  [ProtoWorkspaceType.REGULAR]: 'regular',
  [ProtoWorkspaceType.PREBUILD]: 'prebuild',
  [ProtoWorkspaceType.PROBE]: 'probe',
  [ProtoWorkspaceType.IMAGEBUILD]: 'imagebuild',
});

/** Which timeout SetTimeout changes: while the IDE is open, or after it closed. */
export type TimeoutType = 'workspace' | 'closed';

export const timeoutType = defineEnumConverter<Known<ProtoTimeoutType, ProtoTimeoutType.UNRECOGNIZED>, TimeoutType>(
  'TimeoutType',
  ['workspace', 'closed'],
  {
    [ProtoTimeoutType.WORKSPACE_TIMEOUT]: 'workspace',
    [ProtoTimeoutType.CLOSED_TIMEOUT]: 'closed',
  },
);

/** A three-valued condition: `undefined` is the wire's EMPTY (not known / not applicable). */
export type WorkspaceConditionBool = boolean | undefined;

export const workspaceConditionBool = defineEnumConverter<
  Known<ProtoWorkspaceConditionBool, ProtoWorkspaceConditionBool.UNRECOGNIZED>,
  WorkspaceConditionBool
>('WorkspaceConditionBool', [false, true, undefined], {
  [ProtoWorkspaceConditionBool.FALSE]: false,
  [ProtoWorkspaceConditionBool.TRUE]: true,
  [ProtoWorkspaceConditionBool.EMPTY]: undefined,
});

/** Optional per-workspace behaviour. The deprecated ones exist for older clients and change nothing. */
export type WorkspaceFeatureFlag =
  | 'noop'
  | 'full-workspace-backup'
  | 'fixed-resources'
  | 'persistent-volume-claim'
  | 'protected-secrets'
  | 'workspace-class-limiting'
  | 'workspace-connection-limiting'
  | 'workspace-psi'
  | 'ssh-ca';

export const workspaceFeatureFlag = defineEnumConverter<
  Known<ProtoWorkspaceFeatureFlag, ProtoWorkspaceFeatureFlag.UNRECOGNIZED>,
  WorkspaceFeatureFlag
>(
  'WorkspaceFeatureFlag',
  [
    'noop',
    'full-workspace-backup',
    'fixed-resources',
    'persistent-volume-claim',
    'protected-secrets',
    'workspace-class-limiting',
    'workspace-connection-limiting',
    'workspace-psi',
    'ssh-ca',
  ],
  {
    [ProtoWorkspaceFeatureFlag.NOOP]: 'noop',
    [ProtoWorkspaceFeatureFlag.FULL_WORKSPACE_BACKUP]: 'full-workspace-backup',
    [ProtoWorkspaceFeatureFlag.FIXED_RESOURCES]: 'fixed-resources',
    [ProtoWorkspaceFeatureFlag.PERSISTENT_VOLUME_CLAIM]: 'persistent-volume-claim',
    [ProtoWorkspaceFeatureFlag.PROTECTED_SECRETS]: 'protected-secrets',
    [ProtoWorkspaceFeatureFlag.WORKSPACE_CLASS_LIMITING]: 'workspace-class-limiting',
    [ProtoWorkspaceFeatureFlag.WORKSPACE_CONNECTION_LIMITING]: 'workspace-connection-limiting',
    [ProtoWorkspaceFeatureFlag.WORKSPACE_PSI]: 'workspace-psi',
    [ProtoWorkspaceFeatureFlag.SSH_CA]: 'ssh-ca',
  },
);

// ---------------------------------------------------------------------------------------------------------------
// contentservice

/** What a Git initializer leaves checked out. */
export type CloneTargetMode = 'remote-head' | 'remote-commit' | 'remote-branch' | 'local-branch';

export const cloneTargetMode = defineEnumConverter<
  Known<ProtoCloneTargetMode, ProtoCloneTargetMode.UNRECOGNIZED>,
  CloneTargetMode
>('CloneTargetMode', ['remote-head', 'remote-commit', 'remote-branch', 'local-branch'], {
  [ProtoCloneTargetMode.REMOTE_HEAD]: 'remote-head',
  [ProtoCloneTargetMode.REMOTE_COMMIT]: 'remote-commit',
  [ProtoCloneTargetMode.REMOTE_BRANCH]: 'remote-branch',
  [ProtoCloneTargetMode.LOCAL_BRANCH]: 'local-branch',
});

/** How a clone authenticates: none, basic auth, or basic auth with a one-time secret URL. */
export type GitAuthMethod = 'none' | 'basic' | 'basic-ots';

export const gitAuthMethod = defineEnumConverter<
  Known<ProtoGitAuthMethod, ProtoGitAuthMethod.UNRECOGNIZED>,
  GitAuthMethod
>('GitAuthMethod', ['none', 'basic', 'basic-ots'], {
  [ProtoGitAuthMethod.NO_AUTH]: 'none',
  [ProtoGitAuthMethod.BASIC_AUTH]: 'basic',
  [ProtoGitAuthMethod.BASIC_AUTH_OTS]: 'basic-ots',
});

// ---------------------------------------------------------------------------------------------------------------
// wsdaemon, iws

/** Whether a workspace's content can be relied on. */
export type WorkspaceContentState = 'none' | 'setting-up' | 'available' | 'wrapping-up';

export const workspaceContentState = defineEnumConverter<
  Known<ProtoWorkspaceContentState, ProtoWorkspaceContentState.UNRECOGNIZED>,
  WorkspaceContentState
>('WorkspaceContentState', ['none', 'setting-up', 'available', 'wrapping-up'], {
  [ProtoWorkspaceContentState.NONE]: 'none',
  [ProtoWorkspaceContentState.SETTING_UP]: 'setting-up',
  [ProtoWorkspaceContentState.AVAILABLE]: 'available',
  [ProtoWorkspaceContentState.WRAPPING_UP]: 'wrapping-up',
});

/** How file ownership is shifted for user-namespaced workspaces. */
export type FSShiftMethod = 'shiftfs' | 'fuse' | 'idmapped';

export const fsShiftMethod = defineEnumConverter<
  Known<ProtoFSShiftMethod, ProtoFSShiftMethod.UNRECOGNIZED>,
  FSShiftMethod
>('FSShiftMethod', ['shiftfs', 'fuse', 'idmapped'], {
  [ProtoFSShiftMethod.SHIFTFS]: 'shiftfs',
  [ProtoFSShiftMethod.FUSE]: 'fuse',
  [ProtoFSShiftMethod.IDMAPPED]: 'idmapped',
});

// ---------------------------------------------------------------------------------------------------------------
// Go durations (the wire's timeout strings: "30m", "1h30m", "1.5s")

const nanosPerUnit: Readonly<Record<string, bigint>> = {
  ns: 1n,
  us: 1_000n,
  µs: 1_000n, // U+00B5 micro sign
  μs: 1_000n, // U+03BC Greek small letter mu
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};

const maxDurationNanos = 2n ** 63n - 1n;
const durationPattern = /^([0-9]*)(?:\.([0-9]*))?([a-zµμ]+)/;

/**
 * Parses a Go duration string (Go's `time.ParseDuration` grammar: an optional sign, then one or more
 * `<number><unit>` terms with units ns, us, µs, ms, s, m, h; "0" alone is allowed) into milliseconds.
 * Sub-millisecond parts give a fractional result. Throws {@link InvalidArgumentError} naming `field` for
 * anything else, including the empty string and values beyond Go's int64 nanosecond range.
 */
export function parseGoDuration(value: string, field = 'duration'): number {
  const fail = (why: string): never => {
    throw new InvalidArgumentError(field, `invalid duration '${value}': ${why}`);
  };
  if (typeof value !== 'string') return fail('not a string');
  let rest = value;
  let negative = false;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    negative = rest.startsWith('-');
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') return fail('empty');
  let total = 0n;
  while (rest.length > 0) {
    const match = durationPattern.exec(rest);
    if (!match) return fail('expected <number><unit>, e.g. 1h30m');
    const [whole, intPart = '', fracPart, unit = ''] = match;
    if (intPart === '' && (fracPart === undefined || fracPart === '')) return fail('missing number');
    const scale = nanosPerUnit[unit];
    if (scale === undefined) return fail(`unknown unit '${unit}'`);
    let nanos = BigInt(intPart === '' ? '0' : intPart) * scale;
    if (fracPart) {
      // Truncate like Go: digits beyond what the unit can express in nanoseconds are dropped.
      const digits = BigInt(fracPart);
      const divisor = 10n ** BigInt(fracPart.length);
      nanos += (digits * scale) / divisor;
    }
    total += nanos;
    if (total > maxDurationNanos + (negative ? 1n : 0n)) return fail('out of range');
    rest = rest.slice(whole.length);
  }
  const ms = Number(total) / 1e6;
  return negative ? -ms : ms;
}

/**
 * Formats milliseconds the way Go's `Duration.String` does: "1h30m0s", "1.5s", "250ms", "0s".
 * The value is first rounded to whole nanoseconds.
 */
export function formatGoDuration(ms: number): string {
  if (!Number.isFinite(ms)) throw new InvalidArgumentError('duration', `cannot format ${ms} as a duration`);
  let nanos = BigInt(Math.round(ms * 1e6));
  if (nanos === 0n) return '0s';
  const negative = nanos < 0n;
  if (negative) nanos = -nanos;
  const sign = negative ? '-' : '';
  if (nanos < 1_000_000_000n) {
    // Below one second Go picks the largest unit that keeps the integer part non-zero.
    if (nanos < 1_000n) return `${sign}${nanos}ns`;
    if (nanos < 1_000_000n) return `${sign}${fraction(nanos, 1_000n)}µs`;
    return `${sign}${fraction(nanos, 1_000_000n)}ms`;
  }
  const hours = nanos / 3_600_000_000_000n;
  nanos %= 3_600_000_000_000n;
  const minutes = nanos / 60_000_000_000n;
  nanos %= 60_000_000_000n;
  let out = sign;
  if (hours > 0n) out += `${hours}h`;
  if (hours > 0n || minutes > 0n) out += `${minutes}m`;
  return `${out}${fraction(nanos, 1_000_000_000n)}s`;
}

/** `value / unit` as a decimal without trailing zeros. */
function fraction(value: bigint, unit: bigint): string {
  const whole = value / unit;
  const rest = value % unit;
  if (rest === 0n) return whole.toString();
  const digits = unit.toString().length - 1;
  return `${whole}.${rest.toString().padStart(digits, '0').replace(/0+$/, '')}`;
}

/**
 * The state of a working copy as the daemon reports it on disposal: the domain form of `contentservice.GitStatus`,
 * shared by the daemon (which computes it) and the manager (which keeps it in the workspace's status).
 */
export interface GitStatusSummary {
  readonly branch: string;
  readonly latestCommit: string;
  readonly uncommittedFiles: readonly string[];
  readonly untrackedFiles: readonly string[];
  readonly unpushedCommits: readonly string[];
  readonly totalUncommittedFiles: number;
  readonly totalUntrackedFiles: number;
  readonly totalUnpushedCommits: number;
}

/**
 * Bounds of a {@link GitStatusSummary}. Every string in it comes from the workspace's content (branch names, paths,
 * commit subjects), and the summary stays in the workspace's status, in every GetWorkspaces answer and on every
 * Subscribe stream: a few hundred KiB per workspace made one owner's stopped workspaces break listing for everyone.
 */
export const gitStatusLimits = {
  /** Entries kept per list; the totals carry the real counts. */
  listEntries: 100,
  /** Characters kept of each string (longer ones end in `…`). */
  stringChars: 512,
  /** Characters of all lists together; entries past it are dropped (the totals still count them). */
  listChars: 8 * 1024,
} as const;

function clip(text: string): string {
  return text.length > gitStatusLimits.stringChars ? `${text.slice(0, gitStatusLimits.stringChars - 1)}…` : text;
}

/**
 * `status` within {@link gitStatusLimits}: lists cut to their first entries, strings clipped, the lists' total size
 * bounded. Applied where a summary is made (the daemon) and where one is received (the manager), which need not
 * trust each other's version.
 */
export function limitGitStatus(status: GitStatusSummary): GitStatusSummary {
  let budget = gitStatusLimits.listChars;
  const list = (entries: readonly string[]): string[] => {
    const kept: string[] = [];
    for (const entry of entries.slice(0, gitStatusLimits.listEntries)) {
      const clipped = clip(entry);
      if (clipped.length > budget) break;
      budget -= clipped.length;
      kept.push(clipped);
    }
    return kept;
  };
  const count = (value: number, listed: number): number =>
    Number.isSafeInteger(value) && value >= listed ? value : listed;
  const uncommittedFiles = list(status.uncommittedFiles);
  const untrackedFiles = list(status.untrackedFiles);
  const unpushedCommits = list(status.unpushedCommits);
  return {
    branch: clip(status.branch),
    latestCommit: clip(status.latestCommit),
    uncommittedFiles,
    untrackedFiles,
    unpushedCommits,
    totalUncommittedFiles: count(status.totalUncommittedFiles, status.uncommittedFiles.length),
    totalUntrackedFiles: count(status.totalUntrackedFiles, status.untrackedFiles.length),
    totalUnpushedCommits: count(status.totalUnpushedCommits, status.unpushedCommits.length),
  };
}
