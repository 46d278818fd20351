/**
 * Attacks on git (issue 8, items 1, 2 and 7): every git config key and hook that can run a command, handed in
 * through a request's `custom_config` (to the manager and straight to the daemon) or planted in the content's
 * `.git` before the daemon runs git on it (dispose, backup, snapshot, prebuild). Each attack points at a script
 * that writes a marker outside every content dir; the marker must never appear.
 */
import { chmod, chown, mkdir, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wsman } from '@workbay/api';
import { createGitFixture } from '@workbay/testing';
import type { GitFixture } from '@workbay/testing';
import { evilHooksDir, evilScript, execFileAsync, markerExists, outcome, show } from './attack-kit.js';
import {
  bootWorkbay,
  contentDir,
  gitInit,
  startRequest,
  startRunning,
  stopWorkspace,
  waitForPhase,
} from './harness.js';
import type { Workbay } from './harness.js';

let wb: Workbay;
let plain: GitFixture;
let attrs: GitFixture;
let unauthorized: Server;
let unauthorizedUrl: string;

beforeAll(async () => {
  wb = await bootWorkbay({ allowLocalRemotes: true });
  // Fixtures live in the world-readable boot dir: once git runs as a workspace uid it must still read them.
  const root = path.join(wb.dir, 'git');
  await mkdir(root, { recursive: true });
  await chmod(root, 0o755);
  plain = await createGitFixture({ name: 'plain', root });
  attrs = await createGitFixture({
    name: 'attrs',
    root,
    files: { '.gitattributes': '* filter=evil diff=evil merge=evil\n', 'a.txt': 'a\n', 'b.txt': 'b\n' },
  });
  await execFileAsync('chmod', ['-R', 'a+rX', root]);
  // A remote that always asks for credentials: credential helpers and askpass programs get called here.
  unauthorized = createServer((_req, res) => {
    res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="evil"' });
    res.end();
  });
  await new Promise<void>((resolve) => unauthorized.listen(0, '127.0.0.1', resolve));
  unauthorizedUrl = `http://127.0.0.1:${(unauthorized.address() as AddressInfo).port}/repo.git`;
}, 180_000);

afterAll(async () => {
  unauthorized?.close();
  await plain?.cleanup();
  await attrs?.cleanup();
  await wb?.cleanup();
});

interface ConfigAttack {
  readonly name: string;
  readonly remote: (script: string) => string;
  readonly config: (script: string, wb: Workbay, name: string) => Promise<Record<string, string>>;
}

const configAttacks: readonly ConfigAttack[] = [
  {
    name: 'core.sshCommand',
    remote: () => 'ssh://git@127.0.0.1:1/x.git',
    config: async (s) => ({ 'core.sshCommand': s }),
  },
  { name: 'core.gitProxy', remote: () => 'git://127.0.0.1:1/x.git', config: async (s) => ({ 'core.gitProxy': s }) },
  { name: 'core.fsmonitor', remote: () => plain.url, config: async (s) => ({ 'core.fsmonitor': s }) },
  {
    name: 'core.hooksPath',
    remote: () => plain.url,
    config: async (_s, w, n) => ({ 'core.hooksPath': await evilHooksDir(w, n) }),
  },
  { name: 'filter.evil.smudge', remote: () => attrs.url, config: async (s) => ({ 'filter.evil.smudge': s }) },
  { name: 'filter.evil.clean', remote: () => attrs.url, config: async (s) => ({ 'filter.evil.clean': s }) },
  { name: 'filter.evil.process', remote: () => attrs.url, config: async (s) => ({ 'filter.evil.process': s }) },
  { name: 'diff.evil.textconv', remote: () => attrs.url, config: async (s) => ({ 'diff.evil.textconv': s }) },
  { name: 'merge.evil.driver', remote: () => attrs.url, config: async (s) => ({ 'merge.evil.driver': s }) },
  {
    name: 'include.path',
    remote: () => plain.url,
    config: async (_s, w, n) => ({ 'include.path': await includedConfig(w, n) }),
  },
  {
    name: 'includeIf.gitdir:/.path',
    remote: () => plain.url,
    config: async (_s, w, n) => ({ 'includeIf.gitdir:/.path': await includedConfig(w, n) }),
  },
  { name: 'credential.helper', remote: () => unauthorizedUrl, config: async (s) => ({ 'credential.helper': `!${s}` }) },
  { name: 'core.askPass', remote: () => unauthorizedUrl, config: async (s) => ({ 'core.askPass': s }) },
  {
    name: 'uploadpack.packObjectsHook',
    remote: () => plain.url,
    config: async (s) => ({ 'uploadpack.packObjectsHook': s }),
  },
  {
    name: 'remote.origin.uploadpack',
    remote: () => plain.url,
    config: async (s) => ({ 'remote.origin.uploadpack': s }),
  },
  {
    name: 'protocol.ext.allow with an ext:: remote',
    remote: (s) => `ext::${s}`,
    config: async () => ({ 'protocol.ext.allow': 'always' }),
  },
  {
    name: 'protocol.allow=always with an ext:: remote',
    remote: (s) => `ext::${s}`,
    config: async () => ({ 'protocol.allow': 'always' }),
  },
  {
    name: 'url.insteadOf rewriting https to ext::',
    remote: () => 'https://example.invalid/repo.git',
    config: async (s) => ({ 'protocol.ext.allow': 'always', ['url.ext::' + s + '.insteadOf']: 'https://' }),
  },
];

async function includedConfig(w: Workbay, name: string): Promise<string> {
  const file = path.join(w.dir, 'evil', `${name}.gitconfig`);
  const hooks = await evilHooksDir(w, name);
  await writeFile(file, `[core]\n\thooksPath = ${hooks}\n\tfsmonitor = ${await evilScript(w, name)}\n`);
  await chmod(file, 0o644);
  return file;
}

const slug = (name: string): string =>
  name
    .replace(/[^A-Za-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .toLowerCase();

describe.concurrent('custom_config through the manager (StartWorkspace) runs nothing', () => {
  for (const [i, attack] of configAttacks.entries()) {
    it(`refuses ${attack.name}`, async () => {
      const marker = `mgr-${slug(attack.name)}`;
      const script = await evilScript(wb, marker);
      const customConfig = await attack.config(script, wb, marker);
      const id = `git-mgr-${i}`;
      const request = startRequest({
        id,
        initializer: gitInit(attack.remote(script), { config: { customConfig } }),
      });
      const started = await outcome(wb.manager.startWorkspace(request));
      let failure = started.ok ? '' : show(started);
      if (started.ok) {
        const status = await waitForPhase(wb, id, [wsman.WorkspacePhase.RUNNING]);
        failure = status.conditions?.failed ?? '';
        if (status.phase !== wsman.WorkspacePhase.STOPPED) await stopWorkspace(wb, id);
      }
      expect(markerExists(wb, marker), `${attack.name} ran a command (${failure})`).toBe(false);
      // The allowlist refuses the key by name (before or while initializing), instead of silently dropping it; an
      // attack whose remote is itself forbidden (ext::) may be refused for the remote instead.
      const named = [
        Object.keys(customConfig)[0]!.toLowerCase(),
        ...(attack.remote(script).startsWith('ext::') ? ['remote_uri'] : []),
      ];
      expect(
        named.some((n) => failure.toLowerCase().includes(n)),
        `the refusal names the problem: ${failure}`,
      ).toBe(true);
    });
  }
});

describe('custom_config straight to the daemon (InitWorkspace) runs nothing', () => {
  for (const [i, attack] of configAttacks.entries()) {
    it(`refuses ${attack.name} with INVALID_ARGUMENT`, async () => {
      const marker = `daemon-${slug(attack.name)}`;
      const script = await evilScript(wb, marker);
      const customConfig = await attack.config(script, wb, marker);
      const result = await outcome(
        wb.daemon.initWorkspace({
          id: `git-daemon-${i}`,
          metadata: { owner: 'alice', metaId: `git-daemon-${i}` },
          initializer: gitInit(attack.remote(script), { config: { customConfig } }),
        }),
      );
      await wb.daemon.disposeWorkspace({ id: `git-daemon-${i}`, backup: false }).catch(() => undefined);
      expect(markerExists(wb, marker), `${attack.name} ran a command (${show(result)})`).toBe(false);
      expect(result.codeName, show(result)).toBe('INVALID_ARGUMENT');
    });
  }
});

it('refuses an ext:: remote without any custom config', async () => {
  const script = await evilScript(wb, 'ext-remote');
  const result = await outcome(
    wb.daemon.initWorkspace({
      id: 'git-ext-remote',
      metadata: { owner: 'alice', metaId: 'git-ext-remote' },
      initializer: gitInit(`ext::${script}`),
    }),
  );
  await wb.daemon.disposeWorkspace({ id: 'git-ext-remote', backup: false }).catch(() => undefined);
  expect(markerExists(wb, 'ext-remote'), show(result)).toBe(false);
  expect(result.codeName, show(result)).toBe('INVALID_ARGUMENT');
});

// ---------------------------------------------------------------------------------------------------------------
// Planted in content before the daemon runs git there

interface Plant {
  readonly name: string;
  /** Changes the checked-out repository at `repo` the way the workspace's own code could. */
  readonly plant: (repo: string, script: string, marker: string) => Promise<void>;
}

const gitConfig = async (repo: string, key: string, value: string): Promise<void> => {
  await execFileAsync('git', ['config', '-f', path.join(repo, '.git', 'config'), key, value]);
};

const plants: readonly Plant[] = [
  { name: 'core.fsmonitor', plant: (r, s) => gitConfig(r, 'core.fsmonitor', s) },
  { name: 'core.hooksPath', plant: async (r, _s, m) => gitConfig(r, 'core.hooksPath', await evilHooksDir(wb, m)) },
  {
    name: 'hooks in .git/hooks',
    plant: async (r, _s, m) => {
      const hooks = await evilHooksDir(wb, m);
      await execFileAsync('cp', ['-a', `${hooks}/.`, path.join(r, '.git', 'hooks')]);
    },
  },
  {
    name: 'filter.*.clean/smudge/process with .gitattributes',
    plant: async (r, s) => {
      await writeFile(path.join(r, '.gitattributes'), '* filter=evil diff=evil\n');
      await appendFile(path.join(r, 'README.md'), 'changed\n');
      for (const k of ['clean', 'smudge', 'process']) await gitConfig(r, `filter.evil.${k}`, s);
      await gitConfig(r, 'filter.evil.required', 'true');
    },
  },
  {
    name: 'diff.*.textconv and diff.external',
    plant: async (r, s) => {
      await writeFile(path.join(r, '.gitattributes'), '* diff=evil\n');
      await appendFile(path.join(r, 'README.md'), 'changed\n');
      await gitConfig(r, 'diff.evil.textconv', s);
      await gitConfig(r, 'diff.external', s);
    },
  },
  {
    name: 'include.path to a config in content',
    plant: async (r, s) => {
      await writeFile(path.join(r, 'evil.gitconfig'), `[core]\n\tfsmonitor = ${s}\n`);
      await gitConfig(r, 'include.path', '../evil.gitconfig');
    },
  },
  {
    name: 'core.sshCommand, core.gitProxy, credential.helper, core.askPass on an ssh/git remote',
    plant: async (r, s) => {
      await gitConfig(r, 'core.sshCommand', s);
      await gitConfig(r, 'core.gitProxy', s);
      await gitConfig(r, 'credential.helper', `!${s}`);
      await gitConfig(r, 'core.askPass', s);
      await gitConfig(r, 'remote.origin.url', 'ssh://git@127.0.0.1:1/x.git');
      await gitConfig(r, 'remote.upstream.url', 'git://127.0.0.1:1/x.git');
    },
  },
  {
    name: 'uploadpack.packObjectsHook and core.alternateRefsCommand',
    plant: async (r, s) => {
      await gitConfig(r, 'uploadpack.packObjectsHook', s);
      await gitConfig(r, 'core.alternateRefsCommand', s);
    },
  },
  {
    name: 'a .git file pointing at a host repository with an fsmonitor',
    plant: async (r, s, m) => {
      const hostRepo = path.join(wb.dir, 'evil', `${m}-repo`);
      await execFileAsync('git', ['init', '--quiet', hostRepo]);
      await gitConfig(hostRepo, 'core.fsmonitor', s);
      await execFileAsync('chmod', ['-R', 'a+rwX', hostRepo]);
      await rm(path.join(r, '.git'), { recursive: true, force: true });
      await writeFile(path.join(r, '.git'), `gitdir: ${path.join(hostRepo, '.git')}\n`);
    },
  },
];

/** Plants like the workspace would: as the content's owner, so only a defence (not a uid mismatch) stops it. */
async function plantAsOwner(id: string, plant: Plant, marker: string): Promise<void> {
  const content = contentDir(wb, id);
  const repo = path.join(content, 'repo');
  await plant.plant(repo, await evilScript(wb, marker), marker);
  const owner = await stat(content);
  await execFileAsync('chown', ['-R', '-h', `${owner.uid}:${owner.gid}`, repo]);
  await chown(repo, owner.uid, owner.gid);
}

describe.concurrent('git config and hooks planted in content never run when the daemon runs git', () => {
  const triggers = ['dispose', 'backup-and-snapshot', 'prebuild'] as const;
  for (const [i, plant] of plants.entries()) {
    for (const trigger of triggers) {
      it(`${plant.name}: ${trigger}`, async () => {
        const id = `plant-${i}-${trigger}`;
        const marker = `plant-${slug(plant.name)}-${trigger}`;
        await startRunning(wb, {
          id,
          initializer: gitInit(plain.url),
          ...(trigger === 'prebuild' ? { type: wsman.WorkspaceType.PREBUILD } : {}),
        });
        await plantAsOwner(id, plant, marker);
        if (trigger === 'backup-and-snapshot') {
          const backup = await outcome(wb.manager.backupWorkspace({ id }));
          const snapshot = await outcome(wb.manager.takeSnapshot({ id }));
          expect(markerExists(wb, marker), `${show(backup)} / ${show(snapshot)}`).toBe(false);
        }
        await stopWorkspace(wb, id);
        expect(markerExists(wb, marker)).toBe(false);
      });
    }
  }
});

it('the daemon is still serving after every git attack', async () => {
  expect(wb.alive()).toBe(true);
  expect((await outcome(wb.daemon.isWorkspaceExists({ id: 'nope' }))).ok).toBe(true);
  expect((await outcome(wb.manager.getWorkspaces({}))).ok).toBe(true);
});
