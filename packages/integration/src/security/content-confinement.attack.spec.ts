/**
 * Initializers are confined (issue 8, item 7; invariant 11): an owner never reaches another owner's snapshot or
 * backup, local git remotes are refused unless the operator allows them, and a composite initializer never
 * writes (git clone, download) through a link an earlier step put into content.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentservice, wsman } from '@workbay/api';
import { createGitFixture, startGitHttpServer } from '@workbay/testing';
import type { GitFixture, GitHttpServer } from '@workbay/testing';
import { execFileAsync, outcome, show } from './attack-kit.js';
import { createVictims, pristine, requestWith, uploadArchive, victimState } from './content-kit.js';
import type { Victims } from './content-kit.js';
import {
  bootWorkbay,
  contentDir,
  emptyInit,
  gitInit,
  listTree,
  snapshotInit,
  stopWorkspace,
  waitForPhase,
} from './harness.js';
import type { Workbay } from './harness.js';

let wb: Workbay;
let v: Victims;
let repo: GitFixture;
let gitServer: GitHttpServer;
let files: Server;
let filesUrl = '';
/** The files server answers `downloaded\n`; downloads must name its digest. */
const downloadDigest = `sha256:${createHash('sha256').update('downloaded\n').digest('hex')}`;

beforeAll(async () => {
  wb = await bootWorkbay();
  v = await createVictims(wb);
  const root = path.join(wb.dir, 'git');
  await mkdir(root, { recursive: true });
  repo = await createGitFixture({ name: 'local', root });
  await execFileAsync('chmod', ['-R', 'a+rX', root]);
  gitServer = await startGitHttpServer({ repoRoot: root });
  files = createServer((_req, res) => res.end('downloaded\n'));
  await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
  filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
}, 180_000);

afterAll(async () => {
  files?.close();
  await gitServer?.stop();
  await repo?.cleanup();
  await wb?.cleanup();
});

describe("an owner never reaches another owner's snapshots or backups", () => {
  let bobSnapshot = '';
  const secret = `bob-secret-${process.pid}`;
  beforeAll(async () => {
    await wb.daemon.initWorkspace({
      id: 'bob-src',
      metadata: { owner: 'bob', metaId: 'bob-meta' },
      initializer: emptyInit(),
    });
    await writeFile(path.join(contentDir(wb, 'bob-src'), 'secret.txt'), secret);
    bobSnapshot = (await wb.daemon.takeSnapshot({ id: 'bob-src' })).url;
    await wb.daemon.disposeWorkspace({ id: 'bob-src', backup: true });
  });

  /** Every file of an instance's content, read: bob's secret must be in none. */
  const contentHasSecret = async (id: string): Promise<boolean> => {
    for (const rel of await listTree(contentDir(wb, id))) {
      const text = await readFile(path.join(contentDir(wb, id), rel), 'utf8').catch(() => '');
      if (text.includes(secret)) return true;
    }
    return false;
  };

  const names = (): [string, string][] => {
    const [object, bucket] = [
      bobSnapshot.slice(0, bobSnapshot.lastIndexOf('@')),
      bobSnapshot.slice(bobSnapshot.lastIndexOf('@') + 1),
    ];
    return [
      ["bob's snapshot by its name", bobSnapshot],
      ["bob's backup (full.tar) by name", `workspaces/bob-meta/full.tar@${bucket}`],
      ["bob's snapshot through a bucket with ..", `${object}@workbay-user-alice/../${bucket}`],
      ["bob's snapshot through an object with ..", `../${bucket}/${object}@workbay-user-alice`],
      ["bob's snapshot with an upper-case bucket", `${object}@${bucket.toUpperCase()}`],
    ];
  };
  for (const index of [0, 1, 2, 3, 4]) {
    it(`daemon InitWorkspace refuses variant ${index}`, async () => {
      const [label, name] = names()[index]!;
      const id = `alice-steal-${index}`;
      const result = await outcome(
        wb.daemon.initWorkspace({
          id,
          metadata: { owner: 'alice', metaId: 'alice-meta' },
          initializer: snapshotInit(name),
        }),
      );
      const leaked = existsSync(contentDir(wb, id)) && (await contentHasSecret(id));
      await wb.daemon.disposeWorkspace({ id, backup: false }).catch(() => undefined);
      expect(leaked, `${label}: ${show(result)}`).toBe(false);
      expect(result.ok, `${label} was accepted`).toBe(false);
      expect(result.codeName, show(result)).toMatch(/INVALID_ARGUMENT|PERMISSION_DENIED|NOT_FOUND/);
    });
  }

  it("StartWorkspace naming bob's snapshot never runs with bob's content", async () => {
    const started = await outcome(wb.manager.startWorkspace(requestWith('alice-steal-mgr', snapshotInit(bobSnapshot))));
    let leaked = false;
    if (started.ok) {
      const status = await waitForPhase(wb, 'alice-steal-mgr', [wsman.WorkspacePhase.RUNNING]);
      leaked = status.phase === wsman.WorkspacePhase.RUNNING && (await contentHasSecret('alice-steal-mgr'));
      if (status.phase !== wsman.WorkspacePhase.STOPPED) await stopWorkspace(wb, 'alice-steal-mgr');
    }
    expect(leaked, show(started)).toBe(false);
  });

  it("a backup initializer with bob's meta id restores nothing of bob's", async () => {
    const result = await outcome(
      wb.daemon.initWorkspace({
        id: 'alice-bob-meta',
        metadata: { owner: 'alice', metaId: 'bob-meta' },
        initializer: { spec: { $case: 'backup', value: { checkoutLocation: 'x' } } },
      }),
    );
    const leaked = existsSync(contentDir(wb, 'alice-bob-meta')) && (await contentHasSecret('alice-bob-meta'));
    await wb.daemon.disposeWorkspace({ id: 'alice-bob-meta', backup: false }).catch(() => undefined);
    expect(leaked, show(result)).toBe(false);
  });
});

describe('local git remotes are refused unless the operator allows them', () => {
  const remotes = (): [string, string][] => [
    ['a local path', repo.path],
    ['file://', repo.url],
    ['/etc', '/etc'],
    ['a relative path', '../../../../etc'],
    ['file:///etc/', 'file:///etc/'],
  ];
  for (const index of [0, 1, 2, 3, 4]) {
    it(`refuses remote ${index} with INVALID_ARGUMENT and leaves no content`, async () => {
      const [label, remote] = remotes()[index]!;
      const id = `local-remote-${index}`;
      const result = await outcome(
        wb.daemon.initWorkspace({ id, metadata: { owner: 'alice', metaId: id }, initializer: gitInit(remote) }),
      );
      const files = await listTree(contentDir(wb, id));
      await wb.daemon.disposeWorkspace({ id, backup: false }).catch(() => undefined);
      expect(files, label).toEqual([]);
      expect(result.codeName, `${label}: ${show(result)}`).toBe('INVALID_ARGUMENT');
      expect(result.field ?? result.message).toMatch(/remote/i);
    });
  }
});

describe('a composite initializer never writes through a link an earlier step restored', () => {
  const composite = (...steps: contentservice.WorkspaceInitializer[]): contentservice.WorkspaceInitializer =>
    contentservice.WorkspaceInitializer.fromPartial({ spec: { $case: 'composite', value: { initializer: steps } } });
  const linkSnapshot = (label: string, at: string): Promise<string> =>
    uploadArchive(wb, label, 'alice', async (stage) => {
      await mkdir(path.dirname(path.join(stage, at)), { recursive: true });
      await symlink(v.victim, path.join(stage, at));
    });

  it('control: the same git clone and download without links land in content', async () => {
    const download = contentservice.WorkspaceInitializer.fromPartial({
      spec: {
        $case: 'download',
        value: { files: [{ url: `${filesUrl}/f`, digest: downloadDigest, filePath: 'ok.txt' }], targetLocation: 'dl' },
      },
    });
    const result = await outcome(
      wb.daemon.initWorkspace({
        id: 'composite-control',
        metadata: { owner: 'alice', metaId: 'composite-control' },
        initializer: composite(gitInit(gitServer.urlFor('local'), { checkoutLocation: 'repo' }), download),
      }),
    );
    const files = await listTree(contentDir(wb, 'composite-control'));
    await wb.daemon.disposeWorkspace({ id: 'composite-control', backup: false }).catch(() => undefined);
    expect(result.ok, show(result)).toBe(true);
    expect(files).toContain('dl/ok.txt');
    expect(files).toContain('repo/README.md');
  });

  it('git clone into a checkout location that is a link out of content', async () => {
    const snapshot = await linkSnapshot('composite-git', 'repo');
    const result = await outcome(
      wb.daemon.initWorkspace({
        id: 'composite-git',
        metadata: { owner: 'alice', metaId: 'composite-git' },
        initializer: composite(
          snapshotInit(snapshot),
          gitInit(gitServer.urlFor('local'), { checkoutLocation: 'repo' }),
        ),
      }),
    );
    await wb.daemon.disposeWorkspace({ id: 'composite-git', backup: false }).catch(() => undefined);
    expect(await victimState(v), show(result)).toBe(pristine);
  });

  it('a download into a target location that is a link out of content', async () => {
    const snapshot = await linkSnapshot('composite-dl', 'dl');
    const download = contentservice.WorkspaceInitializer.fromPartial({
      spec: {
        $case: 'download',
        value: {
          files: [{ url: `${filesUrl}/f`, digest: downloadDigest, filePath: 'pwned.txt' }],
          targetLocation: 'dl',
        },
      },
    });
    const result = await outcome(
      wb.daemon.initWorkspace({
        id: 'composite-dl',
        metadata: { owner: 'alice', metaId: 'composite-dl' },
        initializer: composite(snapshotInit(snapshot), download),
      }),
    );
    await wb.daemon.disposeWorkspace({ id: 'composite-dl', backup: false }).catch(() => undefined);
    expect(await victimState(v), show(result)).toBe(pristine);
  });

  it('a download whose file path leaves the target location', async () => {
    const download = contentservice.WorkspaceInitializer.fromPartial({
      spec: {
        $case: 'download',
        value: {
          files: [
            {
              url: `${filesUrl}/f`,
              digest: downloadDigest,
              filePath: path.relative(path.join(wb.workingArea, 'dl-escape', 'x'), path.join(v.victim, 'pwned')),
            },
          ],
          targetLocation: 'x',
        },
      },
    });
    const result = await outcome(
      wb.daemon.initWorkspace({
        id: 'dl-escape',
        metadata: { owner: 'alice', metaId: 'dl-escape' },
        initializer: download,
      }),
    );
    await wb.daemon.disposeWorkspace({ id: 'dl-escape', backup: false }).catch(() => undefined);
    expect(await victimState(v), show(result)).toBe(pristine);
    expect(result.codeName, show(result)).toBe('INVALID_ARGUMENT');
  });
});
