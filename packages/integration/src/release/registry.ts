/**
 * A real npm registry for release tests: Verdaccio on 127.0.0.1, our packages published to it, everything else
 * proxied from the public registry. Used by publish.spec.ts.
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { runServer } from 'verdaccio';

export interface LocalRegistry {
  readonly url: string;
  /** An npmrc that points npm at the registry with a publish token. */
  readonly npmrc: string;
  close(): Promise<void>;
}

export async function startLocalRegistry(dir: string): Promise<LocalRegistry> {
  await mkdir(join(dir, 'storage'), { recursive: true });
  const server = (await runServer({
    self_path: `${dir}/`,
    storage: join(dir, 'storage'),
    auth: { htpasswd: { file: join(dir, 'htpasswd'), max_users: 10 } },
    uplinks: { npmjs: { url: 'https://registry.npmjs.org/', timeout: '120s' } },
    packages: {
      '@workbay/*': { access: '$all', publish: '$authenticated', unpublish: '$authenticated' },
      '**': { access: '$all', proxy: 'npmjs' },
    },
    log: { type: 'stdout', format: 'pretty', level: 'error' },
  } as never)) as Server;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const res = await fetch(`${url}-/user/org.couchdb.user:release-test`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'release-test', password: 'release-test-password' }),
  });
  if (!res.ok) throw new Error(`registry user: HTTP ${res.status} ${await res.text()}`);
  const { token } = (await res.json()) as { token: string };
  const npmrc = join(dir, 'npmrc');
  await writeFile(npmrc, `registry=${url}\n//${url.slice('http://'.length)}:_authToken=${token}\n`);
  return {
    url,
    npmrc,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end, capturing output (npm, the installed CLIs). */
export function run(
  command: string,
  args: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; replaceEnv?: boolean },
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.replaceEnv ? options.env : { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** npm with the registry's npmrc only: the user's own config and workspace settings must not leak in. */
export function npm(registry: LocalRegistry, cwd: string, args: readonly string[]): Promise<RunResult> {
  // An outer `npm test` / `npx` exports npm_config_* (workspace selection among them): none of it may reach the
  // consumer's npm, which must behave as on a user's machine.
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key)));
  return run('npm', [...args, '--userconfig', registry.npmrc, '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd,
    env: { ...env, npm_config_registry: registry.url },
    replaceEnv: true,
  });
}
