// Builds the OCI image of the manager or the daemon from deploy/images/<service>.Dockerfile with whichever engine
// the machine has (docker, podman or buildah). `npx nx run-many -t image` runs it for both; the packages must be
// built (the `image` targets depend on `build`).
//
//   node deploy/images/build.mjs <manager|daemon> [--tag <ref>] [--base-image <ref>] [--engine docker|podman|buildah]
//                                [--build-arg NAME=VALUE]... [--json]
//
// Environment: WORKBAY_IMAGE_ENGINE, WORKBAY_BASE_IMAGE, WORKBAY_IMAGE_TAG (the same as the flags). buildah gets
// BUILDAH_ISOLATION=chroot unless set (it works as root without a container runtime, also inside a container);
// its storage comes from the usual containers configuration (CONTAINERS_STORAGE_CONF, STORAGE_DRIVER).
//
// The build context is staged in a temp directory: the workspace packages the service needs are `npm pack`ed
// (their prepack refuses an unbuilt package) and installed there with `npm install --omit=dev`, and the Dockerfile
// copies the result. Production dependencies are pure JavaScript (checked below), so installing on the build host
// gives the same tree as installing in the image, and the image build itself needs neither npm nor the network.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const here = new URL('.', import.meta.url).pathname;
const root = join(here, '..', '..');
const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));

/** The workspace packages each image installs (the service and the workspace packages it depends on). */
const services = {
  manager: { packages: ['api', 'nsinsider', 'manager'], extra: ['@kubernetes/client-node'] },
  daemon: { packages: ['api', 'nsinsider', 'daemon'], extra: [] },
};

class BuildError extends Error {}
/** Ends the build with a message (thrown, so that the staging directory is removed on the way out). */
const fail = (message) => {
  throw new BuildError(message);
};

const has = (command) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
/** A docker CLI without a reachable engine (common in CI containers) cannot build; podman and buildah need none. */
const usable = (engine) =>
  has(engine) &&
  (engine !== 'docker' || spawnSync('docker', ['info'], { stdio: 'ignore', timeout: 15_000 }).status === 0);

/** The first engine present, in the order a developer most likely wants it. */
function pickEngine(requested) {
  const engines = ['docker', 'podman', 'buildah'];
  if (requested) {
    if (!engines.includes(requested))
      fail(`--engine must be one of ${engines.join(', ')}, not '${requested.slice(0, 20)}'`);
    if (!usable(requested)) fail(`engine '${requested}' is not on PATH or cannot reach its engine`);
    return requested;
  }
  const found = engines.find(usable);
  if (!found) fail('no usable image engine: install docker, podman or buildah (Debian: apt-get install -y buildah)');
  return found;
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', ...options });
  if (result.status !== 0)
    fail(`${command} ${args.slice(0, 3).join(' ')} ... failed (exit ${result.status ?? result.signal})`);
  return result;
}

/** Native addons would tie the installed tree to the build host's libc; there are none today, keep it that way. */
function findNativeAddons(dir, found = []) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) findNativeAddons(path, found);
    else if (entry.name.endsWith('.node')) found.push(path);
  }
  return found;
}

/** Stages `<context>/app`: package.json + node_modules with production dependencies only. */
function stageApp(service, context) {
  const { packages, extra } = services[service];
  const app = join(context, 'app');
  const tarballs = join(context, 'tarballs');
  mkdirSync(app, { recursive: true });
  mkdirSync(tarballs, { recursive: true });
  const dependencies = {};
  for (const name of packages) {
    const dir = join(root, 'packages', name);
    const pkg = readJson(join(dir, 'package.json'));
    // Nx has built it (the `image` target depends on `build`); the entry points must be there all the same.
    const entries = [pkg.main, ...Object.values(pkg.bin ?? {})].filter((f) => !existsSync(join(dir, f)));
    if (entries.length) fail(`${pkg.name} is not built (${entries.join(', ')} missing): npx nx run ${pkg.name}:build`);
    // --ignore-scripts: prepack's freshness check compares mtimes, which an incremental or cached build does not
    // refresh for unchanged outputs; Nx already guarantees a fresh build here.
    const packed = spawnSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tarballs], {
      cwd: dir,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    if (packed.status !== 0) fail(`npm pack of ${pkg.name} failed`);
    dependencies[pkg.name] = `file:${join(tarballs, JSON.parse(packed.stdout)[0].filename)}`;
  }
  const servicePkg = readJson(join(root, 'packages', service, 'package.json'));
  for (const name of extra) dependencies[name] = servicePkg.peerDependencies?.[name] ?? 'latest';
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify(
      { name: `workbay-${service}-image`, version: servicePkg.version, private: true, dependencies },
      null,
      2,
    ),
  );
  // The repository's lockfile as the starting point: npm keeps its versions for every package it can place at
  // the same location, so the image runs what the tests ran (only what sits under a workspace package in the
  // repository, e.g. packages/daemon/node_modules/tar-stream, is re-resolved within its range).
  cpSync(join(root, 'package-lock.json'), join(app, 'package-lock.json'));
  // --ignore-scripts: nothing in the production tree needs an install script, and none runs on the build host.
  run('npm', ['install', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], {
    cwd: app,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const native = findNativeAddons(join(app, 'node_modules'));
  if (native.length)
    fail(`native addons in the production tree (build them in the image instead): ${native.slice(0, 3).join(', ')}`);
  // The tarball paths are build-host paths; the image keeps the installed packages only.
  rmSync(join(app, 'package-lock.json'), { force: true });
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify({ name: `workbay-${service}-image`, version: servicePkg.version, private: true }, null, 2),
  );
  return servicePkg.version;
}

function engineBuild(engine, { dockerfile, tag, buildArgs, context }) {
  const args = ['build', '-f', dockerfile, '-t', tag, ...buildArgs.flatMap((a) => ['--build-arg', a]), context];
  const env = { ...process.env };
  if (engine === 'buildah') env.BUILDAH_ISOLATION ??= 'chroot';
  run(engine, args, { env, stdio: ['ignore', 'inherit', 'inherit'] });
}

function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      tag: { type: 'string' },
      'base-image': { type: 'string' },
      engine: { type: 'string' },
      'build-arg': { type: 'string', multiple: true, default: [] },
      json: { type: 'boolean', default: false },
    },
  });
  const service = positionals[0];
  if (!services[service])
    fail(`usage: build.mjs <${Object.keys(services).join('|')}> [--tag <ref>] [--base-image <ref>]`);
  const engine = pickEngine(values.engine ?? process.env.WORKBAY_IMAGE_ENGINE);
  const context = mkdtempSync(join(tmpdir(), `workbay-image-${service}-`));
  try {
    const started = Date.now();
    const version = stageApp(service, context);
    const staged = Date.now();
    const dockerfile = join(context, 'Dockerfile');
    cpSync(join(here, `${service}.Dockerfile`), dockerfile);
    const tag = values.tag ?? process.env.WORKBAY_IMAGE_TAG ?? `workbay/${service}:${version}`;
    const base = values['base-image'] ?? process.env.WORKBAY_BASE_IMAGE;
    const buildArgs = [...(base ? [`BASE_IMAGE=${base}`] : []), ...values['build-arg']];
    rmSync(join(context, 'tarballs'), { recursive: true, force: true });
    engineBuild(engine, { dockerfile, tag, buildArgs, context });
    const result = { service, tag, engine, stageMs: staged - started, buildMs: Date.now() - staged };
    if (values.json) console.log(JSON.stringify(result));
    else console.log(`image: built ${tag} with ${engine} (staging ${result.stageMs} ms, build ${result.buildMs} ms)`);
  } finally {
    rmSync(context, { recursive: true, force: true });
  }
}

try {
  main();
} catch (err) {
  if (!(err instanceof BuildError)) throw err;
  console.error(`image: ${err.message}`);
  process.exit(1);
}
