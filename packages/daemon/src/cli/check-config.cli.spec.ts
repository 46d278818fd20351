/**
 * `workbay-daemon check-config` with the built binary: it loads the plugins and runs their `parseConfig`, so an
 * unknown storage key, an uninstalled plugin or a plugin that fails to import is a config error naming the file
 * and key (exit 2), with the plugin's own import error; and the manager's storage/plugins section
 * (`--manager-config`, written by `workbay up`) is merged and blamed on the manager's file.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = path.dirname(fileURLToPath(import.meta.url));
const cliPath = path.resolve(here, '../../dist/cli/main.js');

let dir: string;

function daemon(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function file(name: string, text: string): Promise<string> {
  const p = path.join(dir, name);
  await writeFile(p, text);
  return p;
}

beforeAll(async () => {
  if (!existsSync(cliPath)) throw new Error(`build @workbay/daemon first: ${cliPath} is missing`);
  dir = await mkdtemp(path.join(os.tmpdir(), 'workbay-check-config-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('workbay-daemon check-config', () => {
  it('refuses an unknown key of the storage backend, naming file and key', async () => {
    const config = await file('unknown.yaml', `storage: { kind: fs, root: ${dir}/s, rooot: typo }\n`);
    const result = await daemon(['check-config', config]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(`workbay-daemon: storage.rooot: unknown key (in ${config})\n`);
  });

  it('refuses a plugin that is not installed, with the import error', async () => {
    const config = await file('missing.yaml', "plugins: ['@workbay/storage-not-installed']\n");
    const result = await daemon(['check-config', config]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('plugins[0]: ');
    expect(result.stderr).toContain("(is it installed?): Cannot find package '@workbay/storage-not-installed'");
    expect(result.stderr).toContain(`(in ${config})`);
  });

  it("shows a plugin's own import error (a dependency it lacks, an exception at load)", async () => {
    const lacking = await file('lacking.mjs', "import 'left-pad-never-installed';\nexport const plugin = {};\n");
    const throwing = await file('throwing.mjs', "throw new Error('the plugin broke at load time');\n");
    for (const [plugin, expected] of [
      [lacking, "Cannot find package 'left-pad-never-installed'"],
      [throwing, 'the plugin broke at load time'],
    ] as const) {
      const config = await file('broken.yaml', `plugins: ['${plugin}']\n`);
      const result = await daemon(['check-config', config]);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(expected);
      expect(result.stderr).not.toContain('is it installed');
    }
  });

  it("runs the example plugin's parseConfig: a good section passes, a missing root is named", async () => {
    const good = await file(
      'example.yaml',
      `plugins: ['@workbay/storage-example']\nstorage: { kind: example, root: ${dir}/blobs }\n`,
    );
    const ok = await daemon(['check-config', good]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ storage: { kind: 'example', root: `${dir}/blobs` } });

    const bad = await file('example-bad.yaml', "plugins: ['@workbay/storage-example']\nstorage: { kind: example }\n");
    const failed = await daemon(['check-config', bad]);
    expect(failed.code).toBe(2);
    expect(failed.stderr).toMatch(new RegExp(`^workbay-daemon: storage\\.root: .* \\(in ${bad}\\)\\n$`));

    const unknownKind = await file('kind.yaml', 'storage: { kind: example, root: /x }\n');
    const noPlugin = await daemon(['check-config', unknownKind]);
    expect(noPlugin.code).toBe(2);
    expect(noPlugin.stderr).toContain("storage.kind: no storage backend of kind 'example' (registered: fs)");
  });

  it("takes storage and plugins from the manager's section and blames its file", async () => {
    const own = await file('own.yaml', 'quota: { mode: none }\n');
    const section = await file(
      'section.json',
      JSON.stringify({
        source: '/etc/workbay.yaml',
        storage: { kind: 'example', root: `${dir}/m` },
        plugins: ['@workbay/storage-example'],
      }),
    );
    const ok = await daemon(['--config', own, '--manager-config', section, 'check-config']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({
      quota: { mode: 'none' },
      plugins: ['@workbay/storage-example'],
      storage: { kind: 'example', root: `${dir}/m` },
    });

    const typo = await file(
      'typo.json',
      JSON.stringify({ source: '/etc/workbay.yaml', storage: { kind: 'example', root: '/m', bukket: 'x' } }),
    );
    const noPlugin = await daemon(['--config', own, '--manager-config', typo, 'check-config']);
    expect(noPlugin.stderr).toContain("storage.kind: no storage backend of kind 'example'");
    expect(noPlugin.stderr).toContain('(in /etc/workbay.yaml)');

    const both = await file('both.yaml', `storage: { kind: fs, root: ${dir}/f }\n`);
    const conflict = await daemon(['--config', both, '--manager-config', section, 'check-config']);
    expect(conflict.code).toBe(2);
    expect(conflict.stderr).toContain(`storage: storage is also set in the daemon's config ${both}; keep one of them`);
  });

  it('prints its version', async () => {
    const result = await daemon(['--version']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^\d+\.\d+\.\d+\S*\n$/);
  });
});
