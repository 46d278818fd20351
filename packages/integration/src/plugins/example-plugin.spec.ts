/**
 * The plugin authoring guide's example storage plugin, loaded by a real daemon by package name (as an operator's
 * config would), backing up and restoring a workspace over real gRPC.
 */
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkspaceContentClient } from '@workbay/api';
import type { WorkspaceContentClient } from '@workbay/api';
import { createDaemon } from '@workbay/daemon';
import type { Daemon } from '@workbay/daemon';

const empty = { spec: { $case: 'empty' as const, value: {} } };

describe('the example storage plugin in a real daemon', () => {
  let root: string;
  let daemon: Daemon;
  let client: WorkspaceContentClient;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'workbay-example-plugin-'));
    daemon = await createDaemon({
      workingArea: join(root, 'workspaces'),
      grpc: { address: '127.0.0.1:0' },
      http: { address: 'off' },
      plugins: ['@workbay/storage-example'],
      storage: { kind: 'example', example: { root: join(root, 'blobs') } },
      log: { level: 'silent' },
      diskGuard: { minFree: 0 },
      housekeeping: { interval: 0 },
      quota: { mode: 'none' },
    }).start();
    client = createWorkspaceContentClient(daemon.address);
  });

  afterAll(async () => {
    client?.close();
    await daemon?.stop();
    await rm(root, { recursive: true, force: true });
  });

  it('backs up into the plugin store on dispose, and the next start restores from it', async () => {
    const first = await client.initWorkspace({
      id: 'ex-1',
      metadata: { owner: 'carol', metaId: 'ws-carol' },
      initializer: empty,
    });
    await writeFile(join(first.contentLocation, 'notes.txt'), 'kept by the example plugin\n');
    await client.disposeWorkspace({ id: 'ex-1', backup: true });

    // The backup's objects are files of the example backend (hex-named .obj files in the owner's bucket).
    const objects = await readdir(join(root, 'blobs', 'workbay-user-carol'));
    expect(objects.filter((name) => name.endsWith('.obj')).length).toBeGreaterThan(0);

    const second = await client.initWorkspace({
      id: 'ex-2',
      metadata: { owner: 'carol', metaId: 'ws-carol' },
      initializer: empty,
    });
    expect(second.contentSource).toBe('from-backup');
    expect(await readFile(join(second.contentLocation, 'notes.txt'), 'utf8')).toBe('kept by the example plugin\n');
    await client.disposeWorkspace({ id: 'ex-2', backup: false });
  });
});
