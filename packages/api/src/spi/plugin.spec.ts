import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { FailedPreconditionError, InvalidArgumentError } from '../errors.js';
import { createPlugin, PluginHost } from './plugin.js';
import type { RemoteStorage } from './storage.js';

function memoryStorage(kind: string, config: { bucket: string }): RemoteStorage {
  const unsupported = (): never => {
    throw new Error('not used in this test');
  };
  return {
    kind,
    ensureBucket: async () => undefined,
    bucketExists: async (bucket) => bucket === config.bucket,
    upload: unsupported,
    download: async () => Readable.from([]),
    stat: async () => undefined,
    list: async function* () {},
    delete: async () => 0,
    presignedUrl: unsupported,
    diskUsage: async () => 0,
  };
}

const memoryPlugin = createPlugin({
  id: 'storage-memory',
  register(registry) {
    registry.registerStorageBackend({
      kind: 'memory',
      parseConfig(raw) {
        const bucket = (raw as { bucket?: unknown } | undefined)?.bucket;
        if (typeof bucket !== 'string') throw new InvalidArgumentError('storage.bucket', 'bucket must be a string');
        return { bucket };
      },
      create: (config) => memoryStorage('memory', config),
    });
  },
});

describe('PluginHost', () => {
  it('creates a registered storage backend by kind with validated config', async () => {
    const host = new PluginHost().use(memoryPlugin);
    const storage = await host.createStorage('memory', { bucket: 'b1' });
    expect(storage.kind).toBe('memory');
    expect(await storage.bucketExists('b1')).toBe(true);
    expect(host.storageKinds()).toEqual(['memory']);
    expect(host.pluginIds).toEqual(['storage-memory']);
  });

  it('names the bad config key', async () => {
    const host = new PluginHost().use(memoryPlugin);
    await expect(host.createStorage('memory', { bucket: 3 })).rejects.toMatchObject({
      code: 'invalid-argument',
      field: 'storage.bucket',
    });
  });

  it('rejects an unknown kind and lists the registered ones', async () => {
    const host = new PluginHost().use(memoryPlugin);
    await expect(host.createStorage('s3', {})).rejects.toThrow(/kind 's3'.*registered: memory/);
    await expect(host.createRuntime('local', {})).rejects.toBeInstanceOf(FailedPreconditionError);
  });

  it('registers the same plugin once and refuses a second owner of a kind', () => {
    const host = new PluginHost().use(memoryPlugin).use(memoryPlugin);
    expect(host.storageKinds()).toEqual(['memory']);
    const rival = createPlugin({
      id: 'storage-rival',
      register: (r) => r.registerStorageBackend({ kind: 'memory', parseConfig: () => ({}), create: unsupportedCreate }),
    });
    expect(() => host.use(rival)).toThrow(/'memory', already registered by plugin 'storage-memory'/);
  });

  it('keeps registrations of separate hosts apart', () => {
    const a = new PluginHost().use(memoryPlugin);
    const b = new PluginHost();
    expect(a.storageKinds()).toEqual(['memory']);
    expect(b.storageKinds()).toEqual([]);
  });

  it('loads plugins by package name and explains failures', async () => {
    const host = new PluginHost();
    await expect(host.load(['@workbay/no-such-plugin'])).rejects.toThrow(/could not be imported/);
    await expect(host.load(['node:path'])).rejects.toThrow(/does not export a Workbay plugin/);
  });

  it('requires kebab-case plugin ids', () => {
    expect(() => createPlugin({ id: 'Storage_Minio', register: () => undefined })).toThrow(/kebab-case/);
  });
});

function unsupportedCreate(): RemoteStorage {
  throw new Error('not used');
}
