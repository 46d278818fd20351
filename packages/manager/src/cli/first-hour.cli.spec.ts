/**
 * The first hour (issue 11), end to end with the built binaries: one `workbay.yaml` configures the embedded
 * daemon's storage and plugins (a backup lands in the example plugin's root, not in ~/.workbay/storage); a daemon
 * config error under `workbay up` is a config error naming file and key (exit 1); `--version`; JSON errors under
 * `--json`; class credits as configured.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { runBin } from '../test-support/run-bin.js';
import type { BinRun as Run } from '../test-support/run-bin.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = path.dirname(fileURLToPath(import.meta.url));
const mainJs = path.resolve(here, '../../dist/cli/main.js');
const daemonJs = path.resolve(here, '../../../daemon/dist/cli/main.js');
const managerVersion = (
  JSON.parse(readFileSync(path.resolve(here, '../../package.json'), 'utf8')) as { version: string }
).version;

let dir: string;
const started: ChildProcess[] = [];

function run(file: string, args: string[]): Promise<Run> {
  return runBin(file, args, { WORKBAY_OWNER: 'erin' });
}

/** A workbay.yaml for an isolated `up` under `dir/<name>`, with `extra` lines (storage, plugins) appended. */
async function writeConfig(
  name: string,
  extra: string[],
  daemon: { configPath?: string; lines?: string[] } = {},
): Promise<string> {
  const file = path.join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      `stateDir: ${path.join(dir, name, 'manager')}`,
      `workingArea: ${path.join(dir, name, 'workspaces')}`,
      'grpc: { address: 127.0.0.1:0 }',
      'proxy: { address: 127.0.0.1:0 }',
      'metrics: { address: 127.0.0.1:0 }',
      'idePorts: { from: 35000, to: 35999 }',
      'daemon:',
      '  address: 127.0.0.1:0',
      "  httpAddress: 'off'",
      `  configPath: ${daemon.configPath ?? path.join(dir, 'daemon.yaml')}`,
      ...(daemon.lines ?? []).map((line) => `  ${line}`),
      '  output: ignore',
      'runtime: { kind: local, readiness: { intervalMs: 50 } }',
      'log: { level: warn }',
      ...extra,
      '',
    ].join('\n'),
  );
  return file;
}

/** Starts `workbay --json up --config <file>` and resolves to its addresses once it serves. */
async function up(config: string): Promise<{ child: ChildProcess; managerAddress: string }> {
  const child = spawn(process.execPath, [mainJs, '--json', 'up', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const addresses = await new Promise<{ managerAddress: string }>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) =>
      resolve(JSON.parse(line) as { managerAddress: string }),
    );
    child.once('exit', (code) => reject(new Error(`workbay up exited with ${code}: ${stderr}`)));
  });
  return { child, managerAddress: addresses.managerAddress };
}

/** Every file under `root`, relative to it. */
async function filesUnder(root: string): Promise<string[]> {
  if (!existsSync(root)) return [];
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.relative(root, path.join(e.parentPath, e.name)));
}

beforeAll(async () => {
  for (const file of [mainJs, daemonJs]) if (!existsSync(file)) throw new Error(`build first: ${file} is missing`);
  const examplePlugin = path.resolve(here, '../../../storage-example/dist/index.js');
  if (!existsSync(examplePlugin)) throw new Error(`build @workbay/storage-example first: ${examplePlugin} is missing`);
  dir = await mkdtemp(path.join(os.tmpdir(), 'workbay-first-hour-'));
  // The daemon's own file sets no storage: the manager's config brings it.
  await writeFile(
    path.join(dir, 'daemon.yaml'),
    'quota: { mode: none }\ndiskGuard: { minFree: 0 }\nlog: { level: warn }\ngit: { allowLocalRemotes: true }\n',
  );
});

afterAll(async () => {
  for (const child of started) if (child.exitCode === null) child.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe('workbay up with storage and plugins in workbay.yaml', () => {
  it('backs up into the configured storage of the plugin, not ~/.workbay/storage', async () => {
    const storageRoot = path.join(dir, 'example-blobs');
    const config = await writeConfig('storage', [
      "plugins: ['@workbay/storage-example']",
      `storage: { kind: example, root: ${storageRoot} }`,
    ]);
    const { child, managerAddress } = await up(config);
    const workbay = (args: string[]): Promise<Run> => run(mainJs, ['--address', managerAddress, ...args]);

    const start = await workbay(['--json', 'start', '--id', 'fh-1', '--meta-id', 'fh', '--wait']);
    expect(start.code, start.stderr).toBe(0);
    expect((JSON.parse(start.stdout) as { phase: string }).phase).toBe('running');
    expect(await filesUnder(storageRoot)).toEqual([]);
    // The storage section (credentials, for real backends) reaches the daemon in a file only root can read.
    const handedOver = await stat(path.join(dir, 'storage', 'manager', 'daemon-manager-config.json'));
    expect(handedOver.mode & 0o777).toBe(0o600);

    // A normal stop takes the final backup: it must land in the example backend's root.
    const stop = await workbay(['stop', 'fh-1', '--policy', 'normally', '--wait']);
    expect(stop.code, stop.stderr).toBe(0);
    // The example backend keeps `<bucket>/<hex of the object name>.obj`.
    const objects = (await filesUnder(storageRoot)).map((f) => {
      const [bucket, file] = f.split(path.sep);
      return `${bucket}/${Buffer.from(file!.replace(/\.obj$/, ''), 'hex').toString()}`;
    });
    expect(objects).toContain('workbay-user-erin/workspaces/fh/full.manifest');

    // The one spelling of a phase: lowercase in JSON as in tables.
    const list = await workbay(['--json', 'list']);
    expect(list.code, list.stderr).toBe(0);

    const classes = await workbay(['--json', 'classes']);
    const cluster = JSON.parse(classes.stdout) as { workspaceClasses: { id: string; creditsPerMinute: number }[] };
    expect(cluster.workspaceClasses.find((c) => c.id === 'g1-large')?.creditsPerMinute).toBe(0.3333);
    const table = await workbay(['classes']);
    expect(table.stdout).toMatch(/^g1-large\s.*\s0\.3333$/m);

    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.kill('SIGINT');
    expect(await exited).toBe(0);
  });

  it('reports a bad storage key of the plugin as a config error naming the file and key, exit 1', async () => {
    const config = await writeConfig('bad-key', [
      "plugins: ['@workbay/storage-example']",
      `storage: { kind: example, root: ${path.join(dir, 'never')}, bukket: typo }`,
    ]);
    const result = await run(mainJs, ['up', '--config', config]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`workbay: config error: storage.bukket: unknown key (in ${config})`);
    expect(result.stderr).not.toMatch(/cannot reach the manager/);

    const json = await run(mainJs, ['--json', 'up', '--config', config]);
    expect(json.code).toBe(1);
    const error = JSON.parse(json.stderr.trim().split('\n').at(-1)!) as { error: Record<string, unknown> };
    expect(error.error).toMatchObject({ code: 'invalid-argument', field: 'storage.bukket', exitCode: 1 });
    expect(json.stdout).toBe('');

    // A bad key in the daemon's own file (daemon.configPath) names that file.
    const daemonFile = path.join(dir, 'daemon-with-a-bad-key.yaml');
    await writeFile(daemonFile, 'quota: { mode: none }\nbackup: { attempts: many }\n');
    const own = await writeConfig('bad-daemon', [], { configPath: daemonFile });
    const daemonError = await run(mainJs, ['up', '--config', own]);
    expect(daemonError.code).toBe(1);
    expect(daemonError.stderr).toMatch(new RegExp(`config error: backup\\.attempts: .* \\(in ${daemonFile}\\)`));

    // One storage, one root: daemon.storageRoot beside storage is refused, not silently preferred.
    const twoRoots = await writeConfig('two-roots', [`storage: { kind: fs, root: ${path.join(dir, 'a')} }`], {
      lines: [`storageRoot: ${path.join(dir, 'b')}`],
    });
    const conflict = await run(mainJs, ['up', '--config', twoRoots]);
    expect(conflict.code).toBe(1);
    expect(conflict.stderr).toContain(
      `config error: daemon.storageRoot: conflicts with storage: set the root there (in ${twoRoots})`,
    );
  });

  it('reports a plugin that is not installed with the import error, exit 1', async () => {
    const config = await writeConfig('no-plugin', [
      "plugins: ['@workbay/storage-not-installed']",
      `storage: { kind: example, root: ${path.join(dir, 'never')} }`,
    ]);
    const result = await run(mainJs, ['up', '--config', config]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('config error: plugins[0]:');
    expect(result.stderr).toContain("Cannot find package '@workbay/storage-not-installed'");
    expect(result.stderr).toContain(`(in ${config})`);
  });
});

describe('git failures under workbay up', () => {
  it("name git's fatal line; an unresolvable host fails at once; a retried failure says how often", async () => {
    // A short retry budget: a failure that is retried ends within seconds and says "failed N times".
    const daemonConfig = path.join(dir, 'daemon-git.yaml');
    await writeFile(
      daemonConfig,
      'quota: { mode: none }\ndiskGuard: { minFree: 0 }\nlog: { level: warn }\n' +
        // The retried clone is of 127.0.0.1:1, which network git refuses unless allowed.
        "git: { allowLocalRemotes: true, allowedNetworks: ['127.0.0.1/32'] }\n" +
        'initializer: { gitRetryInitial: 200ms, gitRetryMax: 2s }\n',
    );
    const config = await writeConfig('git', [], { configPath: daemonConfig });
    const { child, managerAddress } = await up(config);
    const workbay = (args: string[]): Promise<Run> => run(mainJs, ['--address', managerAddress, ...args]);

    const missing = await workbay(['start', '--id', 'git-1', '--git', 'file:///nonexistent.git', '--wait']);
    expect(missing.code, missing.stderr).toBe(6);
    expect(missing.stderr).toMatch(/fatal: '\/nonexistent\.git' does not appear to be a git repository/);
    expect(missing.stderr).not.toContain('and the repository exists');

    const unknown = await workbay([
      '--timeout',
      '90s',
      'start',
      '--id',
      'git-2',
      '--git',
      'https://workbay-test.invalid/acme/app.git',
      '--wait',
    ]);
    expect(unknown.code, unknown.stderr).toBe(6);
    expect(unknown.stderr).toContain('git cannot reach https://workbay-test.invalid/acme/app.git: fatal:');
    expect(unknown.stderr).toContain('Could not resolve host: workbay-test.invalid');
    expect(unknown.stderr).not.toMatch(/failed \d+ times/);

    // Nothing listens on port 1: that will not change in minutes, so it fails at once, saying so (red team round 15,
    // G7: 14 retries over 272 s).
    const refused = await workbay(['start', '--id', 'git-3', '--git', 'http://127.0.0.1:1/acme/app.git', '--wait']);
    expect(refused.code, refused.stderr).toBe(6);
    expect(refused.stderr).toMatch(/git cannot reach http:\/\/127\.0\.0\.1:1\/acme\/app\.git: .*Connection refused/);
    expect(refused.stderr).not.toMatch(/failed \d+ times/);

    // A server that answers 503: transient, retried until the budget is spent, and the failure says so.
    const busy = createHttpServer((_req, res) => res.writeHead(503).end());
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    try {
      const port = (busy.address() as AddressInfo).port;
      const retried = await workbay([
        'start',
        '--id',
        'git-4',
        '--git',
        `http://127.0.0.1:${port}/acme/app.git`,
        '--wait',
      ]);
      expect(retried.code, retried.stderr).toBe(6);
      expect(retried.stderr).toMatch(
        /git clone of http:\/\/127\.0\.0\.1:\d+\/acme\/app\.git failed \d+ times over \d+s: fatal:/,
      );
    } finally {
      busy.close();
    }

    child.kill('SIGINT');
  });
});

describe('both CLIs', () => {
  it('print their version', async () => {
    const workbay = await run(mainJs, ['--version']);
    expect(workbay).toMatchObject({ code: 0, stdout: `${managerVersion}\n` });
    const daemon = await run(daemonJs, ['--version']);
    expect(daemon.code).toBe(0);
    expect(daemon.stdout).toMatch(/^\d+\.\d+\.\d+\S*\n$/);
  });

  it('print errors as JSON under --json: usage errors and an unreachable manager', async () => {
    const usage = await run(mainJs, ['--json', 'list', '--bogus']);
    expect(usage.code).toBe(1);
    expect(JSON.parse(usage.stderr)).toMatchObject({ error: { code: 'usage', exitCode: 1 } });
    const phase = await run(mainJs, ['--json', 'list', '--phase', 'sleeping']);
    expect(phase.code).toBe(1);
    expect(JSON.parse(phase.stderr)).toMatchObject({ error: { exitCode: 1 } });
    const down = await run(mainJs, ['--json', '--address', '127.0.0.1:1', '--timeout', '2s', 'list']);
    expect(down.code).toBe(4);
    expect(JSON.parse(down.stderr)).toMatchObject({ error: { code: 'unavailable', exitCode: 4 } });
    expect(down.stdout).toBe('');
  });
});
