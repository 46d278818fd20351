/**
 * TEST ONLY: a stand-in `wsdaemon.WorkspaceContentService` on 127.0.0.1:0, used by the manager's integration
 * tests while the real daemon cannot be spawned. It keeps content as plain directories: the working area holds
 * `<id>/`, the "storage" holds copies of them (`<storage>/<bucket>/<object>/`). Initializers: empty, git (a real
 * `git clone`), snapshot, backup; a backup of the meta id is restored first, as the real daemon does.
 */
import { execFile } from 'node:child_process';
import { cp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
  UnavailableError,
  WorkspaceContentServiceService,
  parseQualifiedObject,
  unaryHandler,
} from '@workbay/api';
import type { RemoteStorage, WorkspaceContentServiceServer, contentservice, wsdaemon } from '@workbay/api';

const run = promisify(execFile);

export interface FakeDaemonOptions {
  readonly workingArea: string;
  readonly storageRoot: string;
  /** Extra delay for InitWorkspace. */
  initDelayMs?: number;
  /** Extra delay for DisposeWorkspace. */
  disposeDelayMs?: number;
  /** Fail the next N DisposeWorkspace calls with UNAVAILABLE. */
  failDisposeTimes?: number;
}

interface Entry {
  readonly owner: string;
  readonly metaId: string;
  readonly dir: string;
  ready: Promise<void>;
}

export interface FakeDaemon {
  readonly address: string;
  readonly options: FakeDaemonOptions;
  readonly calls: string[];
  readonly disposed: Map<string, { backup: boolean }>;
  stop(): Promise<void>;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

export function bucketOf(owner: string): string {
  return `workbay-user-${owner.toLowerCase()}`;
}

export async function startFakeDaemon(options: FakeDaemonOptions): Promise<FakeDaemon> {
  const entries = new Map<string, Entry>();
  const calls: string[] = [];
  const disposed = new Map<string, { backup: boolean }>();
  const objectDir = (bucket: string, name: string): string => join(options.storageRoot, bucket, name);
  let snapshotCounter = 0;

  async function initialize(entry: Entry, init: contentservice.WorkspaceInitializer | undefined): Promise<void> {
    if (options.initDelayMs) await new Promise((r) => setTimeout(r, options.initDelayMs));
    const backup = objectDir(bucketOf(entry.owner), `workspaces/${entry.metaId}/full.tar`);
    if (await exists(backup)) {
      await cp(backup, entry.dir, { recursive: true });
      return;
    }
    await mkdir(entry.dir, { recursive: true });
    await runInitializer(entry, init);
    await mkdir(join(entry.dir, '.workbay'), { recursive: true });
    await writeFile(join(entry.dir, '.workbay', 'ready'), JSON.stringify({ source: 'from-other' }));
  }

  async function runInitializer(entry: Entry, init: contentservice.WorkspaceInitializer | undefined): Promise<void> {
    const spec = init?.spec;
    switch (spec?.$case) {
      case 'empty':
        return;
      case 'git': {
        const target = join(entry.dir, spec.value.checkoutLocation || '.');
        await run('git', ['clone', '--quiet', spec.value.remoteUri, target]).catch((error: Error) => {
          throw new FailedPreconditionError(`git clone failed: ${error.message.split('\n')[0]}`);
        });
        return;
      }
      case 'snapshot': {
        const { bucket, name } = parseQualifiedObject(spec.value.snapshot);
        const source = objectDir(bucket, name);
        if (!(await exists(source))) throw new NotFoundError(`snapshot ${spec.value.snapshot} does not exist`);
        await cp(source, entry.dir, { recursive: true });
        return;
      }
      case 'backup':
        throw new FailedPreconditionError(`no backup found for workspace ${entry.metaId}`);
      case 'composite':
        for (const child of spec.value.initializer) await runInitializer(entry, child);
        return;
      default:
        throw new FailedPreconditionError(`initializer ${spec?.$case ?? 'none'} is not supported by the fake daemon`);
    }
  }

  async function copyTo(entry: Entry, name: string): Promise<string> {
    const bucket = bucketOf(entry.owner);
    const target = objectDir(bucket, name);
    await rm(target, { recursive: true, force: true });
    await mkdir(join(target, '..'), { recursive: true });
    await cp(entry.dir, target, { recursive: true });
    return `${name}@${bucket}`;
  }

  const impl: WorkspaceContentServiceServer = {
    initWorkspace: unaryHandler<wsdaemon.InitWorkspaceRequest, wsdaemon.InitWorkspaceResponse>(async (request) => {
      calls.push(`init:${request.id}`);
      if (entries.has(request.id)) throw new AlreadyExistsError(`workspace ${request.id} exists`);
      const entry: Entry = {
        owner: request.metadata?.owner ?? '',
        metaId: request.metadata?.metaId ?? '',
        dir: join(options.workingArea, request.id),
        ready: Promise.resolve(),
      };
      entries.set(request.id, entry);
      entry.ready = initialize(entry, request.initializer);
      try {
        await entry.ready;
      } catch (error) {
        entries.delete(request.id);
        await rm(entry.dir, { recursive: true, force: true });
        throw error;
      }
      return {
        contentLocation: entry.dir,
        initializerMetrics: [{ type: 'git', duration: { seconds: 0, nanos: 5_000_000 }, size: 42 }],
        contentSource: 'from-other',
      } as wsdaemon.InitWorkspaceResponse;
    }),
    waitForInit: unaryHandler(async (request: wsdaemon.WaitForInitRequest) => {
      const entry = entries.get(request.id);
      if (!entry) throw new NotFoundError(`workspace ${request.id} is unknown`);
      await entry.ready;
      return {};
    }),
    isWorkspaceExists: unaryHandler((request: wsdaemon.IsWorkspaceExistsRequest) => ({
      exists: entries.has(request.id),
    })),
    takeSnapshot: unaryHandler(async (request: wsdaemon.TakeSnapshotRequest) => {
      calls.push(`snapshot:${request.id}`);
      const entry = entries.get(request.id);
      if (!entry) throw new NotFoundError(`workspace ${request.id} is unknown`);
      snapshotCounter += 1;
      const url = await copyTo(entry, `workspaces/${entry.metaId}/snapshot-${Date.now()}${snapshotCounter}.tar`);
      return { url };
    }),
    backupWorkspace: unaryHandler(async (request: wsdaemon.BackupWorkspaceRequest) => {
      calls.push(`backup:${request.id}`);
      const entry = entries.get(request.id);
      if (!entry) throw new NotFoundError(`workspace ${request.id} is unknown`);
      return { url: await copyTo(entry, `workspaces/${entry.metaId}/full.tar`) };
    }),
    disposeWorkspace: unaryHandler(async (request: wsdaemon.DisposeWorkspaceRequest) => {
      calls.push(`dispose:${request.id}:${request.backup}`);
      if (options.failDisposeTimes && options.failDisposeTimes > 0) {
        options.failDisposeTimes -= 1;
        throw new UnavailableError('daemon is restarting');
      }
      if (options.disposeDelayMs) await new Promise((r) => setTimeout(r, options.disposeDelayMs));
      const entry = entries.get(request.id);
      if (!entry) return {};
      if (request.backup) await copyTo(entry, `workspaces/${entry.metaId}/full.tar`);
      let gitStatus: contentservice.GitStatus | undefined;
      if (await exists(join(entry.dir, '.git'))) {
        const branch = (await run('git', ['-C', entry.dir, 'rev-parse', '--abbrev-ref', 'HEAD'])).stdout.trim();
        const commit = (await run('git', ['-C', entry.dir, 'rev-parse', 'HEAD'])).stdout.trim();
        const porcelain = (await run('git', ['-C', entry.dir, 'status', '--porcelain'])).stdout
          .split('\n')
          .filter(Boolean);
        const untracked = porcelain.filter((l) => l.startsWith('??')).map((l) => l.slice(3));
        const uncommitted = porcelain.filter((l) => !l.startsWith('??')).map((l) => l.slice(3));
        gitStatus = {
          branch,
          latestCommit: commit,
          uncommitedFiles: uncommitted,
          untrackedFiles: untracked,
          unpushedCommits: [],
          totalUncommitedFiles: uncommitted.length,
          totalUntrackedFiles: untracked.length,
          totalUnpushedCommits: 0,
        };
      }
      await rm(entry.dir, { recursive: true, force: true });
      entries.delete(request.id);
      disposed.set(request.id, { backup: request.backup });
      return { gitStatus };
    }),
  };

  const server = new Server();
  server.addService(WorkspaceContentServiceService, impl);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    options,
    calls,
    disposed,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

/** TEST ONLY: a RemoteStorage over the fake daemon's storage directories (enough for snapshot deletion). */
export function fakeDaemonStorage(storageRoot: string): RemoteStorage {
  const dir = (bucket: string, name: string): string => join(storageRoot, bucket, name);
  const unsupported = (): never => {
    throw new Error('not supported by the fake storage');
  };
  return {
    kind: 'fake-dir',
    ensureBucket: async (bucket) => void (await mkdir(join(storageRoot, bucket), { recursive: true })),
    bucketExists: (bucket) => exists(join(storageRoot, bucket)),
    upload: unsupported,
    download: unsupported,
    stat: async (bucket, name) =>
      (await exists(dir(bucket, name))) ? { bucket, name, size: 0, lastModified: new Date(), metadata: {} } : undefined,
    list: unsupported,
    delete: async (bucket, target) => {
      if (!('name' in target)) return unsupported();
      if (!(await exists(dir(bucket, target.name)))) return 0;
      await rm(dir(bucket, target.name), { recursive: true, force: true });
      return 1;
    },
    presignedUrl: unsupported,
    diskUsage: async () => 0,
  };
}
