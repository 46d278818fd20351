/**
 * TEST ONLY: real Git repositories served over smart HTTP on 127.0.0.1:0 (`git http-backend` as CGI), optionally
 * behind basic auth, plus a one-time-secret endpoint (`/ots/<name>` answers `user:password` once) and a file
 * endpoint (`/files/<name>?token=<t>`) for download initializers. The manager cannot depend on @workbay/testing (it depends
 * on the manager), hence this small copy of the idea.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export interface TestGitServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** Clone URL of a repository made by {@link TestGitServer.createRepo}. */
  urlFor(name: string): string;
  /** A bare repository `<name>.git` with one commit of `files` (a `{ symlink }` value makes a link). */
  createRepo(name: string, files: Record<string, string | { symlink: string }>): Promise<void>;
  /** Serves `credentials` once at `/ots/<name>`. */
  addOneTimeSecret(name: string, credentials: string): string;
  /** Serves `body` at `/files/<name>?token=<token>` (only with that token); returns the URL. */
  addFile(name: string, body: string, token: string): string;
  close(): Promise<void>;
}

function authorized(req: IncomingMessage, auth?: { user: string; password: string }): boolean {
  if (!auth) return true;
  const match = /^Basic\s+(.+)$/i.exec(req.headers.authorization ?? '');
  return match !== null && Buffer.from(match[1]!, 'base64').toString('utf8') === `${auth.user}:${auth.password}`;
}

export async function startTestGitServer(auth?: { user: string; password: string }): Promise<TestGitServer> {
  const root = await mkdtemp(join(tmpdir(), 'workbay-git-http-'));
  const secrets = new Map<string, string>();
  const files = new Map<string, { body: string; token: string }>();
  const cgi = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    const child = spawn('git', ['http-backend'], {
      env: {
        PATH: process.env['PATH'],
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        GIT_CONFIG_NOSYSTEM: '1',
        GIT_CONFIG_GLOBAL: '/dev/null',
        REQUEST_METHOD: req.method ?? 'GET',
        PATH_INFO: url.pathname,
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        ...(req.headers['content-length'] ? { CONTENT_LENGTH: req.headers['content-length'] } : {}),
        ...(typeof req.headers['git-protocol'] === 'string' ? { GIT_PROTOCOL: req.headers['git-protocol'] } : {}),
        REMOTE_USER: auth?.user ?? 'anonymous',
        REMOTE_ADDR: '127.0.0.1',
      },
    });
    req.pipe(child.stdin);
    child.stdin.on('error', () => undefined);
    let head: Buffer | undefined = Buffer.alloc(0);
    child.stdout.on('data', (chunk: Buffer) => {
      if (!head) return void res.write(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      let code = 200;
      for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
        const [name, ...rest] = line.split(':');
        const value = rest.join(':').trim();
        if (name!.toLowerCase() === 'status') code = Number.parseInt(value, 10);
        else res.setHeader(name!, value);
      }
      res.writeHead(code);
      res.write(head.subarray(end + 4));
      head = undefined;
    });
    child.stdout.on('end', () => res.end());
  };
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname.startsWith('/ots/')) {
      const value = secrets.get(url.pathname.slice(5));
      secrets.delete(url.pathname.slice(5));
      res.writeHead(value === undefined ? 404 : 200).end(value ?? 'gone');
      return;
    }
    if (url.pathname.startsWith('/files/')) {
      const file = files.get(url.pathname.slice(7));
      const ok = file !== undefined && url.searchParams.get('token') === file.token;
      res.writeHead(ok ? 200 : 404).end(ok ? file.body : 'not found');
      return;
    }
    if (!authorized(req, auth)) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' }).end('authentication required\n');
      req.resume();
      return;
    }
    cgi(req, res, url);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    url: base,
    urlFor: (name) => `${base}/${name}.git`,
    async createRepo(name, content) {
      const work = join(root, `${name}-work`);
      await mkdir(work, { recursive: true });
      const git = (...args: string[]): void => {
        execFileSync('git', ['-C', work, '-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], {
          stdio: 'ignore',
          env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' },
        });
      };
      git('init', '--quiet', '--initial-branch=main');
      for (const [path, value] of Object.entries(content)) {
        await mkdir(dirname(join(work, path)), { recursive: true });
        if (typeof value === 'string') await writeFile(join(work, path), value);
        else await symlink(value.symlink, join(work, path));
      }
      git('add', '-A');
      git('commit', '--quiet', '-m', 'initial');
      git('clone', '--quiet', '--bare', work, join(root, `${name}.git`));
    },
    addOneTimeSecret(name, credentials) {
      secrets.set(name, credentials);
      return `${base}/ots/${name}`;
    },
    addFile(name, body, token) {
      files.set(name, { body, token });
      return `${base}/files/${name}?token=${token}`;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(root, { recursive: true, force: true });
    },
  };
}
