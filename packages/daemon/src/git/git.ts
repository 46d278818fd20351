/**
 * The daemon's only way to run git (invariant 8: nothing a request or content chooses runs on the node).
 *
 * Every invocation gets a fixed, safe environment: no system or user config, an empty private HOME, no prompts,
 * only the allowed transports (GIT_ALLOW_PROTOCOL), and command-scope config that switches off everything in git
 * that runs a program (see config-guard.ts). On an existing working copy it first checks that `.git` is a real
 * directory inside the content (working-copy.ts), reads the repository's effective config (reading config runs
 * nothing) and neutralises every command-bearing key it finds, or refuses. When the daemon is root, git runs as
 * the workspace's host user: the content directory's owner, or the user the caller names.
 *
 * Credentials never appear on a command line, in a remote URL written to `.git/config`, or in an error message:
 * a GIT_ASKPASS helper in a per-call directory (owned by the user git runs as, removed afterwards) reads them
 * from the environment of that one git process, and every message is scrubbed of them. The helper answers only
 * prompts for the host of the URL the command names (see credentialOrigins), and a command that may talk to a
 * remote never runs on content whose config rewrites remote URLs; proxies, extra headers, TLS settings and the
 * like of the content are overridden for every command (config-guard.ts).
 *
 * Every command connects only through an egress proxy of its own (egress-proxy.ts), which refuses the addresses
 * the daemon's address policy refuses (`git.allowPrivateAddresses`, `git.allowedNetworks`): for https, http, ssh
 * and git://, every redirect hop and every submodule. A refusal is reported as such ({@link GitAddressRefusedError}),
 * not as whatever git made of the proxy's 403.
 */
import { chown, lstat, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { GitAddressRefusedError } from '../errors.js';
import type { RunResult } from '../util/process.js';
import type { ConfigEntry, ConfigPair, NeutraliseOptions } from './config-guard.js';
import {
  UnsafeRepositoryError,
  configEnv,
  fixedConfig,
  neutralise,
  neutraliseFile,
  parseConfigList,
} from './config-guard.js';
import type { EgressSession } from './egress-connect.js';
import { curlProxyEnv, startEgress } from './egress-connect.js';
import type { EgressRefusal } from './egress-proxy.js';
import type { GitCredentials } from './git-errors.js';
import { GitCommandError, redactSecrets } from './git-errors.js';
import type { GitPolicy } from './git-policy.js';
import { allowedProtocols, defaultGitPolicy } from './git-policy.js';
import type { GitUser, SpawnPlan } from './git-spawn.js';
import { passwdWith, spawnGit } from './git-spawn.js';
import type { WorkingCopy } from './working-copy.js';
import { inspectWorkingCopy, maxGitConfigBytes, moduleGitDirs } from './working-copy.js';
import { askpassScript, credentialOrigins, gitSubcommand, remoteCommands } from './git-remotes.js';

// The error helpers live in git-errors.ts; callers import them from here as before.
export {
  GitCommandError,
  classifyGitFailure,
  gitFailureLine,
  redactSecrets,
  stripUrlCredentials,
} from './git-errors.js';
export type { GitCredentials, GitFailureKind } from './git-errors.js';
export { credentialOrigins, gitSubcommand } from './git-remotes.js';

export type { GitUser } from './git-spawn.js';

export interface GitRunOptions {
  /**
   * The working copy the command works on (existing content: checked, its config neutralised, passed to git as
   * --git-dir/--work-tree). Undefined: the command works on no repository (clone, ls-remote of a URL) and runs in
   * an empty private directory.
   */
  readonly cwd?: string;
  /**
   * `cwd` is an empty directory a command (clone) creates a repository in: not inspected, and git looks for no
   * repository above it.
   */
  readonly newRepository?: boolean;
  /** The workspace's content directory: `cwd` must be inside it, and its owner is who git runs as (if root). */
  readonly contentRoot?: string;
  /** Run as this user (daemon root only); default: the owner of `contentRoot` when that is not root. */
  readonly user?: GitUser;
  readonly credentials?: GitCredentials;
  readonly signal?: AbortSignal;
  /** Kill git after this long (default: never; the config scan always has the policy's local timeout). */
  readonly timeoutMs?: number;
  /** Extra environment (e.g. GIT_SSL_* from the daemon's own environment). */
  readonly env?: Readonly<Record<string, string>>;
  /** The request field the command's remote came from, named by a refused address's error. Default `git remote`. */
  readonly field?: string;
}

/** A git command's outcome, with what its egress proxy refused. */
export interface GitRunResult extends RunResult {
  readonly refused: readonly EgressRefusal[];
}

// The operator's own settings for git (CA bundles, an ssh or proxy command, tracing) stay; every other GIT_*
// variable could point git at other repositories, config or programs.
const keptGitEnv = /^GIT_(SSL_|SSH$|SSH_COMMAND$|SSH_VARIANT$|PROXY_COMMAND$|HTTP_|CURL_|TRACE)/;
const scrubbedEnv = ['SSH_ASKPASS', 'EDITOR', 'VISUAL', 'PAGER', 'LESSOPEN', 'LESSCLOSE'];

/** Output cap for the config scan: a larger config is refused rather than read in part. */
const maxConfigBytes = maxGitConfigBytes;

interface Scratch {
  readonly dir: string;
  readonly home: string;
  readonly globalConfig: string;
  readonly askpass?: string;
  readonly passwd?: string;
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Runs git; rejects with a GitCommandError (secrets redacted) on a non-zero exit. */
export class Git {
  readonly policy: GitPolicy;

  private readonly hiddenDirs: readonly string[];

  /**
   * `tempDir` holds per-call directories when git runs as the daemon's own user. `hiddenDirs` (the working area)
   * are covered for git running as a workspace's user (see SpawnPlan.hide), except one that holds the per-call
   * directories of that user (the system temp dir below the working area), which git must reach.
   */
  constructor(
    private readonly tempDir: string,
    policy: Partial<GitPolicy> = {},
    hiddenDirs: readonly string[] = [],
  ) {
    this.policy = { ...defaultGitPolicy, ...policy };
    const userScratch = resolve(tmpdir());
    this.hiddenDirs = hiddenDirs.map((dir) => resolve(dir)).filter((dir) => !isWithin(userScratch, dir));
  }

  /** Nothing is kept between calls; kept for callers that dispose their Git. */
  async dispose(): Promise<void> {}

  /** Who git runs as: a different user only when the daemon is root and that user is not root. */
  private async userFor(options: GitRunOptions): Promise<GitUser | undefined> {
    if (!isRoot()) return undefined;
    let user = options.user;
    if (!user && options.contentRoot) {
      const info = await lstat(options.contentRoot);
      user = { uid: info.uid, gid: info.gid };
    }
    return user && user.uid !== 0 ? user : undefined;
  }

  /** A private directory for one call: HOME, the askpass helper; owned by the user git runs as. */
  private async scratch(user: GitUser | undefined, credentials: GitCredentials | undefined): Promise<Scratch> {
    // Another user cannot traverse the daemon's private temp dir; the system one is fine (mkdtemp is 0700).
    const base = user ? tmpdir() : this.tempDir;
    await mkdir(base, { recursive: true, mode: 0o700 });
    const dir = await mkdtemp(join(base, 'workbay-git-'));
    const home = join(dir, 'home');
    await mkdir(home, { mode: 0o700 });
    // The "global" config: empty, except that local remotes (the operator's choice, git.allowLocalRemotes) belong
    // to another user than the one git runs as, and upload-pack, which does not get our command-scope config,
    // would refuse them as of "dubious ownership".
    const globalConfig = join(dir, 'gitconfig');
    await writeFile(globalConfig, this.policy.allowLocalRemotes ? '[safe]\n\tdirectory = *\n' : '', { mode: 0o600 });
    let askpass: string | undefined;
    if (credentials) {
      askpass = join(dir, 'askpass.sh');
      await writeFile(askpass, askpassScript, { mode: 0o700 });
    }
    let passwd: string | undefined;
    if (user) {
      for (const path of [dir, home, globalConfig, ...(askpass ? [askpass] : [])])
        await chown(path, user.uid, user.gid);
      passwd = join(dir, 'passwd');
      await writeFile(passwd, await passwdWith(user, home), { mode: 0o644 });
    }
    return { dir, home, globalConfig, ...(askpass ? { askpass } : {}), ...(passwd ? { passwd } : {}) };
  }

  private environment(
    options: GitRunOptions,
    scratch: Scratch,
    config: readonly ConfigPair[],
    origins: readonly string[] = [],
    egress?: EgressSession,
  ): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries({ ...process.env, ...options.env })) {
      if (key.startsWith('GIT_') && !keptGitEnv.test(key)) continue;
      if (scrubbedEnv.includes(key) || key.startsWith('WORKBAY_GIT_')) continue;
      // libcurl's proxy variables, NO_PROXY above all (honoured even with a configured proxy): see egress-connect.ts.
      if (curlProxyEnv.has(key)) continue;
      env[key] = value;
    }
    Object.assign(env, {
      HOME: scratch.home,
      XDG_CONFIG_HOME: join(scratch.home, '.config'),
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_SYSTEM: '/dev/null',
      GIT_CONFIG_GLOBAL: scratch.globalConfig,
      GIT_ATTR_NOSYSTEM: '1',
      GIT_TERMINAL_PROMPT: '0',
      // Read before any config: only these transports, whatever protocol.<name>.allow a repository sets.
      GIT_ALLOW_PROTOCOL: allowedProtocols(this.policy).join(':'),
      // Non-empty askpass is ours; empty means "none" and keeps git from core.askPass and SSH_ASKPASS.
      GIT_ASKPASS: scratch.askpass ?? '',
      SSH_ASKPASS_REQUIRE: 'never',
      GIT_PAGER: 'cat',
      PAGER: 'cat',
      GIT_EDITOR: ':',
      GIT_SEQUENCE_EDITOR: ':',
      // The daemon's own commits (a prebuild's stash) need an identity; never the user's.
      GIT_AUTHOR_NAME: 'Workbay daemon',
      GIT_AUTHOR_EMAIL: 'daemon@workbay.invalid',
      GIT_COMMITTER_NAME: 'Workbay daemon',
      GIT_COMMITTER_EMAIL: 'daemon@workbay.invalid',
      LC_ALL: 'C',
      ...configEnv(config),
    });
    // core.gitProxy is first-match-wins (a command-scope value cannot beat the repository's); an empty
    // GIT_PROXY_COMMAND makes git ignore the config altogether. Likewise GIT_SSH_COMMAND beats core.sshCommand.
    if (env['GIT_PROXY_COMMAND'] === undefined) env['GIT_PROXY_COMMAND'] = '';
    if (env['GIT_SSH_COMMAND'] === undefined && env['GIT_SSH'] === undefined) env['GIT_SSH_COMMAND'] = 'ssh';
    if (egress) {
      // The operator's ssh or proxy command would connect around the egress proxy: git uses ours.
      delete env['GIT_SSH'];
      Object.assign(env, egress.env);
    }
    if (options.credentials) {
      env['WORKBAY_GIT_USERNAME'] = options.credentials.username;
      env['WORKBAY_GIT_PASSWORD'] = options.credentials.password;
      env['WORKBAY_GIT_ORIGINS'] = origins.join(' ');
    }
    return env;
  }

  /**
   * Reads a repository's effective config and returns the overrides that neutralise it (or throws), and the URL
   * of its `origin` remote (local scope).
   */
  private async neutraliser(
    gitDirArgs: readonly string[],
    workingCopy: WorkingCopy,
    visibleRoot: string,
    run: SpawnPlan,
    options: GitRunOptions,
    neutraliseOptions: NeutraliseOptions,
  ): Promise<{ overrides: ConfigPair[]; originUrl?: string }> {
    const location = workingCopy.workTree;
    const read = async (args: string[], withScope: boolean, what: string): Promise<ConfigEntry[]> => {
      const result = await spawnGit([...gitDirArgs, ...args], options, {
        ...run,
        timeoutMs: this.policy.localCommandTimeoutMs,
        maxOutputBytes: maxConfigBytes,
      });
      if (result.code !== 0)
        throw new UnsafeRepositoryError(location, `git cannot read ${what}: ${result.stderr.trim().slice(0, 200)}`);
      if (Buffer.byteLength(result.stdout) >= maxConfigBytes)
        throw new UnsafeRepositoryError(location, `${what} is larger than ${maxConfigBytes} bytes`);
      return parseConfigList(result.stdout, withScope);
    };
    // In the repository's own context, includes (and their conditions) resolve exactly as for the command.
    const entries = await read(['config', '--list', '--show-scope', '--includes', '-z'], true, 'its config');
    const overrides = neutralise(entries, this.policy, location, neutraliseOptions);
    // The first, as git takes it (a second one is refused above for anything that may talk to a remote).
    const originUrl = entries.find((e) => e.scope === 'local' && e.key.toLowerCase() === 'remote.origin.url')?.value;
    for (const module of await moduleGitDirs(workingCopy.gitDir, location)) {
      const visible = join(visibleRoot, relative(workingCopy.workTree, module), 'config');
      const entries = await read(
        ['config', '--file', visible, '--no-includes', '--list', '-z'],
        false,
        'a submodule config',
      );
      overrides.push(...neutraliseFile(entries, this.policy, location, neutraliseOptions));
    }
    return { overrides, ...(originUrl !== undefined ? { originUrl } : {}) };
  }

  /**
   * Runs git and returns the raw result, never throwing for a non-zero exit. Throws UnsafeRepositoryError
   * (FAILED_PRECONDITION) when `cwd` is a working copy git must not run on.
   */
  async tryRun(args: readonly string[], options: GitRunOptions): Promise<GitRunResult> {
    let workingCopy: WorkingCopy | undefined;
    if (options.cwd !== undefined && !options.newRepository) {
      workingCopy = await inspectWorkingCopy(options.cwd, options.contentRoot);
      if (!workingCopy)
        return {
          code: 128,
          signal: null,
          stdout: '',
          stderr: `fatal: not a git repository: ${options.cwd}\n`,
          refused: [],
        };
    }
    const user = await this.userFor(options);
    const scratch = await this.scratch(user, options.credentials);
    // A command that may talk to a remote must not be redirected by the repository's config (see neutralise).
    const remote = options.credentials !== undefined || remoteCommands.has(gitSubcommand(args) ?? '');
    let egress: EgressSession | undefined;
    try {
      // Every command connects only through an egress proxy of its own, local ones too: in a partial clone (content
      // restored from a prebuild may be one) checkout and status fetch missing objects from the promisor remote the
      // content names. About a millisecond per command.
      egress = await startEgress(this.policy.addresses, scratch.dir, user);
      const config: ConfigPair[] = [...fixedConfig(this.policy), ...egress.config];
      let mount: SpawnPlan['mount'];
      let visibleRoot: string | undefined = options.cwd;
      if (options.cwd !== undefined && user) {
        mount = { source: options.cwd, target: join(scratch.dir, 'wc') };
        await mkdir(mount.target);
        visibleRoot = mount.target;
      }
      const plan = (env: NodeJS.ProcessEnv): SpawnPlan => ({
        cwd: visibleRoot ?? scratch.dir,
        scratch: scratch.dir,
        env,
        user,
        ...(mount ? { mount } : {}),
        ...(scratch.passwd ? { passwd: scratch.passwd } : {}),
        ...(user ? { maxDataBytes: this.policy.maxMemoryBytes, hide: this.hiddenDirs } : {}),
      });
      let gitDirArgs: string[] = [];
      if (visibleRoot !== undefined) {
        // Ownership is ours to check (we run as the owner); git's own check must not refuse a root daemon.
        config.push(['safe.directory', visibleRoot]);
      }
      const extraEnv: Record<string, string> = {};
      // A new repository: git must not find (and read the config of) one in the directories above.
      if (options.newRepository && visibleRoot !== undefined)
        extraEnv['GIT_CEILING_DIRECTORIES'] = dirname(visibleRoot);
      let originUrl: string | undefined;
      if (workingCopy && visibleRoot !== undefined) {
        const gitDir = join(visibleRoot, '.git');
        // Explicit paths: no discovery upwards, and core.worktree of the repository cannot move the work tree.
        gitDirArgs = [`--git-dir=${gitDir}`, `--work-tree=${visibleRoot}`];
        config.push(['safe.directory', gitDir]);
        // `git config` never prompts; were it to, the scan's askpass answers nobody (no origins).
        const scanPlan = plan({ ...this.environment(options, scratch, config), ...extraEnv });
        const scanned = await this.neutraliser(gitDirArgs, workingCopy, visibleRoot, scanPlan, options, {
          remote,
          proxy: egress.proxy.url,
        });
        config.push(...scanned.overrides);
        originUrl = scanned.originUrl;
      }
      const origins = options.credentials ? credentialOrigins(args, originUrl) : [];
      const result = await spawnGit([...gitDirArgs, ...args], options, {
        ...plan({ ...this.environment(options, scratch, config, origins, egress), ...extraEnv }),
        // A command that may talk to a remote gets a deadline of its own when the caller set none (G2).
        ...(options.timeoutMs !== undefined
          ? { timeoutMs: options.timeoutMs }
          : remote
            ? { timeoutMs: this.policy.networkCommandTimeoutMs }
            : {}),
      });
      const secrets = [options.credentials?.password, options.credentials?.username, egress?.proxy.secret];
      let stderr = redactSecrets(result.stderr, secrets);
      // Git saw the proxy's answer, not the name: say what failed as git would have (classifyGitFailure).
      const unresolved = egress?.proxy.unresolved ?? [];
      if (result.code !== 0 && unresolved.length > 0)
        stderr = `fatal: Could not resolve host: ${unresolved.join(', ')}\n${stderr}`;
      // Likewise a target that refused the connection: git saw a 502, which it would retry (G7).
      const refusedConnections = egress?.proxy.connectionRefused ?? [];
      if (result.code !== 0 && refusedConnections.length > 0)
        stderr = `fatal: Failed to connect to ${refusedConnections.join(', ')}: Connection refused\n${stderr}`;
      // Likewise what the upstream proxy said: git only saw the egress proxy's 502.
      const upstream = egress?.proxy.upstreamFailures ?? [];
      if (result.code !== 0 && upstream.length > 0) stderr = `fatal: ${upstream.join('\nfatal: ')}\n${stderr}`;
      return { ...result, stderr, refused: [...(egress?.proxy.refusals ?? [])] };
    } finally {
      await egress?.proxy.close();
      await rm(scratch.dir, { recursive: true, force: true });
    }
  }

  /**
   * Runs git and returns its stdout. A non-zero exit is a GitCommandError, or a GitAddressRefusedError (naming
   * `options.field`) when the egress proxy refused a connection of the command.
   */
  async run(args: readonly string[], options: GitRunOptions): Promise<string> {
    const result = await this.tryRun(args, options);
    if (result.code !== 0) {
      const cause = new GitCommandError(args, result.code, result.stderr);
      throw refusalError(result, options.field, cause) ?? cause;
    }
    return result.stdout;
  }
}

/** The error for a command that failed having been refused a connection (the first refusal), else undefined. */
export function refusalError(
  result: GitRunResult,
  field = 'git remote',
  cause?: unknown,
): GitAddressRefusedError | undefined {
  const first = result.refused[0];
  if (result.code === 0 || !first) return undefined;
  return new GitAddressRefusedError(field, first.target, first.kind, cause === undefined ? undefined : { cause });
}

/** Whether `path` is `dir` or lies below it (both resolved). */
function isWithin(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}
