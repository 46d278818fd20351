/**
 * The control plane is not open (issue 8): beyond loopback the manager serves gRPC only with mutual TLS or bearer
 * tokens, and its ops endpoints only with tokens; a config that would serve either openly is refused, naming the
 * missing setting. On loopback the embedded default keeps working without authentication (the other specs).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FailedPreconditionError,
  UnauthenticatedError,
  UnavailableError,
  createWorkspaceManagerClient,
} from '@workbay/api';
import { startManager } from '../app.js';
import { resolveManagerConfig } from '../config.js';
import type { ManagerConfigInput } from '../config.js';
import { startEmbedded } from '../embedded.js';
import { createSilentLogger } from '../logger.js';
import { startHarness } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';
import { createTestPki } from '../test-support/pki.js';
import type { TestPki } from '../test-support/pki.js';

const token = 'tok-0123456789abcdef0123456789';
const port = (address: string): string => address.slice(address.lastIndexOf(':') + 1);

describe('an open control plane is refused', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-open-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const base = (extra: ManagerConfigInput): ManagerConfigInput => ({
    stateDir: join(dir, 'manager'),
    workingArea: join(dir, 'workspaces'),
    proxy: { address: '127.0.0.1:0' },
    metrics: { address: '127.0.0.1:0' },
    log: { level: 'silent' },
    // A daemon that cannot start: the refusal must come before anything is started.
    daemon: { command: [join(dir, 'no-daemon')], output: 'ignore' },
    ...extra,
  });

  const cases: Array<[string, ManagerConfigInput, RegExp]> = [
    ['gRPC on 0.0.0.0 without TLS or tokens', { grpc: { address: '0.0.0.0:0' } }, /grpc\.address .*auth\.tokens/],
    ['ops server on 0.0.0.0 without tokens', { metrics: { address: '0.0.0.0:0' } }, /metrics\.address .*auth\.tokens/],
    [
      'a daemon beyond loopback without mutual TLS',
      { daemon: { address: '10.0.0.1:7721', spawn: false } },
      /daemon\.tls/,
    ],
  ];

  it.each(cases)('%s: startManager and startEmbedded refuse, naming the setting', async (_name, extra, message) => {
    const config = resolveManagerConfig(base(extra), { baseDir: dir });
    const direct = await startManager({ config, logger: createSilentLogger() }).catch((e: unknown) => e);
    expect(direct).toBeInstanceOf(FailedPreconditionError);
    expect((direct as Error).message).toMatch(message);
    const embedded = await startEmbedded({ overrides: base(extra), logger: createSilentLogger() }).catch(
      (e: unknown) => e,
    );
    expect(embedded).toBeInstanceOf(FailedPreconditionError);
    expect((embedded as Error).message).toMatch(message);
  });
});

describe('bearer tokens beyond loopback', () => {
  let h: Harness;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-tokens-'));
    const tokenFile = join(dir, 'tokens');
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    h = await startHarness({
      config: { grpc: { address: '0.0.0.0:0' }, metrics: { address: '0.0.0.0:0' }, auth: { tokenFile } },
    });
  });
  afterAll(async () => {
    await h?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('gRPC calls without the token get UNAUTHENTICATED; with it they work; health checks stay open', async () => {
    const address = `127.0.0.1:${port(h.running.grpcAddress)}`;
    const anonymous = createWorkspaceManagerClient(address, { defaultTimeoutMs: 10_000 });
    await expect(anonymous.getWorkspaces({})).rejects.toBeInstanceOf(UnauthenticatedError);
    await expect(anonymous.describeCluster({})).rejects.toBeInstanceOf(UnauthenticatedError);
    anonymous.close();
    const wrong = createWorkspaceManagerClient(address, {
      metadata: { authorization: `Bearer ${token}x` },
      defaultTimeoutMs: 10_000,
    });
    await expect(wrong.getWorkspaces({})).rejects.toBeInstanceOf(UnauthenticatedError);
    wrong.close();
    const authorized = createWorkspaceManagerClient(address, {
      metadata: { authorization: `Bearer ${token}` },
      defaultTimeoutMs: 10_000,
    });
    expect((await authorized.describeCluster({})).preferredWorkspaceClass).toBe('g1-standard');
    authorized.close();

    const health = new Client(address, credentials.createInsecure());
    const serving = await new Promise<Buffer>((resolve, reject) =>
      health.makeUnaryRequest(
        '/grpc.health.v1.Health/Check',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        (e, v) => (e ? reject(e) : resolve(v!)),
      ),
    );
    expect([...serving]).toEqual([0x08, 0x01]);
    health.close();
  });

  it('the ops endpoints require the token; /live and /ready do not', async () => {
    const base = `http://127.0.0.1:${port(h.running.metricsAddress)}`;
    const put = (headers: Record<string, string>) =>
      fetch(`${base}/admin/maintenance`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ enabled: true }),
      });
    expect((await put({})).status).toBe(401);
    expect((await put({ authorization: 'Bearer nope-nope-nope-nope' })).status).toBe(401);
    expect(h.running.maintenance.isEnabled()).toBe(false);
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    expect((await fetch(`${base}/live`)).status).toBe(200);
    expect((await fetch(`${base}/ready`)).status).toBe(200);
    const auth = { authorization: `Bearer ${token}` };
    expect((await fetch(`${base}/metrics`, { headers: auth })).status).toBe(200);
    expect((await put(auth)).status).toBe(200);
    expect(h.running.maintenance.isEnabled()).toBe(true);
    await h.running.maintenance.set(false);
  });
});

describe('mutual TLS beyond loopback', () => {
  let pki: TestPki;
  const pem = (name: string): string => pki.pem(name);
  beforeAll(async () => {
    pki = await createTestPki('workbay-mtls-');
  });
  afterAll(async () => {
    await pki?.remove();
  });

  it('serves on 0.0.0.0 with a client CA: a client certificate is needed, plaintext and no-cert clients are refused', async () => {
    const h = await startHarness({
      config: {
        grpc: {
          address: '0.0.0.0:0',
          tls: { cert: pem('server.pem'), key: pem('server-key.pem'), ca: pem('ca.pem'), requireClientCert: true },
        },
      },
    });
    try {
      const address = `127.0.0.1:${port(h.running.grpcAddress)}`;
      const ca = await readFile(pem('ca.pem'));
      const withCert = createWorkspaceManagerClient(address, {
        tls: {
          rootCerts: ca,
          certChain: await readFile(pem('client.pem')),
          privateKey: await readFile(pem('client-key.pem')),
        },
        defaultTimeoutMs: 10_000,
      });
      expect((await withCert.describeCluster({})).preferredWorkspaceClass).toBe('g1-standard');
      withCert.close();
      const withoutCert = createWorkspaceManagerClient(address, { tls: { rootCerts: ca }, defaultTimeoutMs: 5_000 });
      await expect(withoutCert.describeCluster({})).rejects.toBeInstanceOf(UnavailableError);
      withoutCert.close();
      const plaintext = createWorkspaceManagerClient(address, { defaultTimeoutMs: 5_000 });
      await expect(plaintext.describeCluster({})).rejects.toBeInstanceOf(UnavailableError);
      plaintext.close();
    } finally {
      await h.close();
    }
  });
});
