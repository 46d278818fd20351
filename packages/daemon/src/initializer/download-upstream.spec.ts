/**
 * Downloads through the operator's forward proxy (initializer.download.upstreamProxy): a real HTTP server on
 * 127.0.0.2 (standing in for an allowed public host), one on 127.0.0.1 (a loopback-only service that must stay
 * unreachable), an HTTPS server with a self-signed certificate, and Debian's tinyproxy as the upstream proxy,
 * whose log says which tunnels it was asked for: the checked address, never a name, never a refused address.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { isWorkbayError } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratch } from '../test-support/git-server.js';
import type { Tinyproxy } from '../test-support/tinyproxy.js';
import { startTinyproxy } from '../test-support/tinyproxy.js';
import type { DownloadPolicy } from './address-policy.js';
import { runInitializer } from './run.js';
import { parseUpstreamProxy } from './upstream-proxy.js';
import { makeSelfSignedCertificate } from '../test-support/certificates.js';
import { initializerContext } from '../test-support/initializer-context.js';

const payload = Buffer.from('downloaded through the proxy\n');
const digest = `sha256:${createHash('sha256').update(payload).digest('hex')}`;

async function listen(server: Server, host: string): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, host, () => resolve()));
  return (server.address() as AddressInfo).port;
}

describe('download initializer through an upstream proxy (real HTTP, HTTPS and tinyproxy)', () => {
  let work: Awaited<ReturnType<typeof scratch>>;
  let proxy: Tinyproxy;
  const servers: Server[] = [];
  let publicPort = 0;
  let internalPort = 0;
  let tlsPort = 0;
  const internalHits: string[] = [];

  beforeAll(async () => {
    work = await scratch('workbay-download-upstream-');
    proxy = await startTinyproxy('alice', 's3cret');
    const internal = createServer((req, res) => {
      internalHits.push(req.url ?? '');
      res.writeHead(200).end('INTERNAL SECRET');
    });
    internalPort = await listen(internal, '127.0.0.1');
    const external = createServer((req, res) => {
      if (req.url === '/file') res.writeHead(200).end(payload);
      else res.writeHead(302, { location: `http://127.0.0.1:${internalPort}/latest` }).end();
    });
    publicPort = await listen(external, '127.0.0.2');
    const { certFile: cert, keyFile: key } = makeSelfSignedCertificate(work.path, 'files.example');
    const tls = createHttpsServer({ key: await readFile(key), cert: await readFile(cert) }, (_req, res) =>
      res.writeHead(200).end(payload),
    );
    tlsPort = await listen(tls, '127.0.0.2');
    servers.push(internal, external, tls);
  });
  afterAll(async () => {
    for (const server of servers) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await proxy?.stop();
    await work?.cleanup();
  });

  const policy = (password = 's3cret'): DownloadPolicy => ({
    allowedNetworks: ['127.0.0.2/32'],
    upstreamProxy: parseUpstreamProxy(`http://alice:${password}@127.0.0.1:${proxy.port}`),
    // Names resolve, through the seam, to the allowed host.
    resolve: async () => [{ address: '127.0.0.2', family: 4 }],
  });
  const download = async (url: string, rules: DownloadPolicy): Promise<string> => {
    const ctx = await initializerContext(work.path, { download: rules, maxElapsedMs: 1_000 });
    await runInitializer({ kind: 'download', targetLocation: '', files: [{ url, filePath: 'out.txt', digest }] }, ctx);
    return readFile(join(ctx.root, 'out.txt'), 'utf8');
  };
  const failure = (url: string, rules: DownloadPolicy): Promise<Error> =>
    download(url, rules).then(
      () => {
        throw new Error('expected the download to fail');
      },
      (error: unknown) => error as Error,
    );

  it('fetches a name through the proxy, which is asked for the checked address', async () => {
    const before = (await proxy.connects()).length;
    expect(await download(`http://files.example:${publicPort}/file`, policy())).toBe(payload.toString());
    expect((await proxy.connects()).slice(before)).toEqual([`127.0.0.2:${publicPort}`]);
  });

  it('a redirect to a refused address is refused before the proxy is asked for it', async () => {
    const before = (await proxy.connects()).length;
    const error = await failure(`http://files.example:${publicPort}/elsewhere`, policy());
    expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    expect(error.message).toContain('refused address');
    expect(internalHits).toEqual([]);
    expect((await proxy.connects()).slice(before)).toEqual([`127.0.0.2:${publicPort}`]);
  });

  it('https goes through the tunnel with the name for the certificate check (a self-signed one is refused)', async () => {
    const before = (await proxy.connects()).length;
    const error = await failure(`https://files.example:${tlsPort}/file`, policy());
    expect(error.message).toMatch(/self-signed certificate/);
    // Once per attempt (the initializer retries what may be transient).
    expect(new Set((await proxy.connects()).slice(before))).toEqual(new Set([`127.0.0.2:${tlsPort}`]));
  });

  it('the proxy refusing the credentials is named in the error, without them', async () => {
    const error = await failure(`http://files.example:${publicPort}/file`, policy('wrong-secret'));
    expect(error.message).toMatch(
      new RegExp(`upstream proxy 127\\.0\\.0\\.1:${proxy.port} answered "HTTP/1\\.[01] 40[17]`),
    );
    expect(error.message).not.toContain('wrong-secret');
  });
});
