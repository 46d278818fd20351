// The project's test command (`npm test`): builds the real test servers if needed, then runs
// build, typecheck, lint and test for every package through Nx, and prints one summary line
// summed from vitest's JSON reports: "N passed, N failed, N skipped".
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const packagesDir = join(root, 'packages');
const packages = readdirSync(packagesDir).filter((p) => existsSync(join(packagesDir, p, 'package.json')));

const run = (cmd, args, extraEnv = {}) =>
  spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...extraEnv } }).status ?? 1;

// System tools first (nft, ip, git, attr, ...): installed here when root with apt, else a clear stop.
if (run(process.execPath, [join(root, 'scripts', 'system-deps.mjs'), 'test']) !== 0) process.exit(1);

if (!process.env.WORKBAY_SKIP_TEST_SERVERS) {
  const status = run(process.execPath, [join(root, 'scripts', 'test-servers.mjs')]);
  if (status !== 0) {
    console.error('test: building the test servers failed');
    process.exit(status);
  }
}

// A report left from an earlier run must not be counted: Nx restores it from cache when the task is cached.
for (const p of packages) rmSync(join(packagesDir, p, 'test-report.json'), { force: true });

const targets = process.argv.slice(2).length
  ? process.argv.slice(2)
  : ['build', 'typecheck', 'lint', 'api-report', 'test'];
// Nx keeps its cache per machine (~/.nx), so a CI run on a machine that ran the tests before would only replay
// their results; under CI every task runs for real.
const cacheFlags = process.env.CI === 'true' ? ['--skip-nx-cache'] : [];
const nxStatus = run(
  join(root, 'node_modules', '.bin', 'nx'),
  ['run-many', '-t', ...targets, '--output-style=stream', ...cacheFlags],
  { NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
);

// The first lines of a failure message: enough to recognize it, bounded so the summary stays short.
const firstLines = (message) =>
  String(message ?? '')
    .split('\n')
    .slice(0, 6)
    .join('\n    ')
    .slice(0, 1500);

let passed = 0;
let failed = 0;
let skipped = 0;
const missing = [];
// Failed tests are listed again at the end: CI keeps only the tail of the output, and a flaky test must be
// identifiable from it.
const failures = [];
for (const p of packages) {
  const file = join(packagesDir, p, 'test-report.json');
  if (!existsSync(file)) {
    missing.push(p);
    continue;
  }
  const report = JSON.parse(readFileSync(file, 'utf8'));
  passed += report.numPassedTests ?? 0;
  failed += (report.numFailedTests ?? 0) + (report.numRuntimeErrorTestSuites ?? 0);
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  // A suite that crashed before running counts as a failure, not as zero tests.
  failed += (report.testResults ?? []).filter(
    (r) => r.status === 'failed' && (r.assertionResults ?? []).length === 0,
  ).length;
  for (const suite of report.testResults ?? []) {
    const file = (suite.name ?? '').replace(root, '');
    if (suite.status === 'failed' && (suite.assertionResults ?? []).length === 0) {
      failures.push(`${file}: ${firstLines(suite.message)}`);
    }
    for (const test of suite.assertionResults ?? []) {
      if (test.status === 'failed')
        failures.push(`${file} > ${test.fullName}: ${firstLines(test.failureMessages?.[0])}`);
    }
  }
}
if (targets.includes('test') && missing.length) {
  console.error(`test: no test report from ${missing.join(', ')}`);
  failed += missing.length;
}
for (const failure of failures) console.error(`FAILED ${failure}`);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(nxStatus !== 0 || failed > 0 ? 1 : 0);
