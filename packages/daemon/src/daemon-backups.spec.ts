// Backups, restores, snapshots and prebuild logs over gRPC; then health, and the metrics those calls produced.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { credentials, loadPackageDefinition } from '@grpc/grpc-js';
import type { ClientDuplexStream, GrpcObject, ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { describe, expect, it } from 'vitest';
import type { InvalidArgumentError } from '@workbay/api';
import { git } from './test-support/git-server.js';
import { daemonWithRepo, exists, expectError } from './test-support/daemon-suite.js';

describe('daemon over gRPC', () => {
  const { t, gitInit } = daemonWithRepo();

  it('clones with git, backs up, disposes with git status, and restores the backup on the next start (never an empty start)', async () => {
    const first = await t.client.initWorkspace({
      id: 'inst-1',
      metadata: { owner: 'bob', metaId: 'ws-bob' },
      initializer: gitInit(),
    });
    expect(first.contentSource).toBe('from-other');
    expect(first.initializerMetrics[0]).toMatchObject({ type: 'git' });
    expect(first.initializerMetrics[0]!.size).toBeGreaterThan(0);
    const dir = first.contentLocation;
    expect(await readFile(join(dir, 'README.md'), 'utf8')).toBe('# hello\n');
    await writeFile(join(dir, 'README.md'), '# changed by the user\n');
    await writeFile(join(dir, 'notes.txt'), 'uncommitted work\n');
    await mkdir(join(dir, 'deep/dir'), { recursive: true });
    await writeFile(join(dir, 'deep/dir/file'), 'x');
    git(dir, '-c', 'user.name=u', '-c', 'user.email=u@x', 'commit', '-q', '-am', 'local commit');
    await writeFile(join(dir, 'src/app.txt'), 'edited\n');

    const backup = await t.client.backupWorkspace({ id: 'inst-1' });
    expect(backup.url).toMatch(/^workspaces\/ws-bob\/full\.manifest@workbay-user-bob$/);

    const disposed = await t.client.disposeWorkspace({ id: 'inst-1', backup: true });
    expect(disposed.gitStatus).toMatchObject({
      branch: 'main',
      uncommitedFiles: ['src/app.txt'],
      totalUncommitedFiles: 1,
      totalUntrackedFiles: 2,
      totalUnpushedCommits: 1,
    });
    expect(disposed.gitStatus?.untrackedFiles.sort()).toEqual(['deep/dir/file', 'notes.txt']);
    expect(await exists(dir)).toBe(false);
    expect(await exists(join(t.workingArea, 'inst-1.workspace.json'))).toBe(false);
    expect((await t.client.isWorkspaceExists({ id: 'inst-1' })).exists).toBe(false);
    // Idempotent: a second dispose answers the same.
    expect(await t.client.disposeWorkspace({ id: 'inst-1', backup: true })).toEqual(disposed);

    // The same workspace starts again (new instance, git initializer): its backup wins.
    const second = await t.client.initWorkspace({
      id: 'inst-2',
      metadata: { owner: 'bob', metaId: 'ws-bob' },
      initializer: gitInit(),
    });
    expect(second.contentSource).toBe('from-backup');
    expect(second.initializerMetrics.map((m) => m.type)).toEqual(['backup']);
    expect(await readFile(join(second.contentLocation, 'README.md'), 'utf8')).toBe('# changed by the user\n');
    expect(await readFile(join(second.contentLocation, 'src/app.txt'), 'utf8')).toBe('edited\n');
    expect(await readFile(join(second.contentLocation, 'deep/dir/file'), 'utf8')).toBe('x');
    expect(git(second.contentLocation, 'log', '-1', '--format=%s')).toBe('local commit');
    const marker = JSON.parse(await readFile(join(second.contentLocation, '.workbay/ready'), 'utf8'));
    expect(marker.source).toBe('from-backup');
    await t.client.disposeWorkspace({ id: 'inst-2', backup: false });
  });

  it('takes snapshots (<object>@<bucket>) that a snapshot initializer restores; a missing snapshot is NOT_FOUND', async () => {
    const source = await t.client.initWorkspace({
      id: 'snap-src',
      metadata: { owner: 'dave', metaId: 'ws-snap' },
      initializer: gitInit(),
    });
    await writeFile(join(source.contentLocation, 'built.txt'), 'prebuilt output');
    const { url } = await t.client.takeSnapshot({ id: 'snap-src' });
    expect(url).toMatch(/^workspaces\/ws-snap\/snapshot-\d+\.tar@workbay-user-dave$/);
    const immediate = await t.client.takeSnapshot({ id: 'snap-src', returnImmediately: true });
    expect(immediate.url).not.toBe(url);
    const restored = await t.client.initWorkspace({
      id: 'snap-dst',
      metadata: { owner: 'dave', metaId: 'ws-snap-dst' },
      initializer: { spec: { $case: 'snapshot', value: { snapshot: url } } },
    });
    expect(restored.initializerMetrics[0]).toMatchObject({ type: 'snapshot' });
    expect(await readFile(join(restored.contentLocation, 'built.txt'), 'utf8')).toBe('prebuilt output');
    await expectError(
      t.client.initWorkspace({
        id: 'snap-missing',
        metadata: { owner: 'dave', metaId: 'ws-snap-missing' },
        initializer: {
          spec: { $case: 'snapshot', value: { snapshot: 'workspaces/x/snapshot-1.tar@workbay-user-dave' } },
        },
      }),
      'not-found',
      /snapshot .* not found/,
    );
    for (const id of ['snap-src', 'snap-dst', 'snap-missing']) await t.client.disposeWorkspace({ id, backup: false });
  });

  it('deletes snapshots (DeleteSnapshot): NOT_FOUND the second time, never a backup or its chunks', async () => {
    const ws = await t.client.initWorkspace({
      id: 'del-1',
      metadata: { owner: 'frank', metaId: 'ws-del' },
      initializer: gitInit(),
    });
    await writeFile(join(ws.contentLocation, 'work.txt'), 'kept by the backup');
    const backup = await t.client.backupWorkspace({ id: 'del-1' });
    const { url } = await t.client.takeSnapshot({ id: 'del-1' });
    const [name, bucket] = url.split('@') as [string, string];
    expect(await t.daemon.storage?.stat(bucket, name)).toBeDefined();

    const chunks: string[] = [];
    for await (const info of t.daemon.storage!.list(bucket, { prefix: 'workspaces/ws-del/chunks/' }))
      chunks.push(info.name);
    expect(chunks.length).toBeGreaterThan(0);
    for (const snapshot of [
      backup.url,
      `workspaces/ws-del/full.tar@${bucket}`,
      `${chunks[0]}@${bucket}`,
      `workspaces/ws-del/snapshot-1.tar/../full.manifest@${bucket}`,
      `${name}@workbay-user-frank@x`,
      'no-at-sign',
      '',
    ]) {
      const error = await expectError(t.client.deleteSnapshot({ snapshot }), 'invalid-argument');
      expect((error as InvalidArgumentError).field, snapshot).toBe('snapshot');
    }

    expect(await t.client.deleteSnapshot({ snapshot: url })).toEqual({ wasDeleted: true });
    expect(await t.daemon.storage?.stat(bucket, name)).toBeUndefined();
    await expectError(t.client.deleteSnapshot({ snapshot: url }), 'not-found', /not found/);
    await expectError(
      t.client.deleteSnapshot({ snapshot: 'workspaces/ws-del/snapshot-1.tar@workbay-user-nobody' }),
      'not-found',
    );

    // A snapshot answered early is deleted after its upload, so it cannot reappear.
    const early = await t.client.takeSnapshot({ id: 'del-1', returnImmediately: true });
    expect(await t.client.deleteSnapshot({ snapshot: early.url })).toEqual({ wasDeleted: true });
    const [earlyName] = early.url.split('@') as [string];
    expect(await t.daemon.storage?.stat(bucket, earlyName)).toBeUndefined();

    // The workspace's backup is untouched: the next start restores it.
    await t.client.disposeWorkspace({ id: 'del-1', backup: false });
    const again = await t.client.initWorkspace({
      id: 'del-2',
      metadata: { owner: 'frank', metaId: 'ws-del' },
      initializer: { spec: { $case: 'backup', value: {} } },
    });
    expect(again.contentSource).toBe('from-backup');
    expect(await readFile(join(again.contentLocation, 'work.txt'), 'utf8')).toBe('kept by the backup');
    await t.client.disposeWorkspace({ id: 'del-2', backup: false });
  });

  it('uploads prebuild logs on dispose when asked (backup_logs)', async () => {
    const { contentLocation } = await t.client.initWorkspace({
      id: 'logs-1',
      metadata: { owner: 'erin', metaId: 'ws-logs' },
      initializer: { spec: { $case: 'empty', value: {} } },
    });
    await writeFile(join(contentLocation, '.workbay/prebuild-log-build'), 'npm run build\nok\n');
    await t.client.disposeWorkspace({ id: 'logs-1', backup: true, backupLogs: true });
    const info = await t.daemon.storage?.stat('workbay-user-erin', 'workspaces/ws-logs/instances/logs-1/logs/build');
    expect(info?.size).toBe('npm run build\nok\n'.length);
  });

  // Last, and beside the backup and restore tests: the metrics it checks count what they did on this daemon.
  it('reports health over gRPC and HTTP, and exposes Prometheus metrics', async () => {
    const definition = loadSync(healthProtoPath, { keepCase: true, enums: String });
    const grpc = loadPackageDefinition(definition) as unknown as { grpc: { health: { v1: GrpcObject } } };
    const Health = grpc.grpc.health.v1['Health'] as ServiceClientConstructor;
    const client = new Health(t.daemon.address, credentials.createInsecure());
    const status = await new Promise<{ status: string }>((resolve, reject) =>
      client['Check']!(
        { service: 'wsdaemon.WorkspaceContentService' },
        (error: Error | null, response: { status: string }) => (error ? reject(error) : resolve(response)),
      ),
    );
    client.close();
    expect(status.status).toBe('SERVING');
    // Reflection lists the content service.
    const reflectionProto = join(
      dirname(createRequire(import.meta.url).resolve('@grpc/reflection')),
      '..',
      'proto',
      'grpc',
      'reflection',
      'v1',
      'reflection.proto',
    );
    const reflection = loadPackageDefinition(loadSync(reflectionProto, { keepCase: true })) as unknown as {
      grpc: { reflection: { v1: GrpcObject } };
    };
    const Reflection = reflection.grpc.reflection.v1['ServerReflection'] as ServiceClientConstructor;
    const reflector = new Reflection(t.daemon.address, credentials.createInsecure());
    const services = await new Promise<string[]>((resolve, reject) => {
      const call = reflector['ServerReflectionInfo']!() as ClientDuplexStream<
        unknown,
        { list_services_response?: { service: { name: string }[] } }
      >;
      call.on('data', (response: { list_services_response?: { service: { name: string }[] } }) => {
        resolve((response.list_services_response?.service ?? []).map((service) => service.name));
        call.end();
      });
      call.on('error', reject);
      call.write({ list_services: '' });
    });
    reflector.close();
    expect(services).toContain('wsdaemon.WorkspaceContentService');
    const base = `http://${t.daemon.httpAddress}`;
    expect((await fetch(`${base}/live`)).status).toBe(200);
    expect((await fetch(`${base}/ready`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(
      /workbay_daemon_workspace_initialize_seconds_count\{source="from-other",outcome="success"\} \d+/,
    );
    expect(metrics).toMatch(/workbay_daemon_backup_uploaded_bytes_total\{reason="explicit",format="chunked"\} \d+/);
    expect(metrics).toMatch(/workbay_daemon_restores_total\{kind="backup",outcome="success"\} [1-9]/);
  });
});
