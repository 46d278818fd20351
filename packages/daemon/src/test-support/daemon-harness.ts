import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { WorkspaceContentClient } from '@workbay/api';
import { createWorkspaceContentClient } from '@workbay/api';
import type { DaemonConfigInput } from '../config.js';
import type { Daemon, DaemonOverrides } from '../daemon.js';
import { createDaemon } from '../daemon.js';

export interface TestDaemon {
  readonly daemon: Daemon;
  readonly client: WorkspaceContentClient;
  readonly root: string;
  readonly workingArea: string;
  readonly storageRoot: string;
  /** Stops the daemon (keeps its directories, so another daemon can pick them up). */
  stop(): Promise<void>;
  /** Stops and removes every directory. */
  cleanup(): Promise<void>;
}

/**
 * Config for a daemon in `root` on 127.0.0.1:0: quiet, no periodic work, fast git retries, downloads from loopback
 * allowed.
 */
export function testConfig(root: string, config: Partial<DaemonConfigInput> = {}): DaemonConfigInput {
  return {
    workingArea: join(root, 'workspaces'),
    grpc: { address: '127.0.0.1:0' },
    http: { address: '127.0.0.1:0' },
    storage: { kind: 'fs', root: join(root, 'storage') },
    log: { level: 'silent' },
    diskGuard: { minFree: 0, interval: '1h' },
    housekeeping: { interval: 0 },
    quota: { mode: 'none' },
    shutdownTimeout: '5s',
    ...config,
    initializer: {
      gitRetryInitial: '50ms',
      gitRetryMax: '2s',
      downloadTimeout: '10s',
      // The specs' file and one-time-secret servers listen on 127.0.0.1, which the default policy refuses.
      download: { allowPrivateAddresses: true },
      ...config.initializer,
    },
    backup: { period: 0, initialBackoff: '50ms', ...config.backup },
    // Test repositories are file:// bare repositories, or served over http from 127.0.0.1, which network git
    // (like downloads) refuses by default.
    git: { allowLocalRemotes: true, allowedNetworks: ['127.0.0.1/32'], ...config.git },
  };
}

/** Starts a daemon (real gRPC server on loopback) with a typed client. */
export async function startTestDaemon(
  options: { root?: string; config?: Partial<DaemonConfigInput>; overrides?: DaemonOverrides } = {},
): Promise<TestDaemon> {
  const root = options.root ?? (await mkdtemp(join(tmpdir(), 'workbay-daemon-')));
  await mkdir(root, { recursive: true });
  const config = testConfig(root, options.config);
  const daemon = await createDaemon(config, options.overrides).start();
  const client = createWorkspaceContentClient(daemon.address, { defaultTimeoutMs: 60_000 });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    client.close();
    await daemon.stop();
  };
  return {
    daemon,
    client,
    root,
    workingArea: config.workingArea as string,
    storageRoot: join(root, 'storage'),
    stop,
    cleanup: async () => {
      await stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}
