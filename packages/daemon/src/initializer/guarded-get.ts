/**
 * HTTP(S) GET for URLs a requester chose (download initializer files, one-time git secrets), confined by an
 * {@link AddressPolicy}. The global fetch cannot be used: it follows redirects on its own and takes no resolver,
 * so the address it connects to cannot be checked. Here every hop is checked, and the check is made on the
 * addresses the connection actually uses: the resolver hands the socket only allowed addresses (a name that
 * resolves to a public address when checked and to 127.0.0.1 when connecting cannot slip through, as there is
 * no second resolution), and the connected socket's peer is checked again.
 */
import type { LookupAddress } from 'node:dns';
import { request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as connectTcp, isIP } from 'node:net';
import type { LookupFunction, Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import { connect as connectTls } from 'node:tls';
import { pipeline } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { FailedPreconditionError, InvalidArgumentError } from '../errors.js';
import { AddressPolicy, downloadPolicyDefaults, resolveChecked } from './address-policy.js';
import type { DownloadPolicy } from './address-policy.js';
import { directMatcher, tunnelThrough } from './upstream-proxy.js';
import type { UpstreamProxy } from './upstream-proxy.js';

export interface GuardedResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The body, content-encoding undone (as fetch did); destroy it when not read to the end. */
  readonly body: Readable;
  /** False when the body is the bytes as sent (no content-encoding): then content-length is its size. */
  readonly decoded: boolean;
}

export interface GuardedGetOptions {
  readonly policy?: DownloadPolicy;
  /** The request field the URL came from (`initializer.download.files[0].url`), for errors. */
  readonly field: string;
  readonly signal: AbortSignal;
}

const redirectStatuses = new Set([301, 302, 303, 307, 308]);

/** Raised by the resolver or the connect check; turned into an INVALID_ARGUMENT naming the field. */
class RefusedAddress extends Error {}

const refusal = (field: string, detail: string): InvalidArgumentError =>
  new InvalidArgumentError(
    field,
    `${detail}; the daemon does not fetch from loopback, link-local, private or other non-public addresses ` +
      '(daemon setting initializer.download)',
  );

function checkedUrl(text: string, field: string, from?: URL): URL {
  let url: URL;
  try {
    url = from ? new URL(text, from) : new URL(text);
  } catch {
    throw new InvalidArgumentError(field, from ? 'the server redirected to an invalid URL' : 'is not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new InvalidArgumentError(field, `${from ? 'the server redirected to' : 'must be'} an http(s) URL only`);
  // A downgrade would let anyone on the path replace what an https URL promised.
  if (from?.protocol === 'https:' && url.protocol === 'http:')
    throw new InvalidArgumentError(field, 'the server redirected from https to http');
  if (url.username || url.password) throw new InvalidArgumentError(field, 'must not carry credentials');
  return url;
}

/** A resolver for the socket that passes on only the allowed addresses of a name (see resolveChecked). */
function guardedLookup(policy: AddressPolicy, resolve: DownloadPolicy['resolve']): LookupFunction {
  return (hostname, options, callback) => {
    resolveChecked(hostname, policy, resolve, typeof options.family === 'number' ? options.family : 0).then(
      ({ allowed }) => {
        if (allowed.length === 0) {
          callback(new RefusedAddress(`${hostname} resolves to no allowed address`), '', 0);
        } else if (options.all) {
          (callback as unknown as (error: null, addresses: readonly LookupAddress[]) => void)(null, allowed);
        } else {
          callback(null, allowed[0]!.address, allowed[0]!.family);
        }
      },
      (error: NodeJS.ErrnoException) => callback(error, '', 0),
    );
  };
}

/** Bounds the connection to the upstream proxy and its answer, as the git egress proxy does. */
const upstreamTimeoutMs = 15_000;

/**
 * The connection for `url` through the operator's upstream proxy: the name resolved and checked here (the proxy is
 * asked for the checked address, never the name), or a plain connection for its `direct` networks (whose peer is
 * checked again), with TLS on top for https (the name for SNI and the certificate).
 */
async function connectVia(
  url: URL,
  policy: AddressPolicy,
  resolve: DownloadPolicy['resolve'],
  upstream: UpstreamProxy,
): Promise<Duplex> {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  const { allowed } = await resolveChecked(host, policy, resolve);
  const address = allowed[0]?.address;
  if (address === undefined) throw new RefusedAddress(`${host} resolves to no allowed address`);
  let socket: Socket;
  if (directMatcher(upstream)(address)) {
    socket = await new Promise<Socket>((done, fail) => {
      const direct = connectTcp({ host: address, port });
      direct.once('connect', () => done(direct));
      direct.once('error', fail);
    });
    if (!policy.allows(socket.remoteAddress ?? '')) {
      socket.destroy();
      throw new RefusedAddress('connected to a refused address');
    }
  } else {
    const tunnelled = await tunnelThrough(upstream, address, port, upstreamTimeoutMs);
    if ('failed' in tunnelled) throw new Error(tunnelled.failed);
    socket = tunnelled.socket;
  }
  if (url.protocol !== 'https:') return socket;
  return connectTls({ socket, ...(isIP(host) === 0 ? { servername: host } : {}), ALPNProtocols: ['http/1.1'] });
}

function requestOnce(
  url: URL,
  policy: AddressPolicy,
  lookup: LookupFunction,
  signal: AbortSignal,
  via?: { readonly upstream: UpstreamProxy; readonly resolve: DownloadPolicy['resolve'] },
) {
  // Through an upstream proxy the connection is ours (checked in connectVia); otherwise the resolver is the gate.
  const connection = via
    ? {
        createConnection: (_options: unknown, created: (error: Error | null, socket: Duplex) => void) =>
          void connectVia(url, policy, via.resolve, via.upstream).then(
            (socket) => created(null, socket),
            (error: Error) => created(error, undefined as unknown as Duplex),
          ),
      }
    : // A fresh connection per request: a pooled socket would skip the checks below.
      { agent: false as const, lookup };
  return new Promise<IncomingMessage>((resolve, reject) => {
    const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)({
      protocol: url.protocol,
      // URL keeps the brackets of an IPv6 literal; the socket wants the bare address.
      hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: url.port || undefined,
      path: `${url.pathname}${url.search}`,
      method: 'GET',
      // The encodings fetch asked for: a digest is of the decoded file, as before.
      headers: { accept: '*/*', 'accept-encoding': 'gzip, deflate, br', 'user-agent': 'workbay-daemon' },
      ...connection,
      signal,
    });
    // The resolver is the gate; this is the second look, at the peer of the connection itself.
    if (!via)
      request.once('socket', (socket: Socket) => {
        socket.once('connect', () => {
          const peer = socket.remoteAddress ?? '';
          if (!policy.allows(peer)) request.destroy(new RefusedAddress(`connected to a refused address`));
        });
      });
    request.once('response', resolve);
    request.once('error', reject);
    request.end();
  });
}

/**
 * GETs `url`, following at most `maxRedirects` redirects (http and https only, never from https to http), each
 * hop checked against the policy. A refused destination is an INVALID_ARGUMENT naming `field`; network failures
 * are passed on as they are (the caller decides whether to retry).
 */
export async function guardedGet(text: string, options: GuardedGetOptions): Promise<GuardedResponse> {
  const { field, signal } = options;
  const policy = new AddressPolicy(options.policy);
  const maxRedirects = options.policy?.maxRedirects ?? downloadPolicyDefaults.maxRedirects;
  const lookup = guardedLookup(policy, options.policy?.resolve);
  let url = checkedUrl(text, field);
  for (let hop = 0; ; hop++) {
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    // Sockets skip the resolver for an IP literal: check it here.
    if (isIP(host) !== 0 && !policy.allows(host))
      throw refusal(
        field,
        hop === 0 ? `${host} is not an allowed address` : 'the server redirected to a refused address',
      );
    let response: IncomingMessage;
    try {
      const upstream = options.policy?.upstreamProxy;
      response = await requestOnce(
        url,
        policy,
        lookup,
        signal,
        upstream ? { upstream, resolve: options.policy?.resolve } : undefined,
      );
    } catch (error) {
      if (error instanceof RefusedAddress)
        throw refusal(field, hop === 0 ? error.message : 'the server redirected to a refused address');
      throw error;
    }
    const status = response.statusCode ?? 0;
    const location = response.headers.location;
    if (!redirectStatuses.has(status) || location === undefined) return decode(response);
    // The body of a redirect is not wanted; with a fresh connection per request, closing costs nothing.
    response.destroy();
    if (hop >= maxRedirects) throw new FailedPreconditionError(`${field}: more than ${maxRedirects} redirects`);
    url = checkedUrl(location, field, url);
  }
}

/** Undoes a content-encoding; an unknown one is passed on as it is. Size bounds apply to the decoded bytes. */
function decode(response: IncomingMessage): GuardedResponse {
  const status = response.statusCode ?? 0;
  const encoding = String(response.headers['content-encoding'] ?? '')
    .trim()
    .toLowerCase();
  const decoder =
    encoding === 'gzip' || encoding === 'x-gzip'
      ? createGunzip()
      : encoding === 'deflate'
        ? createInflate()
        : encoding === 'br'
          ? createBrotliDecompress()
          : undefined;
  if (!decoder) return { status, headers: response.headers, body: response, decoded: false };
  // pipeline passes errors on and destroys both when the reader destroys the decoder.
  return { status, headers: response.headers, body: pipeline(response, decoder, () => {}), decoded: true };
}

/** Reads a whole (small) body; more than `limit` bytes is an (plain) Error for the caller to word. */
export async function readLimited(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      body.destroy();
      throw new Error(`the response is larger than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
