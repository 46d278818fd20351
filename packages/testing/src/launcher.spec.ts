import { readFileSync, existsSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  TestServerMissingError,
  findServerBinary,
  freePort,
  startFakeGcs,
  startMinio,
  testServerVersions,
} from './launcher.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..');

describe('test server launcher', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const key of ['MINIO_BIN', 'FAKE_GCS_BIN', 'ETCD_BIN', 'KUBE_APISERVER_BIN', 'WORKBAY_TOOLS_DIR', 'PATH']) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  });

  it('pins the same versions as scripts/test-servers.mjs', () => {
    const script = readFileSync(join(repoRoot, 'scripts', 'test-servers.mjs'), 'utf8');
    // Both pin objects: the `go install`able servers and the Kubernetes ones built from throwaway modules.
    const pinned: Record<string, string> = {};
    for (const object of ['testServers', 'kubernetesServers']) {
      const body = script.match(new RegExp(`export const ${object} = \\{([^}]*)\\}`))?.[1];
      expect(body, `scripts/test-servers.mjs declares ${object}`).toBeDefined();
      for (const m of body!.matchAll(/['"]?([a-z-]+)['"]?:\s*'[^@'\s]+@([^']+)'/g)) pinned[m[1]!] = m[2]!;
    }
    expect(pinned).toEqual(testServerVersions);
  });

  it('fails with a message telling how to build a missing server (never a skip)', () => {
    process.env['WORKBAY_TOOLS_DIR'] = '/nonexistent/workbay-tools';
    process.env['PATH'] = '/nonexistent';
    delete process.env['MINIO_BIN'];
    expect(() => findServerBinary('minio')).toThrow(TestServerMissingError);
    expect(() => findServerBinary('minio')).toThrow(/node scripts\/test-servers\.mjs/);
    process.env['FAKE_GCS_BIN'] = '/nonexistent/fake-gcs-server';
    expect(() => findServerBinary('fake-gcs-server')).toThrow(/FAKE_GCS_BIN=\/nonexistent\/fake-gcs-server/);
    delete process.env['KUBE_APISERVER_BIN'];
    expect(() => findServerBinary('kube-apiserver')).toThrow(
      /kube-apiserver v1\.37\.2 is not installed.*node scripts\/test-servers\.mjs/,
    );
    process.env['ETCD_BIN'] = '/nonexistent/etcd';
    expect(() => findServerBinary('etcd')).toThrow(/ETCD_BIN=\/nonexistent\/etcd/);
  });

  it('prefers the env override', () => {
    process.env['MINIO_BIN'] = '/bin/true';
    expect(findServerBinary('minio')).toBe('/bin/true');
  });

  it('finds a free loopback port', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
  });

  it('starts MinIO, answers readiness, and cleans up on stop', async () => {
    const server = await startMinio();
    try {
      expect(server.endpoint).toBe(`http://127.0.0.1:${server.port}`);
      expect(existsSync(server.dir)).toBe(true);
      const res = await fetch(`${server.endpoint}/minio/health/live`);
      expect(res.status).toBe(200);
      // Unsigned requests are refused: the server checks credentials.
      const anonymous = await fetch(`${server.endpoint}/`);
      expect(anonymous.status).toBe(403);
    } finally {
      await server.stop();
    }
    expect(existsSync(server.dir)).toBe(false);
    await expect(fetch(`${server.endpoint}/minio/health/live`)).rejects.toThrow();
  });

  it('starts two servers side by side on different ports', async () => {
    const [a, b] = await Promise.all([startMinio(), startFakeGcs()]);
    try {
      expect(a.port).not.toBe(b.port);
      const res = await fetch(`${b.endpoint}/storage/v1/b?project=${b.projectId}`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ kind: 'storage#buckets' });
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
    expect(existsSync(b.dir)).toBe(false);
  });

  it('starts MinIO with TLS and a self-signed certificate to trust', async () => {
    const server = await startMinio({ tls: true });
    try {
      expect(server.endpoint).toBe(`https://127.0.0.1:${server.port}`);
      expect(server.caFile).toBeDefined();
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpsRequest(
          `${server.endpoint}/minio/health/live`,
          { ca: readFileSync(server.caFile!) },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end();
      });
      expect(status).toBe(200);
      // Without the CA the certificate is refused.
      await expect(fetch(`${server.endpoint}/minio/health/live`)).rejects.toThrow();
    } finally {
      await server.stop();
    }
    expect(existsSync(server.caFile!)).toBe(false);
  });

  it('reports a binary that cannot be started', async () => {
    await expect(startFakeGcs({ binary: '/nonexistent/fake-gcs-server', readyTimeoutMs: 5_000 })).rejects.toThrow(
      /fake-gcs-server/,
    );
  });

  it('reports a server that exits early, with its output', async () => {
    await expect(startMinio({ binary: '/bin/false', readyTimeoutMs: 5_000 })).rejects.toThrow(/exited early/);
  });
});
