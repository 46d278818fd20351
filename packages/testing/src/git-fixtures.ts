import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/**
 * One file in a fixture commit: text or bytes, `{ content, mode }` for an executable, `{ symlink }` for a
 * link, or `null` to delete the file in that commit.
 */
export type GitFileContent =
  | string
  | Uint8Array
  | { readonly content: string | Uint8Array; readonly mode?: number }
  | { readonly symlink: string }
  | null;

export type GitFiles = Readonly<Record<string, GitFileContent>>;

export interface GitCommitSpec {
  readonly files: GitFiles;
  readonly message?: string;
  /** Branch to commit on (created from the default branch's tip if new). Default: the default branch. */
  readonly branch?: string;
  /** Lightweight tag pointing at the new commit. */
  readonly tag?: string;
}

export interface GitBranchSpec {
  /** Branch to start from; default: the default branch. */
  readonly from?: string;
  /** Files committed on the new branch; without files the branch just points at `from`. */
  readonly files?: GitFiles;
  readonly message?: string;
}

export interface GitFixtureOptions {
  /** Repository name; the bare repo is `<root>/<name>.git`. Default `repo`. */
  readonly name?: string;
  /** Content of the first commit on the default branch. Default: a README. */
  readonly files?: GitFiles;
  /** Branches to create after the first commit, by name (an array creates plain branches at the tip). */
  readonly branches?: readonly string[] | Readonly<Record<string, GitBranchSpec>>;
  /** Further commits, applied in order after the branches. */
  readonly commits?: readonly GitCommitSpec[];
  /** Default `main`. */
  readonly defaultBranch?: string;
  /** Put the bare repo in this directory (e.g. to serve several fixtures from one root); default a temp dir. */
  readonly root?: string;
}

/** A real bare repository on disk, with a work tree used to add commits. */
export interface GitFixture {
  readonly name: string;
  /** Directory holding `<name>.git`; pass it to {@link startGitHttpServer} as `repoRoot`. */
  readonly root: string;
  /** Path of the bare repository. */
  readonly path: string;
  /** `file://…/<name>.git` */
  readonly url: string;
  readonly defaultBranch: string;
  /** Commit ids, oldest first, of every commit made through the fixture. */
  readonly commits: readonly string[];
  /** The tip commit of every branch the fixture made, by name. */
  readonly branches: Readonly<Record<string, string>>;
  readonly tags: Readonly<Record<string, string>>;
  /** The default branch's tip. */
  readonly head: string;
  /** Commits and pushes to the bare repo; returns the new commit id. */
  commit(spec: GitCommitSpec): Promise<string>;
  /** Runs git in the fixture's work tree (e.g. `['log', '--oneline']`); returns stdout. */
  git(args: readonly string[]): Promise<string>;
  cleanup(): Promise<void>;
}

/** Environment that isolates fixture git commands from the machine's and user's git config. */
export function isolatedGitEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_AUTHOR_NAME: 'Workbay Fixture',
    GIT_AUTHOR_EMAIL: 'fixture@workbay.invalid',
    GIT_COMMITTER_NAME: 'Workbay Fixture',
    GIT_COMMITTER_EMAIL: 'fixture@workbay.invalid',
    ...extra,
  };
}

async function runGit(cwd: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('git', [...args], {
      cwd,
      env: isolatedGitEnv(),
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`git ${args.join(' ')} failed in ${cwd}: ${e.stderr?.trim() || e.message}`, { cause: error });
  }
}

function writeFiles(workTree: string, files: GitFiles): void {
  for (const [relative, content] of Object.entries(files)) {
    const target = resolve(workTree, relative);
    if (!target.startsWith(workTree + sep)) throw new Error(`fixture file '${relative}' leaves the work tree`);
    if (content === null) {
      rmSync(target, { recursive: true, force: true });
      continue;
    }
    mkdirSync(dirname(target), { recursive: true });
    rmSync(target, { force: true });
    if (typeof content === 'string' || content instanceof Uint8Array) {
      writeFileSync(target, content);
    } else if ('symlink' in content) {
      symlinkSync(content.symlink, target);
    } else {
      writeFileSync(target, content.content);
      if (content.mode !== undefined) chmodSync(target, content.mode);
    }
  }
}

/**
 * Creates a real bare git repository (with real `git`) from a description of its files, branches and
 * commits, usable over `file://` or through {@link startGitHttpServer}.
 */
export async function createGitFixture(options: GitFixtureOptions = {}): Promise<GitFixture> {
  const name = options.name ?? 'repo';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new Error(`fixture name '${name}' is not a plain name`);
  const defaultBranch = options.defaultBranch ?? 'main';
  const ownRoot = options.root === undefined;
  const root = options.root ?? mkdtempSync(join(tmpdir(), 'workbay-git-'));
  mkdirSync(root, { recursive: true });
  // A root daemon clones as the workspace's host user: a file:// fixture must be readable by it.
  if (ownRoot) chmodSync(root, 0o755);
  const path = join(root, `${name}.git`);
  const workTree = mkdtempSync(join(tmpdir(), `workbay-git-work-${name}-`));

  await runGit(root, ['init', '--quiet', '--bare', `--initial-branch=${defaultBranch}`, path]);
  // Lets `git http-backend` serve it without `git-daemon-export-ok` and accept pushes from tests.
  await runGit(path, ['config', 'http.receivepack', 'true']);
  await runGit(workTree, ['init', '--quiet', `--initial-branch=${defaultBranch}`]);
  await runGit(workTree, ['remote', 'add', 'origin', path]);

  const commits: string[] = [];
  const branches: Record<string, string> = {};
  const tags: Record<string, string> = {};
  const git = (args: readonly string[]): Promise<string> => runGit(workTree, args);

  const commitOn = async (branch: string, files: GitFiles, message: string, from?: string): Promise<string> => {
    const current = (await git(['branch', '--show-current'])).trim();
    if (current !== branch) {
      const exists = branches[branch] !== undefined;
      await git(
        exists ? ['checkout', '--quiet', branch] : ['checkout', '--quiet', '-b', branch, from ?? defaultBranch],
      );
    }
    writeFiles(workTree, files);
    await git(['add', '--all']);
    await git(['commit', '--quiet', '--allow-empty', '-m', message]);
    const sha = (await git(['rev-parse', 'HEAD'])).trim();
    await git(['push', '--quiet', 'origin', `${branch}:refs/heads/${branch}`]);
    commits.push(sha);
    branches[branch] = sha;
    return sha;
  };

  await commitOn(defaultBranch, options.files ?? { 'README.md': `# ${name}\n` }, 'Initial commit');

  const branchSpecs: Record<string, GitBranchSpec> = Array.isArray(options.branches)
    ? Object.fromEntries((options.branches as readonly string[]).map((b) => [b, {}]))
    : { ...(options.branches as Record<string, GitBranchSpec> | undefined) };
  for (const [branch, spec] of Object.entries(branchSpecs)) {
    const from = spec.from ?? defaultBranch;
    if (spec.files) {
      await commitOn(branch, spec.files, spec.message ?? `Work on ${branch}`, from);
    } else {
      const tip = branches[from];
      if (!tip) throw new Error(`fixture branch '${branch}' starts from unknown branch '${from}'`);
      await git(['branch', branch, tip]);
      await git(['push', '--quiet', 'origin', `${branch}:refs/heads/${branch}`]);
      branches[branch] = tip;
    }
  }

  const commit = async (spec: GitCommitSpec): Promise<string> => {
    const sha = await commitOn(
      spec.branch ?? defaultBranch,
      spec.files,
      spec.message ?? `Commit ${commits.length + 1}`,
    );
    if (spec.tag) {
      await git(['tag', spec.tag, sha]);
      await git(['push', '--quiet', 'origin', `refs/tags/${spec.tag}`]);
      tags[spec.tag] = sha;
    }
    return sha;
  };
  for (const spec of options.commits ?? []) await commit(spec);

  return {
    name,
    root,
    path,
    url: pathToFileURL(path).href,
    defaultBranch,
    commits,
    branches,
    tags,
    get head() {
      return branches[defaultBranch]!;
    },
    commit,
    git,
    cleanup: async () => {
      rmSync(workTree, { recursive: true, force: true });
      rmSync(ownRoot ? root : path, { recursive: true, force: true });
    },
  };
}

export interface GitHttpServerOptions {
  /** Directory whose `<name>.git` repositories are served as `/<name>.git`. */
  readonly repoRoot: string;
  /** Require HTTP basic auth with these credentials for every request. */
  readonly auth?: { readonly user: string; readonly password: string };
  /** Default `/usr/lib/git-core/git-http-backend`. */
  readonly backendPath?: string;
}

export interface GitHttpServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** `http://127.0.0.1:<port>/<name>.git`, without credentials. */
  urlFor(repoName: string): string;
  /** Requests seen so far, with whether they were authorized (to assert that a client sent credentials). */
  readonly requests: readonly { readonly method: string; readonly path: string; readonly authorized: boolean }[];
  stop(): Promise<void>;
}

function checkBasicAuth(req: IncomingMessage, auth: { user: string; password: string }): boolean {
  const header = req.headers.authorization ?? '';
  const match = /^Basic\s+(.+)$/i.exec(header);
  if (!match) return false;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon >= 0 && decoded.slice(0, colon) === auth.user && decoded.slice(colon + 1) === auth.password;
}

/**
 * Serves the bare repositories under `repoRoot` over smart HTTP, by running `git http-backend` as a CGI
 * program behind a node:http server on 127.0.0.1:0, optionally behind basic auth.
 */
export async function startGitHttpServer(options: GitHttpServerOptions): Promise<GitHttpServer> {
  const backend = options.backendPath ?? '/usr/lib/git-core/git-http-backend';
  const requests: { method: string; path: string; authorized: boolean }[] = [];

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const authorized = options.auth ? checkBasicAuth(req, options.auth) : true;
    requests.push({ method: req.method ?? 'GET', path: url.pathname, authorized });
    if (!authorized) {
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="workbay-test"', 'Content-Type': 'text/plain' });
      res.end('authentication required\n');
      req.resume();
      return;
    }
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'],
      GIT_PROJECT_ROOT: options.repoRoot,
      GIT_HTTP_EXPORT_ALL: '1',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_PROTOCOL: 'HTTP/1.1',
      REQUEST_METHOD: req.method ?? 'GET',
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.replace(/^\?/, ''),
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
      // http-backend enables receive-pack (push) only for authenticated users.
      REMOTE_USER: options.auth?.user ?? 'anonymous',
    };
    if (req.headers['content-length']) env['CONTENT_LENGTH'] = req.headers['content-length'];
    if (req.headers['content-encoding']) env['HTTP_CONTENT_ENCODING'] = req.headers['content-encoding'];
    const protocol = req.headers['git-protocol'];
    if (typeof protocol === 'string') env['GIT_PROTOCOL'] = protocol;

    const child = spawn(backend, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
    });
    child.on('error', (error) => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(`git http-backend failed: ${error.message}\n`);
    });
    req.pipe(child.stdin);
    child.stdin.on('error', () => undefined);

    // CGI output: header lines, a blank line, then the body.
    let head = Buffer.alloc(0);
    let headersDone = false;
    child.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const crlf = head.indexOf('\r\n\r\n');
      const lf = head.indexOf('\n\n');
      const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf : lf;
      if (end < 0) return;
      const sepLength = end === crlf ? 4 : 2;
      headersDone = true;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, end).toString('latin1').split(/\r?\n/)) {
        const colon = line.indexOf(':');
        if (colon < 0) continue;
        const key = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (key.toLowerCase() === 'status') status = Number.parseInt(value, 10) || 200;
        else headers[key] = value;
      }
      res.writeHead(status, headers);
      const rest = head.subarray(end + sepLength);
      if (rest.length) res.write(rest);
    });
    child.on('close', (code) => {
      if (!headersDone) {
        if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(`git http-backend exited with ${code}: ${stderr}\n`);
        return;
      }
      res.end();
    });
  };

  const server = createServer(handle);
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolveListen());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    urlFor: (repoName) => `${url}/${repoName.endsWith('.git') ? repoName : `${repoName}.git`}`,
    requests,
    stop: () =>
      new Promise<void>((resolveClose) => {
        server.closeAllConnections();
        server.close(() => resolveClose());
      }),
  };
}
