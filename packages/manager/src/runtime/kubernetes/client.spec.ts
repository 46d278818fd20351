import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { kubeConfigFor } from './client.js';
import { parseKubernetesRuntimeConfig } from './config.js';

describe('kubeConfigFor', () => {
  let server: http.Server | undefined;
  afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

  // client-node makes a new agent per call; every call opening its own connection (a TLS handshake on a real
  // cluster) cost the leader most of its CPU under load.
  it('sends consecutive API calls over one kept-alive connection', async () => {
    let connections = 0;
    const seen: string[] = [];
    server = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization}`);
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ apiVersion: 'v1', kind: 'NamespaceList', metadata: {}, items: [] }));
    });
    server.on('connection', () => (connections += 1));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const kc = kubeConfigFor(
      parseKubernetesRuntimeConfig({ server: `http://127.0.0.1:${port}`, token: 'tok', skipTLSVerify: true }),
    );
    const api = kc.makeApiClient(CoreV1Api);
    for (let i = 0; i < 3; i++) await api.listNamespace();
    expect(seen).toEqual(Array(3).fill('GET /api/v1/namespaces Bearer tok'));
    expect(connections).toBe(1);
  });
});
