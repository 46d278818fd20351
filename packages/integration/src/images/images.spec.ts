/**
 * The service images (deploy/images, `nx run-many -t image`) built and run for real with Debian's buildah: a base
 * image FROM scratch out of this machine's Node (no registry, no pull), the manager and daemon images built on it
 * by the repository's build script, both run with `buildah run` (chroot isolation, host network) sharing the
 * working area, and the manager driven from the host with the CLI until a workspace is RUNNING, then stopped.
 * Image sizes and build times are printed. Everything lives in a private storage under a temp dir, removed after.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildBaseImage,
  imageConfig,
  imageSize,
  killProcessesIn,
  onPath,
  privateBuildah,
  runContainer,
} from './buildah.js';
import type { Buildah, Running } from './buildah.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../../..');
const buildScript = path.join(repo, 'deploy', 'images', 'build.mjs');
const cliMain = path.join(repo, 'packages', 'manager', 'dist', 'cli', 'main.js');

const base = 'localhost/workbay-test/base:latest';
const images = { manager: 'localhost/workbay-test/manager:test', daemon: 'localhost/workbay-test/daemon:test' };
/** Where the images keep their config and the shared working area (deploy/kubernetes uses the same paths). */
const configDir = '/etc/workbay';
const workingArea = '/var/lib/workbay/workspaces';

interface Built {
  readonly tag: string;
  readonly stageMs: number;
  readonly buildMs: number;
}

function buildImage(buildah: Buildah, service: 'manager' | 'daemon', extra: string[] = []): Built {
  const result = spawnSync(
    process.execPath,
    [buildScript, service, '--engine', 'buildah', '--base-image', base, '--tag', images[service], '--json', ...extra],
    { env: buildah.env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  if (result.status !== 0) {
    throw new Error(`building the ${service} image failed: ${(result.stdout + result.stderr).slice(-4000)}`);
  }
  return JSON.parse(result.stdout.trim().split('\n').at(-1)!) as Built;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function cli(address: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cliMain, '--address', address, '--json', ...args], {
    encoding: 'utf8',
    env: { ...process.env, WORKBAY_OWNER: 'image-test' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function phaseOf(address: string, id: string): string | undefined {
  const listed = cli(address, ['list']);
  expect(listed.status, listed.stderr).toBe(0);
  return (JSON.parse(listed.stdout) as { id: string; phase: string }[]).find((w) => w.id === id)?.phase.toUpperCase();
}

describe('deploy/kubernetes takes the service images through kustomize `images:`', () => {
  it('names every workload image there, with the build script default names and the package version', () => {
    const k8s = path.join(repo, 'deploy', 'kubernetes');
    const kustomization = parseYaml(readFileSync(path.join(k8s, 'kustomization.yaml'), 'utf8')) as {
      images: { name: string; newName: string; newTag: string }[];
    };
    // Each workload file holds one document.
    const workloadImages = (file: string): string[] =>
      (
        parseYaml(readFileSync(path.join(k8s, file), 'utf8')) as {
          spec: { template: { spec: { containers: { image: string }[] } } };
        }
      ).spec.template.spec.containers.map((c) => c.image);
    expect(workloadImages('manager-deployment.yaml')).toEqual(['workbay/manager']);
    expect(workloadImages('daemon-daemonset.yaml')).toEqual(['workbay/daemon']);
    for (const service of ['manager', 'daemon']) {
      const version = (
        JSON.parse(readFileSync(path.join(repo, 'packages', service, 'package.json'), 'utf8')) as { version: string }
      ).version;
      expect(kustomization.images).toContainEqual({
        name: `workbay/${service}`,
        newName: `workbay/${service}`,
        newTag: version,
      });
    }
  });
});

describe('service images (buildah, vfs, chroot isolation)', () => {
  let dir = '';
  let buildah: Buildah | undefined;
  const running: Running[] = [];
  /** A workspace the manager container may still run when a test failed half-way (address, instance id). */
  let startedWorkspace: [string, string] | undefined;

  beforeAll(() => {
    // A machine without buildah cannot prove the images: that is a failure, never a skip.
    if (!onPath('buildah')) throw new Error('buildah is missing: apt-get install -y buildah (scripts/system-deps.mjs)');
    dir = mkdtempSync(path.join(os.tmpdir(), 'workbay-images-'));
    buildah = privateBuildah(path.join(dir, 'storage'));
  });

  afterAll(async () => {
    // The workspace process runs in its own session inside the manager's container: stop it through the manager
    // before the containers go, or it would outlive them.
    if (startedWorkspace)
      cli(startedWorkspace[0], ['--timeout', '1m', 'stop', '--policy', 'abort', '--wait', startedWorkspace[1]]);
    for (const r of running) await r.stop();
    const leftovers = buildah ? killProcessesIn(buildah, ['workbay-manager', 'workbay-daemon']) : [];
    if (leftovers.length) console.error(`images: killed ${leftovers.length} process(es) left in the containers`);
    if (buildah) {
      // Containers first (they hold the images), then every image of the private store, then the store itself.
      spawnSync('buildah', ['rm', '--all'], { env: buildah.env, stdio: 'ignore' });
      spawnSync('buildah', ['rmi', '--all', '--force'], { env: buildah.env, stdio: 'ignore' });
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('builds the base, manager and daemon images: production dependencies only, manager non-root, daemon root', () => {
    const b = buildah!;
    let started = Date.now();
    buildBaseImage(b, dir, base);
    const baseMs = Date.now() - started;
    started = Date.now();
    const manager = buildImage(b, 'manager');
    // The scratch base carries no apt: the tools the daemon calls for an empty workspace are not needed here.
    const daemon = buildImage(b, 'daemon', ['--build-arg', 'SYSTEM_PACKAGES=']);
    console.log(
      [
        `images (buildah ${b.run(['--version']).split(' ')[2]}, vfs, chroot):`,
        `  base     ${imageSize(b, base).padStart(8)}  built in ${(baseMs / 1000).toFixed(1)} s (FROM scratch: this machine's node + libraries)`,
        ...(['manager', 'daemon'] as const).map((s) => {
          const built = s === 'manager' ? manager : daemon;
          return `  ${s.padEnd(8)} ${imageSize(b, images[s]).padStart(8)}  staged (npm pack + npm install --omit=dev) in ${(built.stageMs / 1000).toFixed(1)} s, image built in ${(built.buildMs / 1000).toFixed(1)} s`;
        }),
        `  total ${((Date.now() - started + baseMs) / 1000).toFixed(1)} s`,
      ].join('\n'),
    );

    const managerConfig = imageConfig(b, images.manager);
    expect(managerConfig.entrypoint).toEqual(['workbay']);
    expect(managerConfig.user).toBe('10001:10001');
    expect(imageConfig(b, images.daemon)).toEqual({ user: '0:0', entrypoint: ['workbay-daemon'] });

    // What a container of each image actually runs as, and that no development dependency came along.
    for (const [service, uid] of [
      ['manager', '10001'],
      ['daemon', '0'],
    ] as const) {
      const probe = b.run(['from', '--name', `probe-${service}`, images[service]]);
      const out = b.run([
        'run',
        probe,
        '--',
        'node',
        '-e',
        `const fs = require('fs'); const m = '/opt/workbay/node_modules/';
         process.stdout.write(JSON.stringify({ uid: process.getuid(),
           dev: ['typescript', 'vitest', 'nx', 'eslint', 'prettier', 'fast-check', 'verdaccio', '@types/tar-stream']
             .filter((d) => fs.existsSync(m + d)),
           service: fs.existsSync(m + '@workbay/${service}/dist/cli/main.js') }));`,
      ]);
      expect(JSON.parse(out), service).toEqual({ uid: Number(uid), dev: [], service: true });
      b.run(['rm', probe]);
    }
  }, 900_000);

  it('runs the daemon and manager images; the host CLI starts a workspace to RUNNING and stops it', async () => {
    const b = buildah!;
    const etc = path.join(dir, 'etc');
    const work = path.join(dir, 'workspaces');
    mkdirSync(etc, { recursive: true });
    mkdirSync(work, { recursive: true });
    const daemonAddress = `127.0.0.1:${await freePort()}`;
    writeFileSync(
      path.join(etc, 'daemon.yaml'),
      [
        `grpc: { address: "${daemonAddress}" }`,
        `workingArea: ${workingArea}`,
        'quota: { mode: none }',
        'diskGuard: { minFree: 0 }',
        'backup: { period: 0 }',
        // The manager image runs workspaces as its own user (10001, not root: no isolation), so the root daemon gives
        // every workspace's content to that uid, as deploy/kubernetes does for its pods' uid; content roots are 0700.
        'workspaceIds: { base: 10001, shared: true }',
      ].join('\n') + '\n',
    );
    writeFileSync(
      path.join(etc, 'manager.yaml'),
      [
        'stateDir: /var/lib/workbay/manager',
        `workingArea: ${workingArea}`,
        'grpc: { address: "127.0.0.1:0" }',
        'proxy: { address: "127.0.0.1:0" }',
        'metrics: { address: "127.0.0.1:0" }',
        `daemon: { spawn: false, address: "${daemonAddress}" }`,
        'runtime: { kind: local }',
      ].join('\n') + '\n',
    );
    const mounts = [`${etc}:${configDir}:ro`, `${work}:${workingArea}`];

    const daemonCtr = b.run(['from', '--name', 'workbay-daemon', images.daemon]);
    const daemon = runContainer(b, daemonCtr, mounts, [
      ...imageConfig(b, images.daemon).entrypoint,
      '--config',
      `${configDir}/daemon.yaml`,
      '--http-address',
      'off',
      '--storage-root',
      '/var/lib/workbay/storage',
    ]);
    running.push(daemon);
    await daemon.line((l) => l.includes('"event":"listening"'));

    const managerCtr = b.run(['from', '--name', 'workbay-manager', images.manager]);
    const manager = runContainer(b, managerCtr, mounts, [
      ...imageConfig(b, images.manager).entrypoint,
      '--json',
      'up',
      '--config',
      `${configDir}/manager.yaml`,
    ]);
    running.push(manager);
    const { managerAddress } = JSON.parse(await manager.line((l) => l.includes('managerAddress'))) as {
      managerAddress: string;
    };

    const id = `image-test-${process.pid}`;
    startedWorkspace = [managerAddress, id];
    const start = cli(managerAddress, ['--timeout', '3m', 'start', '--wait', '--id', id]);
    expect(start.status, start.stderr + manager.output().slice(-3000) + daemon.output().slice(-3000)).toBe(0);
    expect(phaseOf(managerAddress, id)).toBe('RUNNING');
    // The manager's port proxy (in its container) reaches the workspace process it started there.
    const { url, ownerToken } = JSON.parse(start.stdout) as { url: string; ownerToken: string };
    const page = await fetch(new URL('api/info', url), { headers: { 'x-workbay-owner-token': ownerToken } });
    expect(page.status).toBe(200);
    expect(((await page.json()) as { instanceId: string }).instanceId).toBe(id);

    const stopped = cli(managerAddress, ['--timeout', '3m', 'stop', '--wait', id]);
    expect(stopped.status, stopped.stderr + manager.output().slice(-3000)).toBe(0);
    expect(phaseOf(managerAddress, id)).toBe('STOPPED');
    // Both services stayed up throughout.
    expect(manager.process.exitCode).toBeNull();
    expect(daemon.process.exitCode).toBeNull();
  }, 600_000);
});
