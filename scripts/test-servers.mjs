// Builds the real servers the tests run against (MinIO, fake-gcs-server, etcd, kube-apiserver) from the Go
// module proxy, pinned, into a cache folder that survives between runs. Prints where they are.
// Used by `npm test` before the test tasks; @workbay/testing's launchers look in the same folder.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

export const testServers = {
  minio: 'github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c',
  'fake-gcs-server': 'github.com/fsouza/fake-gcs-server@v1.56.1',
};

/** Built from a throwaway module: neither can be `go install`ed (see docs/testing.md). */
export const kubernetesServers = {
  etcd: 'go.etcd.io/etcd/server/v3@v3.6.16',
  'kube-apiserver': 'k8s.io/kubernetes@v1.37.2',
};

const binDir = process.env.WORKBAY_TOOLS_DIR ?? join(homedir(), '.cache', 'workbay', 'bin');
mkdirSync(binDir, { recursive: true });

function timed(name, build) {
  const started = Date.now();
  build();
  console.log(`test-servers: built ${name} in ${Math.round((Date.now() - started) / 1000)} s`);
}

function go(args, cwd, extraEnv = {}) {
  execFileSync('go', args, {
    cwd,
    stdio: 'inherit',
    env: { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-mod=mod', ...extraEnv },
  });
}

for (const [name, module] of Object.entries(testServers)) {
  const version = module.split('@')[1];
  const target = join(binDir, `${name}-${version}`);
  if (existsSync(target)) {
    console.log(`test-servers: ${name} ${version} cached at ${target}`);
    continue;
  }
  console.log(`test-servers: building ${module} (first run only, a few minutes)...`);
  timed(name, () => {
    const gobin = join(binDir, `.build-${name}`);
    execFileSync('go', ['install', module], {
      stdio: 'inherit',
      env: { ...process.env, GOBIN: gobin, CGO_ENABLED: '0', GOFLAGS: '-trimpath' },
    });
    execFileSync('mv', [join(gobin, name), target]);
  });
}

/** etcd's server module has no main package of its own at a stable path: a three-line main calls etcdmain. */
function buildEtcd(dir, module, target) {
  const version = module.split('@')[1];
  writeFileSync(
    join(dir, 'go.mod'),
    `module workbay.dev/etcd-build\n\ngo 1.26\n\nrequire ${module.replace('@', ' ')}\n`,
  );
  writeFileSync(
    join(dir, 'main.go'),
    'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n',
  );
  go(['mod', 'tidy'], dir);
  go(['build', '-trimpath', '-ldflags', '-s -w', '-o', target, '.'], dir);
  console.log(`test-servers: etcd ${version} at ${target}`);
}

/**
 * k8s.io/kubernetes replaces its staging modules with local paths, so it cannot be installed: a throwaway
 * module requires it and points every staging module at its published v0.x twin.
 */
function buildKubeApiserver(dir, module, target) {
  const version = module.split('@')[1];
  const [major, minor] = version.slice(1).split('.');
  const info = JSON.parse(
    execFileSync('go', ['mod', 'download', '-json', module], {
      encoding: 'utf8',
      env: { ...process.env, GOFLAGS: '-mod=mod' },
    }),
  );
  const upstreamMod = readFileSync(info.GoMod, 'utf8');
  const replaceBlock = upstreamMod.match(/replace \(([\s\S]*?)\)/)?.[1] ?? '';
  const stagingVersion = `v0.${minor}.${version.split('.')[2]}`;
  const replaces = [...replaceBlock.matchAll(/^\s*(k8s\.io\/\S+)\s*=>/gm)].map(
    ([, path]) => `replace ${path} => ${path} ${stagingVersion}`,
  );
  writeFileSync(
    join(dir, 'go.mod'),
    `module workbay.dev/kube-build\n\ngo 1.26\n\nrequire k8s.io/kubernetes ${version}\n\n${replaces.join('\n')}\n`,
  );
  // A tools file keeps the requirement through `go mod tidy`; it is never compiled.
  writeFileSync(
    join(dir, 'tools.go'),
    '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n',
  );
  go(['mod', 'tidy'], dir);
  const ldflags = [
    '-s -w',
    `-X k8s.io/component-base/version.gitVersion=${version}`,
    `-X k8s.io/component-base/version.gitMajor=${major}`,
    `-X k8s.io/component-base/version.gitMinor=${minor}`,
  ].join(' ');
  go(['build', '-trimpath', '-ldflags', ldflags, '-o', target, 'k8s.io/kubernetes/cmd/kube-apiserver'], dir);
}

const builders = { etcd: buildEtcd, 'kube-apiserver': buildKubeApiserver };
for (const [name, module] of Object.entries(kubernetesServers)) {
  const version = module.split('@')[1];
  const target = join(binDir, `${name}-${version}`);
  if (existsSync(target)) {
    console.log(`test-servers: ${name} ${version} cached at ${target}`);
    continue;
  }
  console.log(`test-servers: building ${name} ${version} from ${module} (first run only, up to 5 minutes)...`);
  const dir = mkdtempSync(join(tmpdir(), `workbay-${name}-build-`));
  // Go's build cache for kube-apiserver is about 3 GB: a private one is dropped with the build folder.
  const gocache = join(dir, '.gocache');
  process.env.GOCACHE = gocache;
  try {
    timed(name, () => builders[name](dir, module, `${target}.partial`));
    execFileSync('mv', [`${target}.partial`, target]);
  } finally {
    delete process.env.GOCACHE;
    rmSync(dir, { recursive: true, force: true });
  }
}
