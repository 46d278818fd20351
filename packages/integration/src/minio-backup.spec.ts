/**
 * The daemon's backups and restores against a real MinIO server (through the storage-minio plugin, loaded by
 * package name), over real gRPC.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RemoteStorage } from '@workbay/api';
import { PluginHost, createWorkspaceContentClient, isWorkbayError } from '@workbay/api';
import { plugin as minioPlugin } from '@workbay/storage-minio';
import type { MinioServer } from '@workbay/testing';
import { startMinio } from '@workbay/testing';
import { minioDaemonConfig, startMinioDaemon } from './index.js';

const empty = { spec: { $case: 'empty' as const, value: {} } };

/** Path, kind, mode, content hash and link target of every entry (the ready marker left out). */
async function describeTree(root: string): Promise<string[]> {
  const out: string[] = [];
  async function visit(dir: string, prefix: string): Promise<void> {
    for (const name of (await readdir(dir)).sort()) {
      const path = prefix ? `${prefix}/${name}` : name;
      if (path === '.workbay/ready') continue;
      const abs = join(dir, name);
      const info = await lstat(abs);
      const mode = (info.mode & 0o7777).toString(8);
      if (info.isDirectory()) {
        out.push(`d ${path} ${mode}`);
        await visit(abs, path);
      } else if (info.isSymbolicLink()) {
        out.push(`l ${path} -> ${await readlink(abs)}`);
      } else {
        out.push(
          `f ${path} ${mode} ${createHash('sha256')
            .update(await readFile(abs))
            .digest('hex')} ${Math.floor(info.mtimeMs / 1000)}`,
        );
      }
    }
  }
  await visit(root, '');
  return out;
}

async function fillWorkspace(dir: string, files: number, size: number): Promise<void> {
  await mkdir(join(dir, 'src/nested'), { recursive: true });
  for (let i = 0; i < files; i++)
    await writeFile(join(dir, i % 2 ? 'src' : 'src/nested', `file-${i}.bin`), randomBytes(size));
  await writeFile(join(dir, 'run.sh'), '#!/bin/sh\necho hi\n');
  await chmod(join(dir, 'run.sh'), 0o755);
  await symlink('src/file-1.bin', join(dir, 'latest'));
}

describe('daemon backups on MinIO', () => {
  let minio: MinioServer;
  let storage: RemoteStorage;

  beforeAll(async () => {
    minio = await startMinio();
    storage = await new PluginHost().use(minioPlugin).createStorage('minio', {
      endpoint: minio.endpoint,
      accessKey: minio.accessKey,
      secretKey: minio.secretKey,
      region: minio.region,
    });
  });
  afterAll(async () => {
    await storage?.close?.();
    await minio?.stop();
  });

  async function objectNames(bucket: string, prefix = ''): Promise<string[]> {
    const names: string[] = [];
    for await (const info of storage.list(bucket, { prefix })) names.push(info.name);
    return names;
  }

  it('backs up incrementally, disposes, and a restarted workspace gets its files back from MinIO', async () => {
    const t = await startMinioDaemon({ minio });
    try {
      const first = await t.client.initWorkspace({
        id: 'mi-1',
        metadata: { owner: 'alice', metaId: 'ws-alice' },
        initializer: empty,
      });
      await fillWorkspace(first.contentLocation, 40, 64 * 1024);
      const backup = await t.client.backupWorkspace({ id: 'mi-1' });
      expect(backup.url).toBe('workspaces/ws-alice/full.manifest@workbay-user-alice');
      expect((await objectNames('workbay-user-alice', 'workspaces/ws-alice/chunks/')).length).toBeGreaterThan(0);
      const full = t.daemon.service.describe('mi-1')?.lastBackup?.uploadedBytes ?? 0;
      expect(full).toBeGreaterThan(40 * 64 * 1024);

      await writeFile(join(first.contentLocation, 'src/file-3.bin'), randomBytes(64 * 1024));
      await t.client.backupWorkspace({ id: 'mi-1' });
      const incremental = t.daemon.service.describe('mi-1')?.lastBackup?.uploadedBytes ?? 0;
      expect(incremental).toBeLessThan(full / 4);

      const expected = await describeTree(first.contentLocation);
      const disposed = await t.client.disposeWorkspace({ id: 'mi-1', backup: true });
      expect(disposed).toEqual({}); // not a git repository
      const second = await t.client.initWorkspace({
        id: 'mi-2',
        metadata: { owner: 'alice', metaId: 'ws-alice' },
        initializer: empty,
      });
      expect(second.contentSource).toBe('from-backup');
      expect(await describeTree(second.contentLocation)).toEqual(expected);
      await t.client.disposeWorkspace({ id: 'mi-2', backup: false });
    } finally {
      await t.cleanup();
    }
  });

  it('plain tar backups (zstd) in a shared bucket restore the same way', async () => {
    await storage.ensureBucket('workbay-shared');
    const t = await startMinioDaemon({
      minio,
      layout: { mode: 'shared', bucket: 'workbay-shared' },
      backup: { format: 'tar', compression: 'zstd' },
    });
    try {
      const first = await t.client.initWorkspace({
        id: 'tar-1',
        metadata: { owner: 'bob', metaId: 'ws-bob' },
        initializer: empty,
      });
      await fillWorkspace(first.contentLocation, 10, 100_000);
      const backup = await t.client.backupWorkspace({ id: 'tar-1' });
      expect(backup.url).toBe('bob/workspaces/ws-bob/full.tar@workbay-shared');
      const head = await storage.download('workbay-shared', 'bob/workspaces/ws-bob/full.tar');
      const firstChunk = (await head[Symbol.asyncIterator]().next()).value as Buffer;
      head.destroy();
      expect(firstChunk.subarray(0, 4)).toEqual(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])); // zstd frame
      const expected = await describeTree(first.contentLocation);
      await t.client.disposeWorkspace({ id: 'tar-1', backup: true });
      const second = await t.client.initWorkspace({
        id: 'tar-2',
        metadata: { owner: 'bob', metaId: 'ws-bob' },
        initializer: empty,
      });
      expect(second.contentSource).toBe('from-backup');
      expect(await describeTree(second.contentLocation)).toEqual(expected);
    } finally {
      await t.cleanup();
    }
  });

  it('snapshots land in MinIO and snapshot initializers restore them; missing ones are NOT_FOUND', async () => {
    const t = await startMinioDaemon({ minio });
    try {
      const source = await t.client.initWorkspace({
        id: 'snap-1',
        metadata: { owner: 'carol', metaId: 'ws-carol' },
        initializer: empty,
      });
      await fillWorkspace(source.contentLocation, 5, 10_000);
      const { url } = await t.client.takeSnapshot({ id: 'snap-1' });
      expect(url).toMatch(/^workspaces\/ws-carol\/snapshot-\d+\.tar@workbay-user-carol$/);
      const copy = await t.client.initWorkspace({
        id: 'snap-2',
        metadata: { owner: 'carol', metaId: 'ws-carol-copy' },
        initializer: { spec: { $case: 'snapshot', value: { snapshot: url } } },
      });
      expect(await describeTree(copy.contentLocation)).toEqual(await describeTree(source.contentLocation));
      const missing = await t.client
        .initWorkspace({
          id: 'snap-3',
          metadata: { owner: 'carol', metaId: 'ws-carol-3' },
          initializer: {
            spec: { $case: 'snapshot', value: { snapshot: 'workspaces/x/snapshot-1.tar@workbay-user-carol' } },
          },
        })
        .catch((e: unknown) => e);
      expect(isWorkbayError(missing, 'not-found')).toBe(true);
    } finally {
      await t.cleanup();
    }
  });

  it('SIGKILL of the daemon mid-upload: after a restart the previous backup comes back byte-identical', async () => {
    const root = join(minio.dir, '..', `workbay-crash-${Date.now()}`);
    await mkdir(root, { recursive: true });
    const config = minioDaemonConfig(root, minio, { backup: { packSize: '1MiB', uploadConcurrency: 1 } });
    const configPath = join(root, 'daemon.json');
    await writeFile(configPath, JSON.stringify(config));
    // The daemon's own CLI, as a deployment runs it.
    const cli = join(dirname(fileURLToPath(import.meta.resolve('@workbay/daemon'))), 'cli', 'main.js');
    const child = spawn(process.execPath, [cli, '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      const address = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          const line = out.split('\n').find((l) => l.includes('"listening"'));
          if (line) resolve((JSON.parse(line) as { grpc: string }).grpc);
        });
        child.once('exit', (code) => reject(new Error(`daemon exited (${code}): ${stderr}`)));
      });
      const client = createWorkspaceContentClient(address, { defaultTimeoutMs: 120_000 });
      const { contentLocation } = await client.initWorkspace({
        id: 'crash',
        metadata: { owner: 'dave', metaId: 'ws-crash' },
        initializer: empty,
      });
      await fillWorkspace(contentLocation, 8, 256 * 1024);
      await client.backupWorkspace({ id: 'crash' });
      const expected = await describeTree(contentLocation);
      const manifestBefore = await storage.stat('workbay-user-dave', 'workspaces/ws-crash/full.manifest');
      const packsBefore = (await objectNames('workbay-user-dave', 'workspaces/ws-crash/chunks/')).length;

      for (let i = 0; i < 40; i++) await writeFile(join(contentLocation, `big-${i}.bin`), randomBytes(1024 * 1024));
      const pending = client.backupWorkspace({ id: 'crash' }).catch(() => undefined);
      let packs = packsBefore;
      for (let i = 0; i < 600 && packs < packsBefore + 2; i++) {
        await sleep(25);
        packs = (await objectNames('workbay-user-dave', 'workspaces/ws-crash/chunks/')).length;
      }
      expect(packs).toBeGreaterThanOrEqual(packsBefore + 2);
      child.kill('SIGKILL');
      await exited;
      await pending;
      client.close();

      const manifestAfter = await storage.stat('workbay-user-dave', 'workspaces/ws-crash/full.manifest');
      expect(manifestAfter?.digest).toBe(manifestBefore?.digest);
      const t = await startMinioDaemon({ minio, root });
      try {
        expect((await t.client.isWorkspaceExists({ id: 'crash' })).exists).toBe(true);
        const restored = await t.client.initWorkspace({
          id: 'crash-2',
          metadata: { owner: 'dave', metaId: 'ws-crash' },
          initializer: empty,
        });
        expect(restored.contentSource).toBe('from-backup');
        expect(await describeTree(restored.contentLocation)).toEqual(expected);
        // The interrupted workspace backs up fine afterwards; the orphaned packs are collected.
        await t.client.backupWorkspace({ id: 'crash' });
        await t.client.disposeWorkspace({ id: 'crash', backup: true });
        const final = await t.client.initWorkspace({
          id: 'crash-3',
          metadata: { owner: 'dave', metaId: 'ws-crash' },
          initializer: empty,
        });
        expect((await readdir(final.contentLocation)).filter((n) => n.startsWith('big-'))).toHaveLength(40);
      } finally {
        await t.stop();
      }
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await rm(root, { recursive: true, force: true });
    }
  });
});
