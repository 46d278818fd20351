/**
 * `@workbay/integration` (private): helpers for the cross-package tests in this package. A real MinIO server
 * (from `@workbay/testing`) with a Workbay daemon that stores its backups there through the
 * `@workbay/storage-minio` plugin, loaded by package name as a deployment would.
 *
 * @module
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BucketLayout, WorkspaceContentClient } from '@workbay/api';
import { createWorkspaceContentClient } from '@workbay/api';
import type { Daemon, DaemonConfigInput } from '@workbay/daemon';
import { createDaemon } from '@workbay/daemon';
import type { MinioServer } from '@workbay/testing';
import { startMinio } from '@workbay/testing';

export interface MinioDaemonOptions {
  /** Reuse a running MinIO (and keep it running on stop). */
  readonly minio?: MinioServer;
  /** Reuse a directory, e.g. to restart a daemon on the same working area. */
  readonly root?: string;
  readonly layout?: BucketLayout;
  readonly backup?: DaemonConfigInput['backup'];
}

export interface MinioDaemon {
  readonly minio: MinioServer;
  readonly daemon: Daemon;
  readonly client: WorkspaceContentClient;
  readonly root: string;
  /** The config the daemon runs with (also valid for `workbay-daemon --config`). */
  readonly config: DaemonConfigInput;
  /** Stops the daemon (and MinIO, unless it was passed in); keeps `root`. */
  stop(): Promise<void>;
  /** Stops everything and removes `root`. */
  cleanup(): Promise<void>;
}

/** The daemon config for a MinIO server: storage kind `minio` through the plugin package. */
export function minioDaemonConfig(
  root: string,
  minio: MinioServer,
  options: Omit<MinioDaemonOptions, 'minio' | 'root'> = {},
): DaemonConfigInput {
  return {
    workingArea: join(root, 'workspaces'),
    grpc: { address: '127.0.0.1:0' },
    http: { address: 'off' },
    plugins: ['@workbay/storage-minio'],
    storage: {
      kind: 'minio',
      ...(options.layout ? { layout: options.layout } : {}),
      minio: { endpoint: minio.endpoint, accessKey: minio.accessKey, secretKey: minio.secretKey, region: minio.region },
    },
    log: { level: 'silent' },
    diskGuard: { minFree: 0 },
    housekeeping: { interval: 0 },
    quota: { mode: 'none' },
    // Tests serve downloads on 127.0.0.1, which the daemon refuses by default (SSRF).
    initializer: { download: { allowPrivateAddresses: true } },
    shutdownTimeout: '5s',
    backup: { period: 0, initialBackoff: '50ms', ...options.backup },
  };
}

/** Starts MinIO (unless given) and a daemon backed by it, with a typed client. */
export async function startMinioDaemon(options: MinioDaemonOptions = {}): Promise<MinioDaemon> {
  const ownsMinio = options.minio === undefined;
  const minio = options.minio ?? (await startMinio());
  const root = options.root ?? (await mkdtemp(join(tmpdir(), 'workbay-integration-')));
  const config = minioDaemonConfig(root, minio, {
    ...(options.layout ? { layout: options.layout } : {}),
    ...(options.backup ? { backup: options.backup } : {}),
  });
  let daemon: Daemon;
  try {
    daemon = await createDaemon(config).start();
  } catch (error) {
    if (ownsMinio) await minio.stop();
    throw error;
  }
  const client = createWorkspaceContentClient(daemon.address, { defaultTimeoutMs: 120_000 });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    client.close();
    await daemon.stop();
    if (ownsMinio) await minio.stop();
  };
  return {
    minio,
    daemon,
    client,
    root,
    config,
    stop,
    cleanup: async () => {
      await stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}
