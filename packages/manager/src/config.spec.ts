import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '@workbay/api';
import { parseByteSize } from '@workbay/api';
import { tempDirs } from './test-support/temp-dirs.js';
import { defaultManagerConfig, loadManagerConfig, resolveManagerConfig } from './config.js';

const configDir = tempDirs('wb-config-');

describe('manager config', () => {
  it('has working defaults without a file', async () => {
    const config = await loadManagerConfig();
    expect(config).toEqual(defaultManagerConfig);
    expect(config.grpc.address).toBe('127.0.0.1:7720');
    expect(config.daemon.address).toBe('127.0.0.1:7721');
    expect(config.proxy.address).toBe('127.0.0.1:7780');
    expect(config.metrics.address).toBe('127.0.0.1:9501');
    expect(config.runtime.kind).toBe('local');
    expect(config.defaultWorkspaceClass).toBe('g1-standard');
    expect(config.preferredWorkspaceClass).toBe('g1-standard');
    // The original's timeout defaults.
    expect(config.timeouts).toMatchObject({
      startupMs: 3_600_000,
      initializationMs: 1_800_000,
      regularWorkspaceMs: 1_800_000,
      maxLifetimeMs: 36 * 3_600_000,
      headlessWorkspaceMs: 3_600_000,
      afterCloseMs: 120_000,
      contentFinalizationMs: 3_600_000,
      stoppingMs: 3_600_000,
      heartbeatIntervalMs: 30_000,
      checkIntervalMs: 15_000,
    });
    expect(config.stopGrace).toEqual({ normallyMs: 30_000, immediatelyMs: 1_000, abortMs: 1_000 });
    expect(config.subscribe.bufferSize).toBe(250);
    const standard = config.workspaceClasses.find((c) => c.id === 'g1-standard')!;
    expect(standard.resources).toEqual({ cpu: 2, memoryBytes: 4 * 1024 ** 3, pids: 2048, diskBytes: 10 * 1024 ** 3 });
    expect(standard.description).toBe('2 vCPU, 4GB memory, 10GB disk');
  });

  it('passes the proxy limits on', () => {
    const limits = {
      maxConnectionsPerWorkspace: 64,
      maxConnectionsPerOwner: 128,
      maxAuthenticatedConnectionsPerWorkspace: 16,
      maxAuthenticatedConnectionsPerOwner: 32,
    };
    const config = resolveManagerConfig({ proxy: { limits } });
    expect(config.proxy.limits).toEqual(limits);
  });

  it('loads YAML, resolves relative paths against the file and parses durations and sizes', async () => {
    const dir = await configDir();
    const file = join(dir, 'manager.yaml');
    await writeFile(
      file,
      [
        'stateDir: state',
        'timeouts:',
        '  regularWorkspace: 1h30m',
        '  afterClose: 90s',
        'workspaceClasses:',
        '  small:',
        '    displayName: Small',
        '    creditsPerMinute: 0.5',
        '    resources: { cpu: 0.5, memory: 512Mi, pids: 100, disk: 1G }',
        'defaultWorkspaceClass: small',
      ].join('\n'),
    );
    const config = await loadManagerConfig(file);
    expect(config.stateDir).toBe(join(dir, 'state'));
    expect(config.timeouts.regularWorkspaceMs).toBe(90 * 60_000);
    expect(config.timeouts.afterCloseMs).toBe(90_000);
    expect(config.workspaceClasses).toEqual([
      {
        id: 'small',
        displayName: 'Small',
        description: '0.5 vCPU, 0.5GB memory, 0.9GB disk',
        creditsPerMinute: 0.5,
        resources: { cpu: 0.5, memoryBytes: 512 * 1024 ** 2, pids: 100, diskBytes: 1e9 },
      },
    ]);
  });

  it.each([
    [{ grpc: { adress: 'x' } }, 'grpc.adress', /unknown key/],
    [{ timeouts: { startup: '1 hour' } }, 'timeouts.startup', /invalid duration/],
    [{ grpc: { address: 'nohost' } }, 'grpc.address', /host:port/],
    [{ defaultWorkspaceClass: 'nope' }, 'defaultWorkspaceClass', /not defined/],
    [{ preferredWorkspaceClass: 'nope' }, 'preferredWorkspaceClass', /not defined/],
    [{ timeouts: { stopping: '1m', contentFinalization: '1h' } }, 'timeouts.stopping', /contentFinalization/],
    [
      { workspaceClasses: { a: { resources: { memory: 'lots' } } }, defaultWorkspaceClass: 'a' },
      'workspaceClasses.a.resources.memory',
      /not a size/,
    ],
    [{ subscribe: { bufferSize: 0 } }, 'subscribe.bufferSize', /.+/],
    [{ proxy: { limits: { maxConnectionsPerWorkspace: -1 } } }, 'proxy.limits.maxConnectionsPerWorkspace', /.+/],
  ])('names the bad key: %j', (raw, key, message) => {
    let error: unknown;
    try {
      resolveManagerConfig(raw, { source: 'x.yaml' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as InvalidArgumentError).field).toBe(key);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).toContain('x.yaml');
  });

  it('reports unreadable and malformed files clearly', async () => {
    await expect(loadManagerConfig('/nonexistent/manager.yaml')).rejects.toThrow(/cannot read config file/);
    const dir = await configDir();
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'grpc: [unclosed');
    await expect(loadManagerConfig(file)).rejects.toThrow(/not valid YAML/);
  });

  it('parses byte sizes', () => {
    expect(parseByteSize('4Gi')).toBe(4 * 1024 ** 3);
    expect(parseByteSize('10G')).toBe(10e9);
    expect(parseByteSize('512MiB')).toBe(512 * 1024 ** 2);
    expect(parseByteSize(1000)).toBe(1000);
    expect(() => parseByteSize('ten')).toThrow(/not a size/);
  });
});
