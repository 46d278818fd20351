/**
 * The packages as an outside team gets them: every published package goes to a real npm registry (Verdaccio on
 * 127.0.0.1), then, in clean directories outside the repository,
 * - `npm install @workbay/manager @workbay/daemon` and the installed `workbay up` runs a workspace to RUNNING;
 * - `npm install @workbay/api @workbay/testing` runs the conformance kit against the example plugin's sources.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalRegistry } from './registry.js';
import { npm, run, startLocalRegistry } from './registry.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
const published = ['api', 'nsinsider', 'daemon', 'manager', 'storage-minio', 'storage-gcs', 'testing'];

let dir: string;
let registry: LocalRegistry;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'workbay-release-'));
  registry = await startLocalRegistry(join(dir, 'registry'));
  for (const name of published) {
    const result = await npm(registry, join(repoRoot, 'packages', name), ['publish']);
    expect(result.code, `npm publish @workbay/${name}: ${result.stderr}`).toBe(0);
  }
}, 300_000);

afterAll(async () => {
  await registry?.close();
  await rm(dir, { recursive: true, force: true });
});

/** What an install weighs: packages under node_modules and their bytes on disk (printed for the README table). */
async function footprint(project: string, what: string): Promise<void> {
  const du = await run('du', ['-sk', join(project, 'node_modules')], { cwd: project });
  const listed = await run(
    'sh',
    [
      '-c',
      'find node_modules -name package.json -path "*node_modules/*/package.json" -not -path "*/node_modules/*/node_modules/*/*/package.json" | wc -l',
    ],
    { cwd: project },
  );
  console.log(
    `install footprint of ${what}: ${listed.stdout.trim()} packages, ${(Number(du.stdout.split('\t')[0]) / 1024).toFixed(1)} MiB`,
  );
}

async function cleanProject(name: string): Promise<string> {
  const project = join(dir, name);
  await mkdir(project, { recursive: true });
  await writeFile(join(project, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }));
  return project;
}

describe('published packages', () => {
  it('tarballs hold built code, sources for the maps and the license, and no build info or benchmarks', async () => {
    const project = await cleanProject('inspect');
    const packed = await npm(registry, project, ['pack', '@workbay/daemon', '--json']);
    expect(packed.code, packed.stderr).toBe(0);
    const [{ files }] = JSON.parse(packed.stdout) as [{ files: { path: string }[] }];
    const paths = files.map((f) => f.path);
    expect(paths).toContain('dist/index.js');
    expect(paths).toContain('src/index.ts');
    expect(paths).toContain('LICENSE');
    expect(paths.filter((p) => p.endsWith('.tsbuildinfo') || p.includes('/bench/') || p.endsWith('.spec.js'))).toEqual(
      [],
    );
    for (const name of published) {
      const tarball = await npm(registry, project, ['pack', `@workbay/${name}`, '--dry-run', '--json']);
      const [{ size, unpackedSize }] = JSON.parse(tarball.stdout) as [{ size: number; unpackedSize: number }];
      console.log(
        `tarball of @workbay/${name}: ${(size / 1024).toFixed(0)} KiB (${(unpackedSize / 1024).toFixed(0)} KiB unpacked)`,
      );
    }
    const manifest = JSON.parse(await readFile(join(repoRoot, 'packages/daemon/package.json'), 'utf8')) as object;
    expect(manifest).not.toHaveProperty('nx');
  });

  it('npm install @workbay/manager @workbay/daemon, then the installed workbay up runs a workspace', async () => {
    const project = await cleanProject('service');
    const installed = await npm(registry, project, ['install', '@workbay/manager', '@workbay/daemon']);
    expect(installed.code, installed.stderr).toBe(0);
    await footprint(project, '@workbay/manager @workbay/daemon');
    const bin = join(project, 'node_modules', '.bin', 'workbay');
    await writeFile(
      join(project, 'workbay.yaml'),
      [
        `stateDir: ${join(project, 'state')}`,
        `workingArea: ${join(project, 'workspaces')}`,
        'grpc: { address: 127.0.0.1:0 }',
        'proxy: { address: 127.0.0.1:0 }',
        'metrics: { address: 127.0.0.1:0 }',
        'daemon:',
        '  address: 127.0.0.1:0',
        "  httpAddress: 'off'",
        `  storageRoot: ${join(project, 'storage')}`,
        '  output: ignore',
        'log: { level: warn }',
        '',
      ].join('\n'),
    );
    const up: ChildProcess = spawn(bin, ['--json', 'up', '--config', join(project, 'workbay.yaml')], {
      cwd: project,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let upStderr = '';
    up.stderr!.on('data', (d: Buffer) => (upStderr += d.toString()));
    try {
      const addresses = await new Promise<{ managerAddress: string }>((resolveLine, reject) => {
        createInterface({ input: up.stdout! }).once('line', (line) => resolveLine(JSON.parse(line)));
        up.once('exit', (code) => reject(new Error(`installed workbay up exited with ${code}: ${upStderr}`)));
      });
      const cli = (args: string[]) =>
        run(bin, ['--address', addresses.managerAddress, ...args], { cwd: project, env: { WORKBAY_OWNER: 'erin' } });
      const started = await cli(['--json', 'start', '--id', 'from-npm', '--wait']);
      expect(started.code, started.stderr + upStderr).toBe(0);
      expect((JSON.parse(started.stdout) as { phase: string }).phase).toBe('running');
      const stopped = await cli(['stop', 'from-npm', '--wait']);
      expect(stopped.code, stopped.stderr).toBe(0);
    } finally {
      const exited = new Promise((done) => up.once('exit', done));
      up.kill('SIGINT');
      await exited;
    }
  }, 600_000);

  it('npm install @workbay/api @workbay/testing runs the conformance kit against the example plugin', async () => {
    const project = await cleanProject('plugin-author');
    const installed = await npm(registry, project, [
      'install',
      '@workbay/api',
      '@workbay/testing',
      'vitest@4.1.12',
      'zod@^4.6.7',
    ]);
    expect(installed.code, installed.stderr).toBe(0);
    await footprint(project, '@workbay/api @workbay/testing (+ vitest, zod)');
    // A plugin author's tree: the kit brings neither the manager nor the daemon.
    const scope = await readdir(join(project, 'node_modules', '@workbay'));
    expect(scope.sort()).toEqual(['api', 'testing']);
    await cp(join(repoRoot, 'packages/storage-example/src'), join(project, 'src'), {
      recursive: true,
      filter: (source) => !source.endsWith('config.spec.ts'),
    });
    const tested = await run(join(project, 'node_modules', '.bin', 'vitest'), ['run', '--root', project], {
      cwd: project,
      env: { WORKBAY_CONFORMANCE_LARGE_MIB: '16', CI: 'true', NO_COLOR: '1', FORCE_COLOR: '0' },
    });
    expect(tested.code, tested.stdout + tested.stderr).toBe(0);
    // eslint-disable-next-line no-control-regex -- vitest may still colour its summary
    expect(tested.stdout.replace(/\u001b\[[0-9;]*m/g, '')).toMatch(/Tests\s+\d+ passed/);
  }, 600_000);
});
