import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import type { PluginLogger, PresignMethod, PresignOptions, RemoteStorage } from '@workbay/api';
import { isWorkbayError } from '../errors.js';

export interface PresignServerOptions {
  /** Interface the URL server listens on (default 127.0.0.1). */
  readonly host?: string;
  /** Port (default 0: any free port, chosen when the first URL is signed). */
  readonly port?: number;
  /**
   * HMAC key for the URL signatures. Default: random per process, so URLs stop working when the process
   * restarts. Set it to keep URLs valid across restarts.
   */
  readonly secret?: string;
  /** Base URL clients should use instead of `http://host:port` (e.g. behind a proxy). */
  readonly publicBaseUrl?: string;
}

const defaultExpirySeconds = 30 * 60;
const maxExpirySeconds = 7 * 24 * 60 * 60;

/**
 * Serves presigned GET/PUT URLs for the fs backend: `/<bucket>/<name>?X-Workbay-Expires=…&X-Workbay-Signature=…`,
 * where the signature is an HMAC-SHA256 over method, bucket, name and expiry. No other authentication exists,
 * so the URL is the capability, as with S3.
 */
export class PresignServer {
  private server: Server | undefined;
  private starting: Promise<string> | undefined;
  private readonly secret: Buffer;
  private address: string | undefined;

  constructor(
    private readonly storage: RemoteStorage,
    private readonly options: PresignServerOptions,
    private readonly logger: PluginLogger,
  ) {
    this.secret = options.secret ? Buffer.from(options.secret) : randomBytes(32);
  }

  get baseUrl(): string | undefined {
    return this.options.publicBaseUrl ?? this.address;
  }

  async sign(method: PresignMethod, bucket: string, name: string, options: PresignOptions): Promise<string> {
    // The server runs even with a public base URL: a proxy in front of it forwards to it.
    const local = await this.start();
    const base = this.options.publicBaseUrl ?? local;
    const lifetime = Math.min(
      Math.max(1, Math.floor(options.expiresInSeconds ?? defaultExpirySeconds)),
      maxExpirySeconds,
    );
    const expires = Math.floor(Date.now() / 1000) + lifetime;
    const signature = this.signature(method, bucket, name, expires);
    const path = `/${encodeURIComponent(bucket)}/${name.split('/').map(encodeURIComponent).join('/')}`;
    const query = new URLSearchParams({ 'X-Workbay-Expires': String(expires), 'X-Workbay-Signature': signature });
    if (options.contentType) query.set('X-Workbay-Content-Type', options.contentType);
    return `${base.replace(/\/$/, '')}${path}?${query.toString()}`;
  }

  private signature(method: string, bucket: string, name: string, expires: number): string {
    return createHmac('sha256', this.secret).update(`${method}\n${bucket}\n${name}\n${expires}`).digest('base64url');
  }

  /** Starts the server (once) and returns its base URL. */
  start(): Promise<string> {
    if (!this.starting) {
      this.starting = new Promise<string>((resolve, reject) => {
        const server = createServer((req, res) => {
          this.handle(req, res).catch((error: unknown) => {
            this.logger.warn({ err: String(error) }, 'presigned request failed');
            if (!res.headersSent) res.writeHead(500).end('internal error');
            else res.destroy();
          });
        });
        server.on('error', reject);
        server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => {
          const address = server.address() as AddressInfo;
          const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
          this.address = `http://${host}:${address.port}`;
          this.server = server;
          resolve(this.address);
        });
      });
    }
    return this.starting;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.starting = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    if (method !== 'GET' && method !== 'PUT') {
      res.writeHead(405, { allow: 'GET, HEAD, PUT' }).end('method not allowed');
      return;
    }
    const parts = url.pathname.split('/').slice(1);
    let bucket: string;
    let name: string;
    try {
      bucket = decodeURIComponent(parts[0] ?? '');
      name = parts.slice(1).map(decodeURIComponent).join('/');
    } catch {
      // Deliberate: malformed escapes are the client's error, answered with 400.
      res.writeHead(400).end('bad path');
      return;
    }
    const expires = Number(url.searchParams.get('X-Workbay-Expires'));
    const given = Buffer.from(url.searchParams.get('X-Workbay-Signature') ?? '');
    const expected = Buffer.from(this.signature(method, bucket, name, expires));
    if (!Number.isFinite(expires) || given.length !== expected.length || !timingSafeEqual(given, expected)) {
      res.writeHead(403).end('signature does not match');
      return;
    }
    if (expires < Date.now() / 1000) {
      res.writeHead(403).end('URL expired');
      return;
    }
    if (method === 'GET') {
      const info = await this.storage.stat(bucket, name);
      if (!info) {
        res.writeHead(404).end('not found');
        return;
      }
      const headers: Record<string, string | number> = {
        'content-length': info.size,
        'content-type': info.contentType ?? 'application/octet-stream',
        'last-modified': info.lastModified.toUTCString(),
      };
      if (info.digest) headers['x-workbay-digest'] = info.digest;
      if (req.method === 'HEAD') {
        res.writeHead(200, headers).end();
        return;
      }
      let body;
      try {
        body = await this.storage.download(bucket, name);
      } catch (error) {
        if (isWorkbayError(error, 'not-found')) {
          res.writeHead(404).end('not found');
          return;
        }
        throw error;
      }
      res.writeHead(200, headers);
      await pipeline(body, res);
      return;
    }
    const contentType = url.searchParams.get('X-Workbay-Content-Type') ?? req.headers['content-type'];
    try {
      const info = await this.storage.upload(bucket, name, req, contentType ? { contentType } : {});
      res.writeHead(200, { etag: `"${info.digest ?? ''}"` }).end();
    } catch (error) {
      if (isWorkbayError(error, 'not-found')) res.writeHead(404).end(error.message);
      else if (isWorkbayError(error, 'invalid-argument')) res.writeHead(400).end(error.message);
      else throw error;
    }
  }
}
