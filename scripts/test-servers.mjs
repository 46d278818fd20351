// Builds the real servers the storage tests run against (MinIO, fake-gcs-server) with `go install`,
// pinned, into a cache folder that survives between runs. Prints where they are.
// Used by `npm test` before the test tasks; @workbay/testing's launcher looks in the same folder.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const testServers = {
  minio: 'github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c',
  'fake-gcs-server': 'github.com/fsouza/fake-gcs-server@v1.56.1',
};

const binDir = process.env.WORKBAY_TOOLS_DIR ?? join(homedir(), '.cache', 'workbay', 'bin');
mkdirSync(binDir, { recursive: true });

for (const [name, module] of Object.entries(testServers)) {
  const version = module.split('@')[1];
  const target = join(binDir, `${name}-${version}`);
  if (existsSync(target)) {
    console.log(`test-servers: ${name} ${version} cached at ${target}`);
    continue;
  }
  console.log(`test-servers: building ${module} (first run only, a few minutes)...`);
  const started = Date.now();
  const gobin = join(binDir, `.build-${name}`);
  execFileSync('go', ['install', module], {
    stdio: 'inherit',
    env: { ...process.env, GOBIN: gobin, CGO_ENABLED: '0', GOFLAGS: '-trimpath' },
  });
  execFileSync('mv', [join(gobin, name), target]);
  console.log(`test-servers: built ${name} in ${Math.round((Date.now() - started) / 1000)} s`);
}
