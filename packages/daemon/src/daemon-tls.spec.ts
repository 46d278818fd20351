import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { createWorkspaceContentClient } from '@workbay/api';
import { scratch } from './test-support/git-server.js';
import { startTestDaemon } from './test-support/daemon-harness.js';
import { makeSelfSignedCertificate } from './test-support/certificates.js';

describe('daemon over gRPC', () => {
  it('serves TLS when configured (and plaintext clients are turned away)', async () => {
    const dir = await scratch('workbay-tls-');
    try {
      const { certFile: cert, keyFile: key } = makeSelfSignedCertificate(dir.path, '127.0.0.1', 'IP:127.0.0.1');
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
