import { readFile } from 'node:fs/promises';
import { Client, credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnavailableError, createWorkspaceManagerClient } from '@workbay/api';
import { startHarness } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';
import { createTestPki } from '../test-support/pki.js';
import type { TestPki } from '../test-support/pki.js';

const passthrough = (value: Buffer): Buffer => value;

/** grpc.health.v1.Health/Check for `service` ('' = the whole server); returns the raw status number. */
function healthStatus(client: Client, service: string): Promise<number> {
  const name = Buffer.from(service);
  const request = service ? Buffer.concat([Buffer.from([0x0a, name.length]), name]) : Buffer.alloc(0);
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest('/grpc.health.v1.Health/Check', passthrough, passthrough, request, (error, value) =>
      error ? reject(error) : resolve(value!.length >= 2 && value![0] === 0x08 ? value![1]! : 0),
    ),
  );
}

/** Lists the services through server reflection (v1alpha, which grpcurl uses). */
function reflectedServices(client: Client): Promise<string> {
  return new Promise((resolve, reject) => {
    const call = client.makeBidiStreamRequest(
      '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
      passthrough,
      passthrough,
    );
    let received = '';
    call.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      call.end();
    });
    call.on('end', () => resolve(received));
    call.on('error', reject);
    // ServerReflectionRequest{list_services: "*"} (field 7).
    call.write(Buffer.from([0x3a, 0x01, 0x2a]));
  });
}

describe('server edge: health checking and reflection', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('answers gRPC health checks for the server and for wsman.WorkspaceManager', async () => {
    const client = new Client(h.running.grpcAddress, credentials.createInsecure());
    expect(await healthStatus(client, '')).toBe(1);
    expect(await healthStatus(client, 'wsman.WorkspaceManager')).toBe(1);
    client.close();
  });

  it('lists its services through server reflection', async () => {
    const client = new Client(h.running.grpcAddress, credentials.createInsecure());
    const listed = await reflectedServices(client);
    expect(listed).toContain('wsman.WorkspaceManager');
    client.close();
  });
});

describe('server edge: TLS and mutual TLS', () => {
  let pki: TestPki;
  const pem = (name: string): string => pki.pem(name);
  beforeAll(async () => {
    pki = await createTestPki('workbay-tls-');
  });
  afterAll(async () => {
    await pki?.remove();
  });

  it('serves TLS, and with a CA requires a client certificate signed by it', async () => {
    const h = await startHarness({
      config: {
        grpc: {
          address: '127.0.0.1:0',
          tls: { cert: pem('server.pem'), key: pem('server-key.pem'), ca: pem('ca.pem'), requireClientCert: true },
        },
      },
    });
    try {
      const ca = await readFile(pem('ca.pem'));
      const withCert = createWorkspaceManagerClient(h.running.grpcAddress, {
        tls: {
          rootCerts: ca,
          certChain: await readFile(pem('client.pem')),
          privateKey: await readFile(pem('client-key.pem')),
        },
        defaultTimeoutMs: 10_000,
      });
      const cluster = await withCert.describeCluster({});
      expect(cluster.preferredWorkspaceClass).toBe('g1-standard');
      withCert.close();

      const withoutCert = createWorkspaceManagerClient(h.running.grpcAddress, {
        tls: { rootCerts: ca },
        defaultTimeoutMs: 5_000,
      });
      await expect(withoutCert.describeCluster({})).rejects.toBeInstanceOf(UnavailableError);
      withoutCert.close();

      const plaintext = createWorkspaceManagerClient(h.running.grpcAddress, { defaultTimeoutMs: 5_000 });
      await expect(plaintext.describeCluster({})).rejects.toBeInstanceOf(UnavailableError);
      plaintext.close();
    } finally {
      await h.close();
    }
  });
});
