/**
 * Git's failures as the daemon reports them: typed, with the line of stderr that says what went wrong, and never
 * with a credential in them.
 */
import { InternalError } from '../errors.js';

export interface GitCredentials {
  readonly username: string;
  readonly password: string;
}

export class GitCommandError extends InternalError {
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`git ${args[0] ?? ''} failed (exit ${exitCode ?? 'signal'}): ${gitFailureLine(stderr).slice(0, 512)}`);
  }
}

/**
 * The line of git's stderr that says what went wrong: its `fatal:` line (else its first `error:` line), not the
 * advice git prints after it ("Please make sure you have the correct access rights and the repository exists.").
 */
export function gitFailureLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  return lines.find((l) => l.startsWith('fatal:')) ?? lines.find((l) => l.startsWith('error:')) ?? lines.at(-1) ?? '';
}

/** Replaces every occurrence of the secrets (also URL-encoded) in `text`. */
export function redactSecrets(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text;
  for (const secret of secrets) {
    if (!secret || secret.length < 3) continue;
    for (const variant of new Set([secret, encodeURIComponent(secret)])) out = out.split(variant).join('[redacted]');
  }
  return out;
}

/** Removes `user:password@` from an http(s) URL; returns the clean URL and what was removed. */
export function stripUrlCredentials(url: string): { url: string; credentials?: GitCredentials } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Deliberate: not a URL (scp-like `git@host:repo` or a path) has no user info to strip.
    return { url };
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || (!parsed.username && !parsed.password))
    return { url };
  const credentials = { username: decodeURIComponent(parsed.username), password: decodeURIComponent(parsed.password) };
  parsed.username = '';
  parsed.password = '';
  return { url: parsed.toString(), credentials };
}

/** What kind of failure a git error is: retrying helps only for `transient`. */
export type GitFailureKind =
  'auth' | 'access-denied' | 'unknown-host' | 'unreachable' | 'unsupported' | 'exhausted' | 'too-slow' | 'transient';

export function classifyGitFailure(stderr: string): GitFailureKind {
  const text = stderr.toLowerCase();
  // The repository needs more than git may use (`git.maxMemory`) or the workspace's disk holds: the same the next
  // time. Retried, a crafted repository would cost its memory or disk again on every attempt (red team, round 5).
  if (
    text.includes('out of memory') ||
    text.includes('cannot allocate memory') ||
    text.includes('no space left on device') ||
    text.includes('disk quota exceeded')
  ) {
    return 'exhausted';
  }
  // A remote slower than git.lowSpeedLimit, or a command past git.networkCommandTimeout: retried, a remote that
  // trickles would hold the start (and its slot) through every attempt (red team round 12, G2).
  if (text.includes('operation too slow') || /timed out after \d+ ms/.test(text)) return 'too-slow';
  // A host name that does not resolve will not resolve in five minutes either: fail at once, saying so.
  // Nothing listens there (ECONNREFUSED, from git's own connection or the egress proxy's): the same in five minutes
  // (red team round 15, G7: 14 retries in 272 s held the start and its slot).
  if (text.includes('connection refused')) return 'unreachable';
  // A remote that cannot serve what the clone asks (a dumb-HTTP server and a shallow clone): retrying cannot help.
  if (text.includes('does not support shallow')) return 'unsupported';
  if (
    text.includes('could not resolve host') ||
    text.includes('could not resolve hostname') ||
    text.includes('name or service not known') ||
    text.includes('no address associated with hostname')
  ) {
    return 'unknown-host';
  }
  if (
    text.includes('authentication failed') ||
    text.includes('could not read username') ||
    text.includes('could not read password') ||
    text.includes('invalid username or password') ||
    text.includes('the requested url returned error: 401')
  ) {
    return 'auth';
  }
  if (
    text.includes('access denied') ||
    text.includes('permission denied') ||
    text.includes('the requested url returned error: 403') ||
    text.includes('repository not found') ||
    /repository '[^']*' not found/.test(text) ||
    text.includes('does not appear to be a git repository') ||
    text.includes('the requested url returned error: 404') ||
    // A transport we do not allow: retrying cannot help.
    text.includes('not allowed') ||
    // The operator's upstream proxy refused the tunnel (its rules or our credentials): neither changes in minutes.
    /upstream proxy \S+ answered "http\/1\.[01] 4\d\d/.test(text)
  ) {
    return 'access-denied';
  }
  return 'transient';
}
