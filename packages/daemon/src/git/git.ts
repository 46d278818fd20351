/**
 * A thin layer over the real `git` CLI. Credentials never appear on a command line, in a remote URL written to
 * `.git/config`, or in an error message: they reach git through a GIT_ASKPASS helper that reads them from the
 * environment of that one git process, and every message is scrubbed of them before it leaves this module.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InternalError } from '../errors.js';
import { runProcess } from '../util/process.js';
import type { RunResult } from '../util/process.js';

export interface GitCredentials {
  readonly username: string;
  readonly password: string;
}

export interface GitRunOptions {
  readonly cwd: string;
  readonly credentials?: GitCredentials;
  readonly signal?: AbortSignal;
  /** Extra environment (e.g. GIT_SSL_* from the daemon's own environment). */
  readonly env?: Readonly<Record<string, string>>;
}

export class GitCommandError extends InternalError {
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(
      `git ${args[0] ?? ''} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`,
    );
  }
}

// Environment variables that would make git read user or system config we do not control.
const scrubbedEnv = [
  'GIT_DIR',
  'GIT_WORK_TREE',
  'GIT_INDEX_FILE',
  'GIT_CONFIG',
  'GIT_CONFIG_PARAMETERS',
  'GIT_ASKPASS',
  'SSH_ASKPASS',
];

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
    return { url };
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || (!parsed.username && !parsed.password))
    return { url };
  const credentials = { username: decodeURIComponent(parsed.username), password: decodeURIComponent(parsed.password) };
  parsed.username = '';
  parsed.password = '';
  return { url: parsed.toString(), credentials };
}

const askpassScript = `#!/bin/sh
# Answers git's credential prompts from the environment of this git process only.
case "$1" in
  Username*) printf '%s\\n' "$WORKBAY_GIT_USERNAME" ;;
  *) printf '%s\\n' "$WORKBAY_GIT_PASSWORD" ;;
esac
`;

/** Runs git; rejects with a GitCommandError (secrets redacted) on a non-zero exit. */
export class Git {
  private askpassDir: Promise<string> | undefined;

  constructor(private readonly tempDir: string) {}

  private askpass(): Promise<string> {
    this.askpassDir ??= (async () => {
      const dir = await mkdtemp(join(this.tempDir, 'askpass-'));
      await writeFile(join(dir, 'askpass.sh'), askpassScript, { mode: 0o700 });
      return dir;
    })();
    return this.askpassDir;
  }

  async dispose(): Promise<void> {
    if (!this.askpassDir) return;
    const dir = await this.askpassDir.catch(() => undefined);
    this.askpassDir = undefined;
    if (dir) await rm(dir, { recursive: true, force: true });
  }

  async env(options: GitRunOptions): Promise<NodeJS.ProcessEnv> {
    const env: NodeJS.ProcessEnv = { ...process.env, ...options.env };
    for (const key of scrubbedEnv) delete env[key];
    env['GIT_TERMINAL_PROMPT'] = '0';
    // The node's system and user git config (insteadOf rules, helpers, hooks paths) must not change what a
    // workspace gets; the repository's own config still applies.
    env['GIT_CONFIG_NOSYSTEM'] = '1';
    env['GIT_CONFIG_GLOBAL'] = '/dev/null';
    // The daemon's own commits (a prebuild's stash) need an identity; never the user's.
    env['GIT_AUTHOR_NAME'] = 'Workbay daemon';
    env['GIT_AUTHOR_EMAIL'] = 'daemon@workbay.invalid';
    env['GIT_COMMITTER_NAME'] = 'Workbay daemon';
    env['GIT_COMMITTER_EMAIL'] = 'daemon@workbay.invalid';
    env['LC_ALL'] = 'C';
    if (options.credentials) {
      env['GIT_ASKPASS'] = join(await this.askpass(), 'askpass.sh');
      env['WORKBAY_GIT_USERNAME'] = options.credentials.username;
      env['WORKBAY_GIT_PASSWORD'] = options.credentials.password;
    }
    return env;
  }

  /** Runs git and returns the raw result, never throwing for a non-zero exit. */
  async tryRun(args: readonly string[], options: GitRunOptions): Promise<RunResult> {
    // credential.helper= disables helpers configured on the host: nothing gets stored anywhere.
    const fullArgs = ['-c', 'credential.helper=', ...args];
    const result = await runProcess('git', fullArgs, {
      cwd: options.cwd,
      env: await this.env(options),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const secrets = [options.credentials?.password, options.credentials?.username];
    return { ...result, stdout: result.stdout, stderr: redactSecrets(result.stderr, secrets) };
  }

  async run(args: readonly string[], options: GitRunOptions): Promise<string> {
    const result = await this.tryRun(args, options);
    if (result.code !== 0) throw new GitCommandError(args, result.code, result.stderr);
    return result.stdout;
  }
}

/** What kind of failure a git error is: retrying helps only for `transient`. */
export type GitFailureKind = 'auth' | 'access-denied' | 'transient';

export function classifyGitFailure(stderr: string): GitFailureKind {
  const text = stderr.toLowerCase();
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
    text.includes('the requested url returned error: 404')
  ) {
    return 'access-denied';
  }
  return 'transient';
}
