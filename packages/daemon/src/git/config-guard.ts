/**
 * The fixed configuration every git invocation of the daemon runs with, and the neutralisation of whatever a
 * repository's own config (content, hostile) says that could run a program, or send traffic (credentials included)
 * elsewhere than the command asked for: proxies, URL rewrites, extra headers, TLS trust.
 *
 * Git reads config in scopes (system, global, local, worktree, command); for one key the last value wins, so a
 * command-scope value (ours, passed through GIT_CONFIG_COUNT/KEY/VALUE, which has no quoting pitfalls for keys
 * with '=' in a subsection) beats the repository's. Where that is not so, the environment takes over: git reads
 * GIT_PROXY_COMMAND, GIT_SSH_COMMAND, GIT_ASKPASS, GIT_PAGER, GIT_EDITOR and GIT_ALLOW_PROTOCOL before any
 * config (core.gitProxy is first-match-wins, protocol.<name>.allow beats protocol.allow). Keys that can be
 * neither overridden nor neutralised make us refuse to run git on that content.
 */
import { FailedPreconditionError } from '../errors.js';
import type { GitPolicy } from './git-policy.js';
import { allowedProtocols, knownProtocols, quoteValue } from './git-policy.js';

export type ConfigPair = readonly [key: string, value: string];

export interface ConfigEntry {
  readonly scope?: string;
  /** As git prints it: section and variable lower case, subsection as written. */
  readonly key: string;
  /** Undefined for a valueless (implicit true) entry. */
  readonly value?: string;
}

/** Git on this content would run something we cannot neutralise; we do not run it. */
export class UnsafeRepositoryError extends FailedPreconditionError {
  constructor(location: string, reason: string) {
    super(`refusing to run git on ${location}: ${reason}`);
  }
}

/** Config every invocation gets, whatever the repository says. */
export function fixedConfig(policy: GitPolicy): ConfigPair[] {
  const allowed = new Set(allowedProtocols(policy));
  return [
    // Nothing of the repository runs: no fsmonitor hook, no hooks at all, our ssh, no helpers or prompts.
    ['core.fsmonitor', 'false'],
    ['core.hooksPath', '/dev/null'],
    ['core.sshCommand', 'ssh'],
    ['core.askPass', ''],
    ['core.pager', 'cat'],
    ['core.editor', ':'],
    ['sequence.editor', ':'],
    // An empty value clears every helper configured before it (all scopes, URL-specific ones included).
    ['credential.helper', ''],
    // No signing or signature checks (they run gpg.program / gpg.ssh.* of the repository's choice).
    ['commit.gpgSign', 'false'],
    ['tag.gpgSign', 'false'],
    ['tag.forceSignAnnotated', 'false'],
    ['push.gpgSign', 'false'],
    ['log.showSignature', 'false'],
    // No background work left behind (gc --auto detaches), no recursion into submodule repositories, whose
    // config we do not read here.
    ['gc.auto', '0'],
    ['maintenance.auto', 'false'],
    ['fetch.recurseSubmodules', 'false'],
    ['submodule.recurse', 'false'],
    ['status.submoduleSummary', 'false'],
    ['diff.ignoreSubmodules', 'all'],
    // A transfer slower than this is given up (http and https; ssh and git:// have the command's deadline only).
    ['http.lowSpeedLimit', String(policy.lowSpeed.bytesPerSecond)],
    ['http.lowSpeedTime', String(policy.lowSpeed.seconds)],
    // Transports: the allowed ones by name, everything else never (GIT_ALLOW_PROTOCOL says the same, first).
    ['protocol.allow', 'never'],
    ...knownProtocols.map((name): ConfigPair => [`protocol.${name}.allow`, allowed.has(name) ? 'always' : 'never']),
  ];
}

/** Parses `git config --list -z [--show-scope]`: `[scope NUL] key [LF value] NUL` per entry. */
export function parseConfigList(output: string, withScope: boolean): ConfigEntry[] {
  const fields = output.split('\0');
  if (fields[fields.length - 1] === '') fields.pop();
  const entries: ConfigEntry[] = [];
  for (let i = 0; i < fields.length; i++) {
    const scope = withScope ? fields[i++] : undefined;
    const record = fields[i] ?? '';
    const newline = record.indexOf('\n');
    const key = newline === -1 ? record : record.slice(0, newline);
    const value = newline === -1 ? undefined : record.slice(newline + 1);
    entries.push({ ...(scope !== undefined ? { scope } : {}), key, ...(value !== undefined ? { value } : {}) });
  }
  return entries;
}

function splitKey(key: string): { section: string; subsection?: string; name: string } {
  const first = key.indexOf('.');
  const last = key.lastIndexOf('.');
  if (first === -1) return { section: key.toLowerCase(), name: '' };
  const section = key.slice(0, first).toLowerCase();
  const name = key.slice(last + 1).toLowerCase();
  return first === last ? { section, name } : { section, subsection: key.slice(first + 1, last), name };
}

const gpgPrograms: Record<string, string> = {
  'gpg.program': 'gpg',
  'gpg.openpgp.program': 'gpg',
  'gpg.x509.program': 'gpgsm',
  'gpg.ssh.program': 'ssh-keygen',
};

/**
 * `http.<name>` and `http.<url>.<name>` variables that change where traffic goes (proxies, name resolution,
 * redirects) or what is sent and to whom it is trusted (extra headers, cookies, TLS verification, CA and client
 * certificates), with the value that undoes each: git's default, or an empty value that resets a list or means
 * "none". Git picks the best-matching URL for these (urlmatch.c): a plain command-scope `http.proxy` loses to the
 * repository's `http.https://host/.proxy`, so each is overridden under the very key the repository used (equal
 * specificity: the later, ours, wins). The operator's GIT_SSL_* variables are read after all config and still
 * apply. Left alone: keys that can only make a connection fail (pinnedPubKey) or tune it (postBuffer, ...).
 */
const httpNeutral: Readonly<Record<string, string>> = {
  proxy: '', // empty: no proxy at all; a daemon command gets its egress proxy instead (proxyValue)
  proxyauthmethod: 'anyauth',
  proxysslcert: '',
  proxysslkey: '',
  proxysslcainfo: '',
  proxysslcertpasswordprotected: 'false',
  sslverify: 'true',
  sslcainfo: '',
  sslcapath: '',
  sslcert: '',
  sslkey: '',
  sslcertpasswordprotected: 'false',
  sslversion: '',
  sslcipherlist: '',
  extraheader: '', // an empty value clears the list
  cookiefile: '',
  savecookies: 'false',
  curloptresolve: '', // an empty value clears the list
  followredirects: 'initial',
  delegation: 'none',
};

export interface NeutraliseOptions {
  /**
   * The command may talk to a remote (a transport command, or any command given credentials: a partial clone
   * fetches lazily from its promisor remote). Then config that rewrites remote URLs, which no later value can
   * undo, is refused. Default true.
   */
  readonly remote?: boolean;
  /**
   * The egress proxy URL of the command (egress-connect.ts): every proxy key of the repository
   * (`http.proxy`, `http.<url>.proxy`, `remote.<name>.proxy`) is set to it, at the key the repository used, so that
   * no URL-specific key of the content routes around it. Undefined: proxy keys are emptied (no proxy).
   */
  readonly proxy?: string;
}

/** The value a repository's proxy key gets: the command's egress proxy, else none. */
function proxyValue(name: string, options: NeutraliseOptions): string {
  if (name === 'proxy') return options.proxy ?? '';
  // proxyAuthMethod: the egress proxy takes Basic credentials, sent at once.
  return options.proxy !== undefined ? 'basic' : 'anyauth';
}

/**
 * Overrides for every command-bearing or traffic-changing key in `entries` (the repository's effective config);
 * throws UnsafeRepositoryError for one that cannot be neutralised. Keys the fixed config or the environment already
 * decide (core.fsmonitor, core.hooksPath, core.sshCommand, core.gitProxy, credential.helper, ...) need nothing.
 */
export function neutralise(
  entries: readonly ConfigEntry[],
  policy: GitPolicy,
  location: string,
  options: NeutraliseOptions = {},
): ConfigPair[] {
  const remote = options.remote ?? true;
  const allowed = new Set(allowedProtocols(policy));
  const out = new Map<string, string>();
  const refuse = (key: string, why: string): never => {
    throw new UnsafeRepositoryError(location, `its git config sets ${quoteValue(key)}, which ${why}`);
  };
  let originUrl: string | undefined;
  for (const { scope, key, value } of entries) {
    if (scope === 'command') continue;
    const { section, subsection, name } = splitKey(key);
    const lower = key.toLowerCase();
    if (section === 'http' && (name === 'proxy' || name === 'proxyauthmethod')) {
      // Same key as the repository's (subsection as written): see httpNeutral.
      out.set(key, proxyValue(name, options));
    } else if (section === 'http' && name in httpNeutral) {
      out.set(key, httpNeutral[name] as string);
    } else if (section === 'remote' && subsection !== undefined && (name === 'proxy' || name === 'proxyauthmethod')) {
      // remote.<name>.proxy beats http.proxy for that remote; last value wins (remote.c).
      out.set(key, proxyValue(name, options));
    } else if (section === 'url' && subsection !== undefined && (name === 'insteadof' || name === 'pushinsteadof')) {
      // The longest matching prefix rewrites a URL, the first one found on a tie (remote.c alias_url): the
      // repository's always comes first, so no value of ours can undo it, and it rewrites URLs given on the
      // command line too. Sending a credentialed fetch of the request's remote to a host of the content's choosing
      // is exactly what must not happen: refused for anything that may talk to a remote. Local commands (status
      // at disposal, checkout) never use it.
      if (remote)
        refuse(
          key,
          'rewrites remote URLs (this call would reach another host than the one asked for); remove it from the repository config',
        );
    } else if (
      remote &&
      ((section === 'extensions' && name === 'partialclone') ||
        (section === 'remote' && subsection !== undefined && name === 'promisor'))
    ) {
      // A partial clone fetches missing objects lazily from its promisor remote, from any command given
      // credentials (checkout): content naming the promisor decides where those credentials go (red-team round 2:
      // a prebuild made checkout send the next user's token to a second origin URL). The daemon makes no partial
      // clones of its own.
      refuse(
        key,
        'makes a partial clone fetch from a remote of its own choosing; remove it from the repository config',
      );
    } else if (remote && lower === 'remote.origin.url' && (originUrl ??= value) !== value) {
      // Git fetches from the first URL and pushes to all: the credentials must go to exactly one, the request's.
      refuse(key, 'names a second, different URL for origin; remove it from the repository config');
    } else if (section === 'credential' && name === 'usehttppath') {
      out.set(key, 'false');
    } else if (section === 'filter' && subsection !== undefined) {
      // Empty clean/smudge/process means "no filter" (convert.c); required=false keeps that from being fatal.
      for (const part of ['clean', 'smudge', 'process']) out.set(`filter.${subsection}.${part}`, '');
      out.set(`filter.${subsection}.required`, 'false');
    } else if (section === 'diff' && subsection !== undefined && name === 'textconv') {
      out.set(`diff.${subsection}.textconv`, 'cat');
    } else if (section === 'diff' && subsection !== undefined && name === 'command') {
      out.set(`diff.${subsection}.command`, 'true');
    } else if (lower === 'diff.external') {
      out.set('diff.external', 'true');
    } else if (section === 'merge' && subsection !== undefined && name === 'driver') {
      // A failing driver is a conflict: the merge stops, nothing of the repository runs.
      out.set(`merge.${subsection}.driver`, 'false');
    } else if (section === 'credential' && name === 'helper') {
      out.set(key, '');
    } else if (section === 'remote' && subsection !== undefined && (name === 'uploadpack' || name === 'receivepack')) {
      // First value wins for these (remote.c): a command-scope override cannot beat the repository's.
      refuse(key, 'names the program run for a remote');
    } else if (section === 'remote' && subsection !== undefined && name === 'vcs') {
      refuse(key, 'selects a remote helper program');
    } else if (section === 'submodule' && subsection !== undefined && name === 'update') {
      if (value?.trimStart().startsWith('!')) out.set(`submodule.${subsection}.update`, 'checkout');
    } else if (section === 'protocol' && subsection !== undefined && name === 'allow') {
      out.set(`protocol.${subsection}.allow`, allowed.has(subsection.toLowerCase()) ? 'always' : 'never');
    } else if (section === 'includeif' && subsection?.toLowerCase().startsWith('onbranch:')) {
      // Which file it includes changes with the branch our own checkout switches to: not knowable in advance.
      refuse(key, 'includes config depending on the checked-out branch');
    } else if (lower === 'core.alternaterefscommand') {
      out.set('core.alternateRefsCommand', 'true');
    } else if (lower in gpgPrograms) {
      out.set(key, gpgPrograms[lower] as string);
    } else if (lower === 'gpg.ssh.defaultkeycommand') {
      out.set('gpg.ssh.defaultKeyCommand', 'true');
    }
  }
  return [...out];
}

/**
 * For the config of a repository we do not read in its own context (a submodule's gitdir): includes could
 * pull in config whose conditions only git evaluates, so any include is a refusal; the rest is neutralised.
 */
export function neutraliseFile(
  entries: readonly ConfigEntry[],
  policy: GitPolicy,
  location: string,
  options: NeutraliseOptions = {},
): ConfigPair[] {
  for (const { key } of entries) {
    const { section, name } = splitKey(key);
    if ((section === 'include' || section === 'includeif') && name === 'path')
      throw new UnsafeRepositoryError(location, `a submodule's git config includes other files (${quoteValue(key)})`);
  }
  return neutralise(entries, policy, location, options);
}

/** GIT_CONFIG_COUNT/KEY_n/VALUE_n for `pairs` (command scope, in order). */
export function configEnv(pairs: readonly ConfigPair[]): Record<string, string> {
  const env: Record<string, string> = { GIT_CONFIG_COUNT: String(pairs.length) };
  pairs.forEach(([key, value], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = key;
    env[`GIT_CONFIG_VALUE_${i}`] = value;
  });
  return env;
}
