import { generateKeyPairSync } from 'node:crypto';
import type { FakeGcsServer } from '@workbay/testing';
import { runStorageConformance, startFakeGcs } from '@workbay/testing';
import { GcsStorage } from './gcs-storage.js';

// Never let the auth library look for a GCE metadata server from a test.
process.env['METADATA_SERVER_DETECTION'] = 'none';

// The whole suite against a real fake-gcs-server on loopback. A small resumable threshold and chunk size make
// large objects go through chunked resumable uploads.
runStorageConformance(
  'gcs (fake-gcs-server)',
  async () => {
    const server: FakeGcsServer = await startFakeGcs();
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const storage = GcsStorage.fromConfig({
      projectId: server.projectId,
      apiEndpoint: server.endpoint,
      credentials: {
        client_email: 'conformance@workbay-test.iam.gserviceaccount.com',
        private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      },
      resumableThreshold: 1024 * 1024,
    });
    return { storage, cleanup: () => server.stop() };
  },
  {
    capabilities: {
      presignedFetch: false,
      presignedFetchReason: 'fake-gcs-server does not check URL signatures; gcs-storage.spec.ts verifies them',
    },
  },
);
