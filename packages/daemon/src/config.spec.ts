import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import type { InvalidArgumentError } from '@workbay/api';
import { parseByteSize as parseSize } from '@workbay/api';
import { loadDaemonConfig, parseDaemonConfig, storageBackendSection } from './config.js';
import { cliPath } from './test-support/child-daemon.js';
import { tempDir } from './test-support/tree.js';

const fieldOf = (raw: unknown): string => {
  try {
    parseDaemonConfig(raw);
  } catch (error) {
    expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    return (error as InvalidArgumentError).field;
  }
  throw new Error('expected the config to be rejected');
};

describe('daemon config', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await dir.cleanup();
  });

  it('has defaults for everything: ~/.workbay, fs storage, 127.0.0.1:7721, metrics on 9500', () => {
    const config = parseDaemonConfig({});
    expect(config.workingArea).toBe(join(homedir(), '.workbay/workspaces'));
    expect(config.storage).toEqual({ kind: 'fs', root: join(homedir(), '.workbay/storage') });
    expect(config.grpc.address).toBe('127.0.0.1:7721');
    expect(config.http.address).toBe('127.0.0.1:9500');
    expect(config.backup).toMatchObject({
      format: 'chunked',
      concurrency: 5,
      attempts: 3,
      period: 600_000,
      packSize: 8 * 1024 * 1024,
    });
    expect(config.housekeeping.orphanAge).toBe(3_600_000);
    // The in-workspace service's namespace operations run root tools in the workspace's namespaces: off by default.
    expect(config.iws).toEqual({
      namespaceOps: false,
      maxConnections: 64,
      connectionIdle: 60_000,
      penalty: { threshold: 500, window: 10_000, cooldown: 1_000, maxCooldown: 60_000, bytesPerSecond: 65_536 },
    });
    expect(config.quota.mode).toBe('auto');
    // Loop images: keep max(1 GiB, 5%) for the node, never promise more than the disk has, sparse images.
    expect(config.quota).toMatchObject({
      reserveBytes: 1024 ** 3,
      reserveFraction: 0.05,
      overcommitRatio: 1,
      preallocate: false,
    });
  });

  it('refuses a working area longer than restored paths leave room for', () => {
    expect(() => parseDaemonConfig({ workingArea: `/${'w'.repeat(300)}` })).toThrow(/longer than 256 bytes/);
    expect(parseDaemonConfig({ workingArea: `/${'w'.repeat(200)}` }).workingArea).toHaveLength(201);
  });

  it('parses Go durations and sizes with units', () => {
    const config = parseDaemonConfig({
      backup: { period: '90s', packSize: '4MiB' },
      diskGuard: { minFree: '10GB' },
      housekeeping: { orphanAge: '1h30m' },
    });
    expect(config.backup.period).toBe(90_000);
    expect(config.backup.packSize).toBe(4 * 1024 * 1024);
    expect(config.diskGuard.minFree).toBe(10e9);
    expect(config.housekeeping.orphanAge).toBe(5_400_000);
    expect(parseSize('1.5Gi')).toBe(1.5 * 1024 ** 3);
  });

  it('names the bad key in every error', () => {
    expect(fieldOf({ backup: { concurrency: 0 } })).toBe('backup.concurrency');
    expect(fieldOf({ backup: { concurency: 3 } })).toBe('backup.concurency');
    expect(fieldOf({ backup: { period: 'soon' } })).toBe('backup.period');
    expect(fieldOf({ grpc: { address: 'localhost' } })).toBe('grpc.address');
    expect(fieldOf({ plugins: ['ok', 3] })).toBe('plugins[1]');
    expect(fieldOf({ storage: { kind: 'fs', layout: { mode: 'shared', bucket: 'Bad_Bucket' } } })).toBe(
      'storage.layout.bucket',
    );
    expect(fieldOf({ quota: { defaultSize: '12 parsecs' } })).toBe('quota.defaultSize');
    expect(fieldOf({ quota: { reserveBytes: -1 } })).toBe('quota.reserveBytes');
    expect(fieldOf({ quota: { reserveFraction: 1 } })).toBe('quota.reserveFraction');
    expect(fieldOf({ quota: { overcommitRatio: 0 } })).toBe('quota.overcommitRatio');
    expect(parseDaemonConfig({ quota: { reserveBytes: '20GiB', overcommitRatio: 1.5 } }).quota).toMatchObject({
      reserveBytes: 20 * 1024 ** 3,
      overcommitRatio: 1.5,
    });
    expect(fieldOf({ wat: 1 })).toBe('wat');
    expect(fieldOf({ iws: { penalty: { threshold: -1 } } })).toBe('iws.penalty.threshold');
    expect(fieldOf({ iws: { penalty: { cooldown: '2m', maxCooldown: '1m' } } })).toBe('iws.penalty');
    expect(fieldOf({ iws: { penalty: { bytesPerSecond: '12 parsecs' } } })).toBe('iws.penalty.bytesPerSecond');
    expect(
      parseDaemonConfig({ iws: { penalty: { threshold: 0, cooldown: '5s', bytesPerSecond: '1MiB' } } }).iws.penalty,
    ).toEqual({
      threshold: 0,
      window: 10_000,
      cooldown: 5_000,
      maxCooldown: 60_000,
      bytesPerSecond: 1024 * 1024,
    });
  });

  it('initializer.download: private addresses refused by default; networks must be addresses or CIDRs', () => {
    expect(parseDaemonConfig({}).initializer.download).toEqual({
      allowPrivateAddresses: false,
      allowedNetworks: [],
      maxSize: 2 * 1024 ** 3,
      maxRedirects: 5,
    });
    const config = parseDaemonConfig({
      initializer: { download: { allowedNetworks: ['10.1.0.0/16', 'fd00::/8', '10.0.0.7'], maxSize: '100MiB' } },
    });
    expect(config.initializer.download.allowedNetworks).toEqual(['10.1.0.0/16', 'fd00::/8', '10.0.0.7']);
    expect(config.initializer.download.maxSize).toBe(100 * 1024 * 1024);
    expect(fieldOf({ initializer: { download: { allowedNetworks: ['intranet'] } } })).toBe(
      'initializer.download.allowedNetworks[0]',
    );
    expect(fieldOf({ initializer: { download: { allowedNetworks: ['10.0.0.0/33'] } } })).toBe(
      'initializer.download.allowedNetworks[0]',
    );
    expect(fieldOf({ initializer: { download: { allowPrivate: true } } })).toBe('initializer.download.allowPrivate');
  });

  it('git.upstreamProxy: an http:// URL with a port, direct networks as CIDRs; a bad one names the key', () => {
    const config = parseDaemonConfig({
      git: { upstreamProxy: { url: 'http://u:p@proxy.corp:3128', direct: ['10.0.0.0/8'] } },
    });
    expect(config.git.upstreamProxy).toEqual({ url: 'http://u:p@proxy.corp:3128', direct: ['10.0.0.0/8'] });
    expect(parseDaemonConfig({}).git.upstreamProxy).toBeUndefined();
    expect(fieldOf({ git: { upstreamProxy: { url: 'https://proxy.corp:3128' } } })).toBe('git.upstreamProxy.url');
    expect(fieldOf({ git: { upstreamProxy: { url: 'http://proxy.corp' } } })).toBe('git.upstreamProxy.url');
    expect(fieldOf({ git: { upstreamProxy: { url: 'http://p:1', direct: ['corp'] } } })).toBe(
      'git.upstreamProxy.direct[0]',
    );
  });

  it('hands storage backends their section (flat or nested under the kind)', () => {
    expect(storageBackendSection({ kind: 'fs', root: '/x', layout: { mode: 'per-owner' } })).toEqual({
      root: '/x',
      layout: { mode: 'per-owner' },
    });
    expect(storageBackendSection({ kind: 'minio', minio: { endpoint: 'e' } })).toEqual({
      kind: 'minio',
      minio: { endpoint: 'e' },
    });
    const shared = { mode: 'shared' as const, bucket: 'bkt' };
    expect(storageBackendSection({ kind: 'minio', layout: shared, minio: { endpoint: 'e' } })).toEqual({
      kind: 'minio',
      minio: { endpoint: 'e', layout: shared },
    });
  });

  it('loads YAML and JSON files; the CLI reports the bad key and exits 2', async () => {
    const yamlPath = join(dir.path, 'daemon.yaml');
    await writeFile(yamlPath, 'workingArea: /srv/ws\nbackup:\n  format: tar\n  compression: zstd\n');
    expect((await loadDaemonConfig(yamlPath)).backup).toMatchObject({ format: 'tar', compression: 'zstd' });
    const jsonPath = join(dir.path, 'daemon.json');
    await writeFile(jsonPath, JSON.stringify({ backup: { attempts: 'many' } }));
    await expect(loadDaemonConfig(jsonPath)).rejects.toThrow(/backup\.attempts/);
    const run = promisify(execFile);
    const ok = await run(process.execPath, [cliPath, 'check-config', yamlPath]);
    expect(JSON.parse(ok.stdout).workingArea).toBe('/srv/ws');
    const failed = await run(process.execPath, [cliPath, 'check-config', jsonPath]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect(failed).toMatchObject({ code: 2 });
    expect((failed as { stderr: string }).stderr).toMatch(/backup\.attempts/);
  });
});
