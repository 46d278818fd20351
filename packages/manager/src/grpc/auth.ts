/**
 * Who may call the control plane (issue 8: "the control plane is not open").
 *
 * On a loopback address the embedded default serves gRPC and the ops endpoints without authentication: only
 * local processes reach it, and workspaces have their own network namespaces (they cannot reach the host's
 * loopback). Bound to any other address, the manager refuses to start unless callers must authenticate:
 * - gRPC: mutual TLS (`grpc.tls.ca`, with `requireClientCert`) or bearer tokens (`auth.tokens` or
 *   `auth.tokenFile`; clients send gRPC metadata `authorization: Bearer <token>`);
 * - the ops server (`metrics.address`): bearer tokens for everything but `/live` and `/ready`;
 * - the daemon (`daemon.address`): the manager reaches it only over mutual TLS (`daemon.tls` with cert and key).
 *
 * When tokens are configured they are required on every gRPC call (except gRPC health checks, which reveal
 * nothing) and on the admin endpoints, wherever the servers are bound.
 *
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { ResponderBuilder, ServerInterceptingCall, ServerListenerBuilder, status as grpcStatus } from '@grpc/grpc-js';
import type { ServerInterceptor } from '@grpc/grpc-js';
import { FailedPreconditionError } from '@workbay/api';
import type { ManagerConfig } from '../config.js';

/** Whether `address` (`host:port`) is reachable only from this machine. */
export function isLoopbackAddress(address: string): boolean {
  const host = address
    .slice(0, address.lastIndexOf(':'))
    .replace(/^\[|\]$/g, '')
    .toLowerCase();
  if (host === 'localhost' || host === '::1') return true;
  return isIPv4(host) && host.startsWith('127.');
}

const digest = (value: string): Buffer => createHash('sha256').update(value).digest();

/** A set of bearer tokens, compared in constant time. */
export class TokenSet {
  private readonly digests: Buffer[];

  constructor(tokens: readonly string[]) {
    this.digests = tokens.map(digest);
  }

  get size(): number {
    return this.digests.length;
  }

  /** Checks an `authorization` header value (`Bearer <token>`). */
  accepts(header: string | undefined): boolean {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!match) return false;
    const candidate = digest(match[1]!);
    let ok = false;
    for (const d of this.digests) ok = timingSafeEqual(d, candidate) || ok;
    return ok;
  }
}

/**
 * The configured tokens: `auth.tokens` plus one token per non-empty line of `auth.tokenFile` (which must not be
 * readable by group or others).
 */
export function loadTokens(config: Pick<ManagerConfig, 'auth'>): TokenSet {
  const tokens = [...config.auth.tokens];
  const file = config.auth.tokenFile;
  if (file) {
    let text: string;
    try {
      if ((statSync(file).mode & 0o077) !== 0) {
        throw new FailedPreconditionError(`auth.tokenFile ${file} must not be readable by others (chmod 600 it)`);
      }
      text = readFileSync(file, 'utf8');
    } catch (error) {
      if (error instanceof FailedPreconditionError) throw error;
      throw new FailedPreconditionError(`auth.tokenFile ${file} cannot be read: ${(error as Error).message}`, {
        cause: error,
      });
    }
    for (const line of text.split('\n')) if (line.trim()) tokens.push(line.trim());
  }
  for (const token of tokens) {
    if (token.length < 16)
      throw new FailedPreconditionError('auth.tokens: every token must have at least 16 characters');
  }
  return new TokenSet(tokens);
}

/**
 * Refuses a configuration that would serve the control plane to the network without authentication; the
 * message names the setting that is missing.
 */
export function checkControlPlaneExposure(config: ManagerConfig, tokens: TokenSet): void {
  const problems: string[] = [];
  const mtls = Boolean(config.grpc.tls?.ca && config.grpc.tls.requireClientCert);
  if (!isLoopbackAddress(config.grpc.address) && !mtls && tokens.size === 0) {
    problems.push(
      `grpc.address ${config.grpc.address} is not a loopback address: set grpc.tls (cert, key and ca, for mutual ` +
        'TLS) or auth.tokens / auth.tokenFile (bearer tokens)',
    );
  }
  if (config.metrics.enabled && !isLoopbackAddress(config.metrics.address) && tokens.size === 0) {
    problems.push(
      `metrics.address ${config.metrics.address} is not a loopback address: set auth.tokens or auth.tokenFile ` +
        '(its endpoints then require a bearer token), or bind it to 127.0.0.1',
    );
  }
  const daemonTls = config.daemon.tls;
  if (!isLoopbackAddress(config.daemon.address) && !(daemonTls?.ca && daemonTls.cert && daemonTls.key)) {
    problems.push(
      `daemon.address ${config.daemon.address} is not a loopback address: set daemon.tls (ca, cert and key: the ` +
        'daemon must accept only the manager, by mutual TLS)',
    );
  }
  if (problems.length > 0) {
    throw new FailedPreconditionError(`refusing to serve the control plane openly: ${problems.join('; ')}`);
  }
}

const openMethods = ['/grpc.health.v1.Health/'];

/** A grpc-js server interceptor that answers UNAUTHENTICATED unless the call carries one of `tokens`. */
export function bearerTokenInterceptor(tokens: TokenSet): ServerInterceptor {
  return (method, call) => {
    if (openMethods.some((prefix) => method.path.startsWith(prefix))) return new ServerInterceptingCall(call);
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const value = metadata.get('authorization')[0];
        if (tokens.accepts(typeof value === 'string' ? value : undefined)) {
          next(metadata);
          return;
        }
        call.sendStatus({
          code: grpcStatus.UNAUTHENTICATED,
          details: 'missing or unknown bearer token: send gRPC metadata "authorization: Bearer <token>"',
        });
      })
      .build();
    return new ServerInterceptingCall(call, new ResponderBuilder().withStart((next) => next(listener)).build());
  };
}
