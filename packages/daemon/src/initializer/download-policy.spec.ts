/**
 * Where the download initializer and the one-time git secret fetch may connect (red-team finding 4: a download URL
 * read loopback-only services and the metadata service back into the requester's content). Real HTTP servers on
 * 127.0.0.1 (what must stay unreachable) and 127.0.0.2 (standing in for an allowed public host).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createSilentLogger, isWorkbayError } from '@workbay/api';
import type { InvalidArgumentError } from '@workbay/api';
import { Git } from '../git/git.js';
import { scratch } from '../test-support/git-server.js';
import { AddressPolicy } from './address-policy.js';
import type { DownloadPolicy } from './address-policy.js';
import type { InitializerContext } from './context.js';
import { fetchOtsCredentials } from './git-initializer.js';
import { runInitializer } from './run.js';
import { errorOf } from '../test-support/outcomes.js';

interface TestServer {
  readonly origin: string;
  readonly port: number;
  readonly hits: string[];
  close(): Promise<void>;
}

async function serve(host: string, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TestServer> {
  const hits: string[] = [];
  const server: Server = createServer((req, res) => {
    hits.push(req.url ?? '');
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, host, () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://${host}:${port}`,
    port,
    hits,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const secret = Buffer.from('INTERNAL SECRET token=s3cr3t\n');
const payload = Buffer.from('downloaded content\n');
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const sha512 = (data: Buffer): string => createHash('sha512').update(data).digest('hex');
const field = 'initializer.download.files[0].url';
// Only 127.0.0.2 plays the public host; 127.0.0.1 stays refused.
const allowPublic: DownloadPolicy = { allowedNetworks: ['127.0.0.2/32'] };

describe('download initializer: destination policy (real HTTP)', () => {
  let work: Awaited<ReturnType<typeof scratch>>;
  let internal: TestServer; // on 127.0.0.1: a loopback-only service
  let external: TestServer; // on 127.0.0.2: the allowed host
  let root: string;
  let n = 0;

  beforeAll(async () => {
    work = await scratch('workbay-download-');
    internal = await serve('127.0.0.1', (req, res) =>
      res.writeHead(200).end(req.url === '/ots' ? 'alice:internal-pw' : secret),
    );
    external = await serve('127.0.0.2', (req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/file') res.writeHead(200).end(payload);
      else if (url.pathname === '/chunked') res.writeHead(200, { 'transfer-encoding': 'chunked' }).end(payload);
      else if (url.pathname === '/to-internal') res.writeHead(302, { location: `${internal.origin}/latest` }).end();
      else if (url.pathname === '/to-localhost')
        res.writeHead(307, { location: `http://localhost:${internal.port}/` }).end();
      else if (url.pathname === '/to-file') res.writeHead(302, { location: 'file:///etc/passwd' }).end();
      else if (url.pathname === '/relative') res.writeHead(301, { location: '/file' }).end();
      else if (url.pathname === '/gzip') res.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync(payload));
      else if (url.pathname === '/bomb')
        res.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync(Buffer.alloc(4 * 1024 * 1024)));
      else if (url.pathname === '/stall') res.writeHead(200, { 'content-length': '1000' }).write('partial');
      else if (url.pathname === '/loop') res.writeHead(302, { location: '/loop' }).end();
      else res.writeHead(404).end();
    });
  });
  afterAll(async () => {
    await internal.close();
    await external.close();
    await work.cleanup();
  });
  beforeEach(async () => {
    root = join(work.path, `content-${++n}`);
    await mkdir(root);
    internal.hits.length = 0;
  });

  const context = (download?: DownloadPolicy): InitializerContext => ({
    root,
    git: new Git(join(work.path, 'tmp')),
    owner: 'o',
    workspaceId: 'w',
    logger: createSilentLogger(),
    gitRetry: { initialDelayMs: 10, maxElapsedMs: 1_000 },
    downloadTimeoutMs: 5_000,
    ...(download ? { download } : {}),
  });
  const download = (url: string, digest = `sha256:${sha256(payload)}`, ctx = context(allowPublic)) =>
    runInitializer({ kind: 'download', targetLocation: '', files: [{ url, filePath: 'out.txt', digest }] }, ctx);
  const refused = async (promise: Promise<unknown>): Promise<Error & { field?: string }> => {
    const error = await errorOf(promise);
    expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    expect((error as InvalidArgumentError).field).toBe(field);
    expect(error.message).toMatch(/initializer\.download/);
    expect(error.message).not.toContain('INTERNAL SECRET');
    return error;
  };
  const nothingWritten = async (): Promise<void> => expect(await readdir(root)).toEqual([]);

  it('with the default config, a URL to 127.0.0.1 is refused before connecting', async () => {
    const error = await refused(download(`${internal.origin}/latest`, undefined, context()));
    expect(error.message).toMatch(/127\.0\.0\.1 is not an allowed address/);
    expect(internal.hits).toEqual([]);
    await nothingWritten();
  });

  it('refuses every spelling of loopback and the metadata service (names, IPv6, v4-mapped, decimal)', async () => {
    for (const host of [
      `localhost:${internal.port}`,
      `[::1]:${internal.port}`,
      `[::ffff:127.0.0.1]:${internal.port}`,
      `2130706433:${internal.port}`,
      `0.0.0.0:${internal.port}`,
      '169.254.169.254',
      '[fd00::1]',
    ])
      await refused(download(`http://${host}/latest`, undefined, context()));
    expect(internal.hits).toEqual([]);
  });

  // Red team round 15, G6: a service of the node bound to every interface answered at the node's public address.
  it.runIf(process.getuid?.() === 0)(
    "the node's own public address is refused like loopback, open port or closed (real interface)",
    async () => {
      const link = `wbnode${process.pid % 10000}`;
      const address = '192.88.99.201'; // public (the retired 6to4 relay range), here one of the node's own
      execFileSync('ip', ['link', 'add', link, 'type', 'veth', 'peer', 'name', `${link}p`]);
      try {
        execFileSync('ip', ['addr', 'add', `${address}/32`, 'dev', link]);
        execFileSync('ip', ['link', 'set', link, 'up']);
        const node = await serve(address, (_req, res) => res.writeHead(404).end());
        try {
          // Interfaces are read again after a second: the address was added just now.
          await new Promise((resolve) => setTimeout(resolve, 1_100));
          const open = await refused(download(`${node.origin}/node-secret`, undefined, context()));
          const closed = await refused(download(`http://${address}:1/`, undefined, context()));
          expect(open.message).toMatch(/is not an allowed address/);
          expect(closed.message.replace(`:1/`, '')).toBe(open.message.replace(`:${node.port}/node-secret`, ''));
          expect(node.hits).toEqual([]);
          expect(new AddressPolicy().refusal(address)).toBe('node');
          // The operator can still allow it by name.
          expect(new AddressPolicy({ allowedNetworks: [`${address}/32`] }).allows(address)).toBe(true);
        } finally {
          await node.close();
        }
      } finally {
        execFileSync('ip', ['link', 'del', link]);
      }
    },
  );

  it('a closed and an open loopback port answer alike (no port scan)', async () => {
    const closed = await refused(download('http://127.0.0.1:1/', undefined, context()));
    const open = await refused(download(`${internal.origin}/`, undefined, context()));
    expect(open.message).toBe(closed.message);
  });

  it('a redirect from the allowed host to 127.0.0.1 (by address or by name) is refused', async () => {
    for (const path of ['/to-internal', '/to-localhost']) {
      const error = await refused(download(`${external.origin}${path}`));
      expect(error.message).toMatch(/redirected to a refused address/);
    }
    expect(internal.hits).toEqual([]);
    await nothingWritten();
  });

  it('a redirect to another scheme or an endless redirect loop fails without retrying', async () => {
    await refused(download(`${external.origin}/to-file`));
    const before = external.hits.length;
    const loop = await errorOf(download(`${external.origin}/loop`));
    expect(isWorkbayError(loop, 'failed-precondition')).toBe(true);
    expect(loop.message).toMatch(/more than 5 redirects/);
    expect(external.hits.length - before).toBe(6);
  });

  it('the resolver passes on only allowed addresses (a name, and a name that rebinds between hops)', async () => {
    const resolveTo = (addresses: string[]): DownloadPolicy => ({
      ...allowPublic,
      resolve: () => Promise.resolve(addresses.map((address) => ({ address, family: 4 }))),
    });
    await refused(
      download(`http://files.example.test:${internal.port}/`, undefined, context(resolveTo(['127.0.0.1']))),
    );
    let calls = 0;
    const rebinding: DownloadPolicy = {
      ...allowPublic,
      resolve: () => Promise.resolve([{ address: ++calls === 1 ? '127.0.0.2' : '127.0.0.1', family: 4 }]),
    };
    // First hop resolves to the allowed host, which redirects to the same name; now it resolves to loopback.
    const error = await refused(
      download(`http://files.example.test:${external.port}/relative`, undefined, context(rebinding)),
    );
    expect(error.message).toMatch(/redirected to a refused address/);
    expect(internal.hits).toEqual([]);
    const named = await download(
      `http://files.example.test:${external.port}/file`,
      undefined,
      context(resolveTo(['127.0.0.1', '127.0.0.2'])),
    );
    expect(named.metrics[0]!.bytes).toBe(payload.length);
    expect(internal.hits).toEqual([]);
  });

  it('the digest mismatch error names the expected digest only, never the actual one', async () => {
    for (const [algorithm, actual] of [
      ['sha256', sha256(payload)],
      ['sha512', sha512(payload)],
    ] as const) {
      const expected = `${algorithm}:${'0'.repeat(algorithm === 'sha256' ? 64 : 128)}`;
      const error = await errorOf(download(`${external.origin}/file`, expected));
      expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
      expect(error.message).toContain(`does not match the expected digest ${expected}`);
      expect(error.message).not.toContain(actual);
      expect(error.message).not.toContain(actual.slice(0, 16));
    }
    await nothingWritten();
  });

  it('the allowed path works: direct, through a relative redirect, and with every address allowed', async () => {
    const outcome = await download(`${external.origin}/file`);
    expect(outcome.metrics[0]!.bytes).toBe(payload.length);
    expect(await readFile(join(root, 'out.txt'))).toEqual(payload);
    await download(`${external.origin}/relative`);
    expect(await readFile(join(root, 'out.txt'))).toEqual(payload);
    await download(`${internal.origin}/x`, `sha256:${sha256(secret)}`, context({ allowPrivateAddresses: true }));
    expect(await readFile(join(root, 'out.txt'))).toEqual(secret);
  });

  it('a response larger than maxSize is refused, with or without a content-length', async () => {
    for (const path of ['/file', '/chunked']) {
      const error = await errorOf(
        download(`${external.origin}${path}`, undefined, context({ ...allowPublic, maxSize: 8 })),
      );
      expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
      expect(error.message).toMatch(/larger than the limit of 8 bytes/);
      await nothingWritten();
    }
  });

  it('decodes a content-encoding as fetch did; maxSize bounds the decoded bytes (no gzip bomb)', async () => {
    await download(`${external.origin}/gzip`);
    expect(await readFile(join(root, 'out.txt'))).toEqual(payload);
    const bomb = await errorOf(
      download(`${external.origin}/bomb`, undefined, context({ ...allowPublic, maxSize: 64 * 1024 })),
    );
    expect(bomb.message).toMatch(/larger than the limit of 65536 bytes/);
  });

  it('a body that stalls is cut off by the download timeout (UNAVAILABLE after the retries)', async () => {
    const started = Date.now();
    const stalled = await errorOf(
      download(`${external.origin}/stall`, undefined, { ...context(allowPublic), downloadTimeoutMs: 200 }),
    );
    expect(isWorkbayError(stalled, 'unavailable')).toBe(true);
    expect(stalled.message).toMatch(/download interrupted/);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await readdir(root)).toEqual([]);
  });

  describe('one-time git secret', () => {
    it('is refused on loopback by default, and through a redirect; fetched when allowed', async () => {
      const otsField = 'initializer.git.config.auth_ots';
      const direct = await errorOf(fetchOtsCredentials(`${internal.origin}/ots`, { field: otsField }));
      expect(isWorkbayError(direct, 'invalid-argument')).toBe(true);
      expect((direct as InvalidArgumentError).field).toBe(otsField);
      const redirected = await errorOf(
        fetchOtsCredentials(`${external.origin}/to-internal`, { field: otsField, policy: allowPublic }),
      );
      expect((redirected as InvalidArgumentError).field).toBe(otsField);
      expect(internal.hits).toEqual([]);
      const creds = await fetchOtsCredentials(`${internal.origin}/ots`, { policy: { allowPrivateAddresses: true } });
      expect(creds).toEqual({ username: 'alice', password: 'internal-pw' });
    });
  });
});

describe('AddressPolicy', () => {
  it('refuses non-public addresses of both families, including embedded IPv4', () => {
    const policy = new AddressPolicy();
    const refusedAddresses = [
      '127.0.0.1',
      '127.1.2.3',
      '0.0.0.0',
      '10.0.0.1',
      '100.64.0.1',
      '100.127.255.255',
      '169.254.169.254',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.1.1',
      '224.0.0.1',
      '255.255.255.255',
      '::',
      '::1',
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '::ffff:169.254.169.254',
      '::127.0.0.1',
      '64:ff9b::a00:1',
      '2002:c0a8:101::1',
      // Red team round 9: IPv4-translated and local-use NAT64 were connected to.
      '::ffff:0:7f00:1',
      '::ffff:0:a9fe:a9fe',
      '64:ff9b:1::7f00:1',
      '2001:0:4136:e378:8000:63bf:3fff:fdd2',
      'fc00::1',
      'fd12:3456::1',
      'fe80::1',
      'ff02::1',
      'not-an-address',
    ];
    for (const address of refusedAddresses) expect([address, policy.allows(address)]).toEqual([address, false]);
    for (const address of [
      '8.8.8.8',
      '1.1.1.1',
      '100.128.0.1',
      '172.32.0.1',
      '2606:4700::1111',
      '::ffff:8.8.8.8',
      '::ffff:0:808:808',
      '2001:4860:4860::8888',
    ])
      expect([address, policy.allows(address)]).toEqual([address, true]);
  });

  it('lets the operator allow networks, or everything', () => {
    const policy = new AddressPolicy({ allowedNetworks: ['10.1.0.0/16', 'fd00::/8', '127.0.0.2'] });
    expect(policy.allows('10.1.2.3')).toBe(true);
    expect(policy.allows('::ffff:10.1.2.3')).toBe(true);
    expect(policy.allows('10.2.0.1')).toBe(false);
    expect(policy.allows('fd00::5')).toBe(true);
    expect(policy.allows('127.0.0.2')).toBe(true);
    expect(policy.allows('127.0.0.1')).toBe(false);
    expect(new AddressPolicy({ allowPrivateAddresses: true }).allows('127.0.0.1')).toBe(true);
  });
});
