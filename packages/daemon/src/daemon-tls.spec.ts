import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createWorkspaceContentClient } from '@workbay/api';
import { scratch } from './test-support/git-server.js';
import { startTestDaemon } from './test-support/daemon-harness.js';

describe('daemon over gRPC', () => {
  it('serves TLS when configured (and plaintext clients are turned away)', async () => {
    const dir = await scratch('workbay-tls-');
    try {
      const cert = join(dir.path, 'cert.pem');
      const key = join(dir.path, 'key.pem');
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=127.0.0.1',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
          '-keyout',
          key,
          '-out',
          cert,
        ],
        { stdio: 'ignore' },
      );
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
