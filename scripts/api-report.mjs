// The `api-report` target of every published package: API Extractor writes the package's public surface to
// `api/<name>.api.md` (checked in). Locally the report is updated; under CI a difference fails the run, so a change
// to a public surface is always visible in review (update it with `npx nx run-many -t api-report` and commit).
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

mkdirSync(join(process.cwd(), 'api'), { recursive: true });
const ci = process.env.CI === 'true';
const bin = join(new URL('..', import.meta.url).pathname, 'node_modules', '.bin', 'api-extractor');
const result = spawnSync(bin, ['run', ...(ci ? [] : ['--local'])], { stdio: 'inherit' });
if (result.status !== 0 && ci) {
  console.error('api-report: the public API changed: run `npx nx run-many -t api-report` and commit packages/*/api/');
}
process.exit(result.status ?? 1);
