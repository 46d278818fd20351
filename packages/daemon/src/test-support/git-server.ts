import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { GitInitializerSpec } from '../initializer/types.js';

const gitEnv = {
  ...process.env,
  GIT_AUTHOR_NAME: 'Test',
  GIT_AUTHOR_EMAIL: 'test@example.com',
  GIT_COMMITTER_NAME: 'Test',
  GIT_COMMITTER_EMAIL: 'test@example.com',
  GIT_CONFIG_NOSYSTEM: '1',
  // Tests look into content a root daemon gave to the workspace's host user.
  GIT_CONFIG_COUNT: '1',
  GIT_CONFIG_KEY_0: 'safe.directory',
  GIT_CONFIG_VALUE_0: '*',
};

export function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'init.defaultBranch=main', ...args], { cwd, env: gitEnv, encoding: 'utf8' }).trim();
}

export interface TestRepo {
  /** Path of the bare repository. */
  readonly bare: string;
  /** `file://` URL of the bare repository. */
  readonly url: string;
  /** Commit ids by name ('main', 'feature', 'first', ...). */
  readonly commits: Record<string, string>;
  /** Adds a commit to a branch of the bare repository and returns its id. */
  commit(branch: string, files: Record<string, string>, message?: string): Promise<string>;
}

/**
 * Creates a bare repository with `main` (two commits: `first` then `main`) and a `feature` branch, plus any
 * extra files given.
 */
export async function createRepo(root: string, name = 'repo', files: Record<string, string> = {}): Promise<TestRepo> {
  const work = join(root, `${name}-work`);
  const bare = join(root, `${name}.git`);
  await mkdir(work, { recursive: true });
  git(work, 'init', '-q', '-b', 'main');
  await writeFile(join(work, 'README.md'), '# first\n');
  git(work, 'add', '.');
  git(work, 'commit', '-q', '-m', 'first');
  const first = git(work, 'rev-parse', 'HEAD');
  for (const [path, content] of Object.entries({ 'README.md': '# hello\n', 'src/app.txt': 'app\n', ...files })) {
    await mkdir(dirname(join(work, path)), { recursive: true });
    await writeFile(join(work, path), content);
  }
  git(work, 'add', '.');
  git(work, 'commit', '-q', '-m', 'second');
  const main = git(work, 'rev-parse', 'HEAD');
  git(work, 'checkout', '-q', '-b', 'feature');
  await writeFile(join(work, 'feature.txt'), 'feature\n');
  git(work, 'add', '.');
  git(work, 'commit', '-q', '-m', 'feature work');
  const feature = git(work, 'rev-parse', 'HEAD');
  git(work, 'checkout', '-q', 'main');
  git(root, 'clone', '-q', '--bare', work, bare);
  git(bare, 'config', 'uploadpack.allowAnySHA1InWant', 'true');
  git(bare, 'config', 'http.receivepack', 'true');
  const commits: Record<string, string> = { first, main, feature };
  return {
    bare,
    url: `file://${bare}`,
    commits,
    async commit(branch, newFiles, message = 'more work') {
      git(work, 'checkout', '-q', branch);
      for (const [path, content] of Object.entries(newFiles)) {
        await mkdir(dirname(join(work, path)), { recursive: true });
        await writeFile(join(work, path), content);
      }
      git(work, 'add', '.');
      git(work, 'commit', '-q', '-m', message);
      const id = git(work, 'rev-parse', 'HEAD');
      git(work, 'push', '-q', bare, `${branch}:${branch}`);
      git(work, 'checkout', '-q', 'main');
      commits[branch] = id;
      return id;
    },
  };
}

export interface GitHttpServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** Requests answered 401 so far. */
  readonly unauthorized: number;
  /** Requests that got through to git http-backend. */
  readonly served: number;
  /** Authorization headers seen (to check that no credentials leak elsewhere). */
  readonly seenAuthorization: string[];
  /** Makes the next `count` requests fail with 503 (transient errors for retry tests). */
  failNext(count: number): void;
  close(): Promise<void>;
}

/**
 * `git http-backend` (smart HTTP) behind a small Node server on 127.0.0.1:0, with basic auth when
 * credentials are given. Repositories are served from `projectRoot`.
 */
export async function startGitHttpServer(
  projectRoot: string,
  auth?: { username: string; password: string },
): Promise<GitHttpServer> {
  let unauthorized = 0;
  let served = 0;
  let failures = 0;
  const seenAuthorization: string[] = [];
  const expected = auth ? `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}` : undefined;
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    if (failures > 0) {
      failures--;
      res.writeHead(503).end('try again later');
      return;
    }
    const header = req.headers.authorization;
    if (header) seenAuthorization.push(header);
    if (expected && header !== expected) {
      unauthorized++;
      res.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end('unauthorized');
      return;
    }
    served++;
    const url = new URL(req.url ?? '/', 'http://localhost');
    const child = spawn('git', ['http-backend'], {
      env: {
        ...process.env,
        GIT_PROJECT_ROOT: projectRoot,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: decodeURIComponent(url.pathname),
        QUERY_STRING: url.search.slice(1),
        REQUEST_METHOD: req.method ?? 'GET',
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        REMOTE_USER: auth?.username ?? '',
        REMOTE_ADDR: '127.0.0.1',
        GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
        HTTP_CONTENT_ENCODING: String(req.headers['content-encoding'] ?? ''),
      },
    });
    req.pipe(child.stdin);
    let buffer = Buffer.alloc(0);
    let headersDone = false;
    child.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      headersDone = true;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of buffer.subarray(0, end).toString().split('\r\n')) {
        const colon = line.indexOf(':');
        const key = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (key.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
        else headers[key] = value;
      }
      res.writeHead(status, headers);
      res.write(buffer.subarray(end + 4));
    });
    child.on('close', () => res.end());
  };
  const server: Server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get unauthorized() {
      return unauthorized;
    },
    get served() {
      return served;
    },
    seenAuthorization,
    failNext(count: number) {
      failures = count;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A one-time-secret endpoint: answers `user:password` to the first GET, 404 afterwards. */
export async function startOtsServer(
  secret: string,
): Promise<{ url: string; fetches: () => number; close: () => Promise<void> }> {
  let fetches = 0;
  const server = createServer((req, res) => {
    fetches++;
    if (fetches > 1) {
      res.writeHead(404).end('secret already used');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(secret);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/ots/abc`,
    fetches: () => fetches,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export async function scratch(prefix = 'workbay-git-'): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  // A root daemon clones as the workspace's host user: file:// repositories in here must be readable by it.
  await chmod(path, 0o755);
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

export interface CountingListener {
  readonly host: string;
  readonly port: number;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

/**
 * A TCP listener that counts the connections it gets and ends each at once: a loopback-only service that a refused
 * git connection must never reach (`port` 0: any free port).
 */
export async function startCountingListener(host: string, port = 0): Promise<CountingListener> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    host,
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A git initializer of `remoteUri` with nothing else asked: the remote's head, shallow, no auth. */
export function plainGitInitializer(remoteUri: string): GitInitializerSpec {
  return {
    remoteUri,
    upstreamRemoteUri: '',
    targetMode: 'remote-head',
    cloneTarget: '',
    checkoutLocation: 'project',
    fullClone: false,
    customConfig: {},
    auth: { method: 'none' },
  };
}

/**
 * A git smart-HTTP "remote" that never finishes: its advertisement head, then `bytes` bytes every `everyMs`, for
 * ever (red team round 12's tarpit, G2). Listening on 127.0.0.1; the URL names a repository under it.
 */
export async function startGitTarpit(
  bytes: number,
  everyMs: number,
): Promise<{ readonly url: string; readonly server: Server; readonly close: () => void }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/x-git-upload-pack-advertisement' });
    const timer = setInterval(() => res.write(Buffer.alloc(bytes, 0x30)), everyMs);
    res.on('close', () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/evil.git`,
    server,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** Live (not zombie) processes of this machine whose command line contains `text`. */
export function processesNaming(text: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (cmdline.includes(text) && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') found.push(`${entry} ${cmdline}`);
    } catch {
      // Deliberate: the process ended while we looked.
    }
  }
  return found;
}
