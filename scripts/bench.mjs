// `npm run bench`: builds everything, then runs each package's `bench` script in turn (or only the
// packages named on the command line). Each benchmark prints its figure beside a baseline from the same run.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const only = process.argv.slice(2);
const env = { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' };

const build = spawnSync(
  join(root, 'node_modules', '.bin', 'nx'),
  ['run-many', '-t', 'build', '--output-style=static'],
  {
    cwd: root,
    stdio: 'inherit',
    env,
  },
);
if (build.status !== 0) process.exit(build.status ?? 1);

let failures = 0;
for (const name of readdirSync(join(root, 'packages')).sort()) {
  const manifest = join(root, 'packages', name, 'package.json');
  if (!existsSync(manifest)) continue;
  if (only.length && !only.includes(name)) continue;
  const pkg = JSON.parse(readFileSync(manifest, 'utf8'));
  if (!pkg.scripts?.bench) continue;
  console.log(`\n=== ${pkg.name} ===`);
  // The previous bench's writes (the daemon's write gigabytes) are flushed first: a bench that fsyncs (etcd under
  // the Kubernetes bench, the manager's state) would otherwise pay for them.
  spawnSync('sync', { stdio: 'ignore' });
  const result = spawnSync('npm', ['run', '--silent', 'bench'], {
    cwd: join(root, 'packages', name),
    stdio: 'inherit',
    env,
  });
  if (result.status !== 0) {
    failures += 1;
    console.error(`bench: ${pkg.name} failed (exit ${result.status})`);
  }
}
process.exit(failures ? 1 : 0);
