/**
 * What a request may ask of git (invariant 8: nothing a request chooses runs on the node). Pure checks, no I/O:
 * the initializer validation runs them before a workspace is registered, and the git initializer runs them again
 * before it clones.
 *
 * - `custom_config` (written into the clone's `.git/config` by `git clone --config`) is limited to an allowlist of
 *   keys that can neither run a command nor redirect traffic; anything else is INVALID_ARGUMENT naming the key.
 * - Remote URLs: https, http, ssh (also scp-like `host:path`) and git only. `file://`, plain local paths and every
 *   other transport need `git.allowLocalRemotes` in the daemon config; `<helper>::<address>` (ext::, fd::, ...)
 *   starts a program of the request's choosing and is refused whatever the config says.
 */
import { InvalidArgumentError } from '../errors.js';
import type { GitInitializerSpec } from '../initializer/types.js';
import type { EgressRules } from '../initializer/upstream-proxy.js';

/** The daemon's git rules (config section `git`). */
export interface GitPolicy {
  /** Allow `file://` and local-path remotes (tests, single-user setups). Default false. */
  readonly allowLocalRemotes: boolean;
  /** Bound on each local git command on existing content (status at dispose, the config scan). */
  readonly localCommandTimeoutMs: number;
  /**
   * Which addresses network git may connect to (config `git.allowPrivateAddresses`, `git.allowedNetworks`):
   * every connection of every git command goes through an egress proxy of its own, which checks it
   * (egress-proxy.ts), and reaches them through `upstreamProxy` when there is one (config `git.upstreamProxy`).
   * Default: public addresses only, connected to directly.
   */
  readonly addresses: EgressRules;
  /**
   * Bound on the data memory (RLIMIT_DATA: heap and anonymous maps, not the packs git maps from files) of every git
   * process run as a workspace's user (config `git.maxMemory`). Git runs in the daemon's cgroup, not the
   * workspace's: a 128 KiB repository whose tree names 16 million paths took a checkout to 2.2 GiB (red team,
   * round 5), a sparse 3 GiB `.git/config` took `git config --list` to 3 GiB. Past it git fails ("out of memory"),
   * as a permanent failure.
   */
  readonly maxMemoryBytes: number;
  /**
   * Bound on each git command that may talk to a remote (clone, fetch, ls-remote, submodule update), and the least
   * speed its http(s) transfers keep (`http.lowSpeedLimit` bytes a second over `http.lowSpeedTime`, set for every
   * command, above any repository's or request's). A remote answering a byte every 5 s held a start slot, and the
   * workspace's stop, for as long as it liked (red team round 12, G2).
   */
  readonly networkCommandTimeoutMs: number;
  readonly lowSpeed: { readonly bytesPerSecond: number; readonly seconds: number };
}

export const defaultGitPolicy: GitPolicy = {
  allowLocalRemotes: false,
  localCommandTimeoutMs: 60_000,
  addresses: {},
  maxMemoryBytes: 1024 ** 3,
  networkCommandTimeoutMs: 30 * 60_000,
  lowSpeed: { bytesPerSecond: 1000, seconds: 60 },
};

/**
 * `custom_config` keys a request may set, lower case (git compares section and variable names without case).
 * Each is a local preference of the working copy: line endings, file system quirks, identity, pull/fetch
 * behaviour, transfer and pack tuning. Deliberately absent, with the reason:
 * - anything naming a program or a hook: core.sshCommand, core.gitProxy, core.fsmonitor, core.hooksPath,
 *   core.askPass, core.editor, core.pager, credential.*, filter.*, diff.*, merge.*, gpg.*, uploadpack.*,
 *   remote.*.uploadpack/receivepack/vcs, submodule.*.update, sequence.editor, alias.*, core.alternateRefsCommand;
 * - anything that redirects traffic or reads host files: url.*.insteadOf, http.proxy, http.*.proxy,
 *   http.cookieFile, http.ssl* (CA, keys, verification), http.extraHeader, include.path, includeIf.*,
 *   core.attributesFile, core.excludesFile, core.worktree, init.templateDir, protocol.*.allow;
 * - anything that weakens the working copy or our own assumptions: core.sharedRepository (world-writable
 *   .git), core.protect* (path protections), clone.defaultRemoteName (we rely on `origin`), extensions.*.
 */
export const customConfigAllowlist: ReadonlySet<string> = new Set([
  'core.autocrlf',
  'core.eol',
  'core.safecrlf',
  'core.ignorecase',
  'core.longpaths',
  'core.symlinks',
  'core.filemode',
  'core.precomposeunicode',
  'core.quotepath',
  'core.whitespace',
  'core.checkstat',
  'core.trustctime',
  'core.compression',
  'core.loosecompression',
  'core.bigfilethreshold',
  'core.packedgitlimit',
  'core.packedgitwindowsize',
  'core.deltabasecachelimit',
  'user.name',
  'user.email',
  'pull.rebase',
  'pull.ff',
  'fetch.prune',
  'fetch.prunetags',
  'fetch.fsckobjects',
  'transfer.fsckobjects',
  'http.postbuffer',
  'http.lowspeedlimit',
  'http.lowspeedtime',
  'http.maxrequests',
  'http.version',
  'pack.windowmemory',
  'pack.packsizelimit',
  'pack.deltacachesize',
  'pack.deltacachelimit',
  'pack.threads',
  'pack.window',
  'pack.depth',
  'pack.compression',
  'gc.auto',
  'init.defaultbranch',
  'advice.detachedhead',
  'checkout.workers',
  'index.version',
  'feature.manyfiles',
  'protocol.version',
]);

export const gitLimits = {
  /** Remote URIs. */
  url: 4096,
  customConfigEntries: 64,
  customConfigKey: 256,
  customConfigValue: 4096,
} as const;

/** A short, printable prefix of a value for an error message (messages never grow with the input). */
export function quoteValue(value: string, max = 64): string {
  const head = value.length > max ? value.slice(0, max) : value;
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is replaced
  const printable = head.replace(/[\u0000-\u001f\u007f]/g, '?');
  return value.length > max ? `'${printable}...' (${value.length} characters)` : `'${printable}'`;
}

/** Throws INVALID_ARGUMENT for the first `custom_config` entry that is not allowed. */
export function validateCustomConfig(config: Readonly<Record<string, string>>, field: string): void {
  const entries = Object.entries(config);
  if (entries.length > gitLimits.customConfigEntries)
    throw new InvalidArgumentError(
      field,
      `has too many entries (${entries.length}; at most ${gitLimits.customConfigEntries})`,
    );
  for (const [key, value] of entries) {
    if (key.length > gitLimits.customConfigKey)
      throw new InvalidArgumentError(
        field,
        `key ${quoteValue(key)} is too long (at most ${gitLimits.customConfigKey})`,
      );
    if (!customConfigAllowlist.has(key.toLowerCase()))
      throw new InvalidArgumentError(
        field,
        `git config key ${quoteValue(key)} is not allowed (allowed: line endings, file system, identity, pull/fetch, pack and transfer tuning)`,
      );
    if (value.length > gitLimits.customConfigValue)
      throw new InvalidArgumentError(
        field,
        `value of ${quoteValue(key)} is too long (at most ${gitLimits.customConfigValue})`,
      );
    // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
    if (/[\u0000-\u001f\u007f]/.test(value))
      throw new InvalidArgumentError(field, `value of ${quoteValue(key)} must not contain control characters`);
  }
}

/** How git would reach a remote, decided as git itself decides it (transport.c, connect.c). */
export type RemoteKind = 'https' | 'http' | 'ssh' | 'git' | 'local' | 'helper' | 'other';

const helperPattern = /^[A-Za-z][A-Za-z0-9+.-]*::/;
const schemePattern = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

export function classifyRemote(url: string): { kind: RemoteKind; scheme?: string; host?: string } {
  if (helperPattern.test(url)) return { kind: 'helper', scheme: url.slice(0, url.indexOf('::')) };
  const scheme = schemePattern.exec(url)?.[1]?.toLowerCase();
  if (scheme !== undefined) {
    const rest = url.slice(scheme.length + 3);
    const authority = rest.split('/')[0] ?? '';
    const host = authority.slice(authority.lastIndexOf('@') + 1);
    switch (scheme) {
      case 'https':
      case 'http':
      case 'git':
        return { kind: scheme, scheme, host };
      case 'ssh':
      case 'git+ssh':
      case 'ssh+git':
        return { kind: 'ssh', scheme, host };
      case 'file':
        return { kind: 'local', scheme };
      default:
        return { kind: 'other', scheme };
    }
  }
  // git's rule (url_is_local_not_ssh): a colon before the first slash makes it scp-like ssh, else a local path.
  const colon = url.indexOf(':');
  const slash = url.indexOf('/');
  if (colon > 0 && (slash === -1 || colon < slash)) {
    const authority = url.slice(0, colon);
    return { kind: 'ssh', host: authority.slice(authority.lastIndexOf('@') + 1) };
  }
  return { kind: 'local' };
}

/** The git protocol names (GIT_ALLOW_PROTOCOL, protocol.<name>.allow) the policy allows. */
export function allowedProtocols(policy: GitPolicy): readonly string[] {
  return policy.allowLocalRemotes ? ['https', 'http', 'ssh', 'git', 'file'] : ['https', 'http', 'ssh', 'git'];
}

/** Protocol names git knows besides the allowed ones; each gets `protocol.<name>.allow=never`. */
export const knownProtocols: readonly string[] = ['https', 'http', 'ssh', 'git', 'file', 'ext', 'fd', 'ftp', 'ftps'];

// Messages quote a URL's prefix: never with a password in it.
function withoutUserInfo(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/]*@/, '$1[redacted]@');
}

/** Throws INVALID_ARGUMENT naming `field` unless git may fetch from `url` under `policy`. */
export function validateRemoteUrl(url: string, policy: GitPolicy, field: string): void {
  if (url.length === 0) throw new InvalidArgumentError(field, 'must be set');
  if (url.length > gitLimits.url)
    throw new InvalidArgumentError(field, `is too long (${url.length} characters; at most ${gitLimits.url})`);
  if (url.startsWith('-')) throw new InvalidArgumentError(field, 'must not start with -');
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (/[\s\u0000-\u001f\u007f]/.test(url))
    throw new InvalidArgumentError(field, 'must not contain whitespace or control characters');
  const { kind, scheme, host } = classifyRemote(url);
  switch (kind) {
    case 'helper':
      throw new InvalidArgumentError(
        field,
        `the '${quoteValue(scheme ?? '', 16).slice(1, -1)}::' transport runs a program on the node and is never allowed`,
      );
    case 'other':
      throw new InvalidArgumentError(
        field,
        `${quoteValue(`${scheme ?? ''}://`, 24)} is not an allowed transport (https, http, ssh, git)`,
      );
    case 'local':
      if (!policy.allowLocalRemotes)
        throw new InvalidArgumentError(
          field,
          `${quoteValue(withoutUserInfo(url))} is a local path or file:// URL; only https, http, ssh and git remotes are allowed (daemon config git.allowLocalRemotes)`,
        );
      return;
    default:
      // ssh passes the host to a command line: an option-looking host would be an injection (git refuses it too).
      if (!host || host.startsWith('-') || host.startsWith('[-'))
        throw new InvalidArgumentError(field, `${quoteValue(withoutUserInfo(url))} has no valid host`);
  }
}

/**
 * The git-specific rules of a git initializer: its remotes and its `custom_config`. `policy` undefined checks
 * everything that does not depend on the daemon's config (local remotes are then judged when the clone runs).
 */
export function validateGitInitializer(spec: GitInitializerSpec, field: string, policy?: GitPolicy): void {
  const permissive: GitPolicy = { ...defaultGitPolicy, allowLocalRemotes: true };
  validateRemoteUrl(spec.remoteUri, policy ?? permissive, `${field}.remote_uri`);
  if (spec.upstreamRemoteUri)
    validateRemoteUrl(spec.upstreamRemoteUri, policy ?? permissive, `${field}.upstream_Remote_uri`);
  validateCustomConfig(spec.customConfig, `${field}.config.custom_config`);
}
