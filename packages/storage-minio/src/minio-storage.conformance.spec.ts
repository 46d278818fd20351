import type { MinioServer } from '@workbay/testing';
import { runStorageConformance, startMinio } from '@workbay/testing';
import { MinioStorage } from './minio-storage.js';

// The whole suite against a real MinIO server on loopback, with small parts so that multipart uploads with
// parallel parts, part boundaries and aborted multipart uploads are all exercised.
runStorageConformance('minio', async () => {
  const server: MinioServer = await startMinio();
  const storage = MinioStorage.fromConfig({
    endpoint: server.endpoint,
    accessKey: server.accessKey,
    secretKey: server.secretKey,
    region: server.region,
    partSize: 5 * 1024 * 1024,
    parallelParts: 3,
  });
  return { storage, cleanup: () => server.stop() };
});
