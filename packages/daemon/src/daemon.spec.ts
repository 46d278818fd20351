import { createHash } from 'node:crypto';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { credentials, loadPackageDefinition } from '@grpc/grpc-js';
import type { ClientDuplexStream, GrpcObject, ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import type { InvalidArgumentError } from '@workbay/api';
import { execFileSync } from 'node:child_process';
import { createWorkspaceContentClient } from '@workbay/api';
import { createRepo, git, scratch } from './test-support/git-server.js';
import type { TestRepo } from './test-support/git-server.js';
import { startTestDaemon } from './test-support/daemon-harness.js';
import type { TestDaemon } from './test-support/daemon-harness.js';

const exists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

async function expectError(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isWorkbayError(error, code as never), `expected ${code}, got ${String(error)}`).toBe(true);
  if (pattern) expect((error as Error).message).toMatch(pattern);
  return error as Error;
}

describe('daemon over gRPC', () => {
  let t: TestDaemon;
  let repos: Awaited<ReturnType<typeof scratch>>;
  let repo: TestRepo;

  beforeAll(async () => {
    repos = await scratch();
    repo = await createRepo(repos.path);
    t = await startTestDaemon();
  });
  afterAll(async () => {
    await t.cleanup();
    await repos.cleanup();
  });

  const gitInit = (extra: Record<string, unknown> = {}) => ({
    spec: { $case: 'git' as const, value: { remoteUri: repo.url, ...extra } },
  });

  it('initializes an empty workspace: content location, ready marker, metrics, existence', async () => {
    const response = await t.client.initWorkspace({
      id: 'empty-1',
      metadata: { owner: 'alice', metaId: 'ws-empty-1' },
      initializer: { spec: { $case: 'empty', value: {} } },
    });
    expect(response.contentLocation).toBe(join(t.workingArea, 'empty-1'));
    expect(response.contentSource).toBe('from-other');
    expect(response.initializerMetrics.map((m) => m.type)).toEqual(['empty']);
    const marker = JSON.parse(await readFile(join(response.contentLocation, '.workbay/ready'), 'utf8'));
    expect(marker).toMatchObject({ source: 'from-other', metrics: [{ type: 'empty' }] });
    expect((await t.client.isWorkspaceExists({ id: 'empty-1' })).exists).toBe(true);
    expect((await t.client.isWorkspaceExists({ id: 'nope' })).exists).toBe(false);
    await t.client.waitForInit({ id: 'empty-1' });
    await expectError(
      t.client.initWorkspace({
        id: 'empty-1',
        metadata: { owner: 'alice', metaId: 'ws-empty-1' },
        initializer: { spec: { $case: 'empty', value: {} } },
      }),
      'already-exists',
    );
    const state = JSON.parse(await readFile(join(t.workingArea, 'empty-1.workspace.json'), 'utf8'));
    expect(state.phase).toBe('ready');
  });

  it('fails the initialization when the in-workspace service cannot be served, and records it failed, not ready', async () => {
    // The hook runs beside the durable `ready` write: its failure must still win. A read-only mount over the
    // daemon's `.iws` directory makes serving the socket fail for real (root, as CI runs).
    const iws = join(t.workingArea, '.iws');
    await mkdir(iws, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', iws]);
    try {
      await expectError(
        t.client.initWorkspace({
          id: 'no-iws-1',
          metadata: { owner: 'alice', metaId: 'ws-no-iws-1' },
          initializer: { spec: { $case: 'empty', value: {} } },
        }),
        'internal',
      );
    } finally {
      execFileSync('umount', [iws]);
    }
    const state = JSON.parse(await readFile(join(t.workingArea, 'no-iws-1.workspace.json'), 'utf8'));
    expect(state.phase).toBe('init-failed');
    expect(state.failure).toMatch(/read-only|EROFS/i);
    await expect(t.client.waitForInit({ id: 'no-iws-1' })).rejects.toThrow();
  });

  it('rejects bad input with INVALID_ARGUMENT naming the field, and changes nothing', async () => {
    const field = async (request: Record<string, unknown>): Promise<string> =>
      ((await expectError(t.client.initWorkspace(request), 'invalid-argument')) as InvalidArgumentError).field;
    expect(
      await field({ metadata: { owner: 'a', metaId: 'b' }, initializer: { spec: { $case: 'empty', value: {} } } }),
    ).toBe('id');
    expect(await field({ id: 'x1', metadata: { owner: 'a', metaId: 'b' } })).toBe('initializer');
    expect(await field({ id: 'x2', initializer: { spec: { $case: 'empty', value: {} } } })).toBe('metadata.owner');
    expect(
      await field({
        id: '../etc',
        metadata: { owner: 'a', metaId: 'b' },
        initializer: { spec: { $case: 'empty', value: {} } },
      }),
    ).toBe('id');
    expect(
      await field({
        id: 'x3',
        metadata: { owner: 'a', metaId: 'b' },
        initializer: {
          spec: {
            $case: 'composite',
            value: {
              initializer: [
                { spec: { $case: 'empty', value: {} } },
                gitInit({ targetMode: 2, cloneTaget: 'bad branch' }),
              ],
            },
          },
        },
      }),
    ).toBe('initializer.composite.initializer[1].git.clone_taget');
    expect(
      await field({
        id: 'x4',
        metadata: { owner: 'a', metaId: 'b' },
        initializer: { spec: { $case: 'snapshot', value: { snapshot: 'no-at-sign' } } },
      }),
    ).toBe('initializer.snapshot.snapshot');
    expect(
      await field({
        id: 'x5',
        metadata: { owner: 'a', metaId: 'b' },
        initializer: gitInit({ checkoutLocation: '../escape' }),
      }),
    ).toBe('initializer.git.checkout_location');
    for (const id of ['x1', 'x2', 'x3', 'x4']) expect((await t.client.isWorkspaceExists({ id })).exists).toBe(false);
    await expectError(t.client.waitForInit({ id: 'never-heard-of' }), 'not-found');
    await expectError(t.client.backupWorkspace({ id: 'never-heard-of' }), 'not-found');
    await expectError(t.client.disposeWorkspace({ id: 'never-heard-of', backup: true }), 'not-found');
  });

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

  it('fails loudly with "no backup found" for a backup initializer without a backup', async () => {
    await expectError(
      t.client.initWorkspace({
        id: 'nb-1',
        metadata: { owner: 'carol', metaId: 'ws-never-backed-up' },
        initializer: { spec: { $case: 'backup', value: {} } },
      }),
      'not-found',
      /no backup found/,
    );
    // The workspace is in a known state: it exists, init failed, WaitForInit says so, dispose cleans up.
    expect((await t.client.isWorkspaceExists({ id: 'nb-1' })).exists).toBe(true);
    await expectError(t.client.waitForInit({ id: 'nb-1' }), 'not-found', /no backup found/);
    await expectError(t.client.backupWorkspace({ id: 'nb-1' }), 'failed-precondition', /initialization failed/);
    expect(await t.client.disposeWorkspace({ id: 'nb-1', backup: true })).toEqual({});
    expect((await t.client.isWorkspaceExists({ id: 'nb-1' })).exists).toBe(false);
  });

  it('WaitForInit waits while a workspace initializes (from the first moment it exists) and reports a failed init', async () => {
    // A download whose response the test holds back: the initialization lasts until the gate opens.
    const payload = Buffer.from('slowly downloaded\n');
    let requested = 0;
    const held: ServerResponse[] = [];
    const server = createServer((req, res) => {
      requested++;
      held.push(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/file`;
    const release = (): void => {
      for (const res of held.splice(0)) res.writeHead(200).end(payload);
    };
    const download = (digest: string) => ({
      spec: {
        $case: 'download' as const,
        value: { targetLocation: '', files: [{ url, filePath: 'slow.txt', digest }] },
      },
    });
    const digest = `sha256:${createHash('sha256').update(payload).digest('hex')}`;
    try {
      const marker = join(t.workingArea, 'slow-1', '.workbay/ready');
      const init = t.client.initWorkspace({
        id: 'slow-1',
        metadata: { owner: 'gina', metaId: 'ws-slow' },
        initializer: download(digest),
      });
      // WaitForInit from the moment InitWorkspace is sent until the download is under way: each call either
      // precedes the workspace (NOT_FOUND) or waits for its content; none may answer before the marker exists.
      const answered: { ok: boolean; markerExisted?: boolean }[] = [];
      const waits: Promise<void>[] = [];
      const wait = (): Promise<void> =>
        t.client.waitForInit({ id: 'slow-1' }).then(
          async () => {
            answered.push({ ok: true, markerExisted: await exists(marker) });
          },
          (error: unknown) => {
            expect(isWorkbayError(error, 'not-found'), String(error)).toBe(true);
            answered.push({ ok: false });
          },
        );
      for (let i = 0; requested === 0 && i < 5000; i++) {
        waits.push(wait());
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(requested).toBe(1);
      const late = wait();
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(answered.filter((a) => a.ok)).toEqual([]);
      expect(await exists(marker)).toBe(false);
      release();
      await Promise.all([init, late, ...waits]);
      expect(answered.filter((a) => a.ok).length).toBeGreaterThan(0);
      for (const a of answered) if (a.ok) expect(a.markerExisted).toBe(true);
      expect(await readFile(join(t.workingArea, 'slow-1', 'slow.txt'), 'utf8')).toBe('slowly downloaded\n');

      // A failing initialization: WaitForInit during it reports the failure.
      const failing = t.client
        .initWorkspace({
          id: 'slow-2',
          metadata: { owner: 'gina', metaId: 'ws-slow-2' },
          initializer: download(`sha256:${'0'.repeat(64)}`),
        })
        .catch((e: unknown) => e);
      while (!(await t.client.isWorkspaceExists({ id: 'slow-2' })).exists);
      const failedWait = expectError(t.client.waitForInit({ id: 'slow-2' }), 'failed-precondition', /digest/);
      while (requested < 2) await new Promise((resolve) => setTimeout(resolve, 5));
      release();
      await failedWait;
      expect(isWorkbayError(await failing, 'failed-precondition')).toBe(true);
      await expectError(t.client.waitForInit({ id: 'slow-2' }), 'failed-precondition', /digest/);
      for (const id of ['slow-1', 'slow-2']) await t.client.disposeWorkspace({ id, backup: false });
    } finally {
      release();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
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

  it('serves TLS when configured (and plaintext clients are turned away)', async () => {
    const dir = await scratch('workbay-tls-');
    try {
      const cert = join(dir.path, 'cert.pem');
      const key = join(dir.path, 'key.pem');
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=127.0.0.1',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
          '-keyout',
          key,
          '-out',
          cert,
        ],
        { stdio: 'ignore' },
      );
      const secure = await startTestDaemon({
        root: dir.path,
        config: { grpc: { address: '127.0.0.1:0', tls: { certPath: cert, keyPath: key } } },
      });
      try {
        const client = createWorkspaceContentClient(secure.daemon.address, {
          tls: { rootCerts: await readFile(cert) },
          defaultTimeoutMs: 10_000,
        });
        expect((await client.isWorkspaceExists({ id: 'nothing' })).exists).toBe(false);
        client.close();
        const plain = createWorkspaceContentClient(secure.daemon.address, { defaultTimeoutMs: 3_000 });
        await expect(plain.isWorkspaceExists({ id: 'nothing' })).rejects.toThrow();
        plain.close();
      } finally {
        await secure.stop();
      }
    } finally {
      await dir.cleanup();
    }
  });
});
