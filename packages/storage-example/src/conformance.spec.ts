import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runStorageConformance } from '@workbay/testing';
import { ExampleStorage } from './example-storage.js';
import { parseExampleStorageConfig } from './config.js';

// The whole suite every storage backend must pass; this backend declares no presigned URLs.
runStorageConformance(
  'example',
  async () => {
    const root = await mkdtemp(join(tmpdir(), 'workbay-example-storage-'));
    return {
      storage: new ExampleStorage(parseExampleStorageConfig({ kind: 'example', root })),
      cleanup: () => rm(root, { recursive: true, force: true }),
    };
  },
  { capabilities: { presignedUrls: false } },
);
