// `prepack` of every published package: refuses to pack a package whose build output is missing or older
// than its sources (a fresh clone would otherwise publish README + package.json only).
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.cwd();
const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
const entries = [pkg.main, pkg.types, ...Object.values(pkg.bin ?? {})].filter(Boolean);
const missing = entries.filter((file) => !existsSync(join(dir, file)));
if (missing.length) {
  console.error(`${pkg.name}: not built (${missing.join(', ')} missing): run 'npx nx run ${pkg.name}:build' first`);
  process.exit(1);
}
/** The newest mtime of the files under `root` that `keep` selects. */
const newest = (root, keep) => {
  let latest = 0;
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    const path = join(root, entry.name);
    if (entry.isDirectory()) latest = Math.max(latest, newest(path, keep));
    else if (keep(entry.name)) latest = Math.max(latest, statSync(path).mtimeMs);
  }
  return latest;
};
// An incremental build rewrites only the outputs of changed sources: compare with the newest output, not one file.
const built = newest(join(dir, 'dist'), (name) => name.endsWith('.js'));
const sources = (name) => name.endsWith('.ts') && !name.endsWith('.spec.ts');
if (existsSync(join(dir, 'src')) && newest(join(dir, 'src'), sources) > built) {
  console.error(`${pkg.name}: dist is older than src: run 'npx nx run ${pkg.name}:build' first`);
  process.exit(1);
}
