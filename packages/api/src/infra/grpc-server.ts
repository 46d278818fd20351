/**
 * The one gRPC server bootstrap of Workbay: binds plaintext or TLS/mTLS, adds the services, gRPC health
 * checking (`grpc.health.v1.Health`, overall and per service) and server reflection built from the api
 * package's `.proto` files, and stops gracefully with a deadline. The manager and the daemon both start their
 * servers here; what differs (services, limits, interceptors) is passed in.
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { ServerOptions, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { protoRoot } from '../proto-root.js';

/** PEM files of a server's TLS identity. */
export interface ServerTlsFiles {
  /** Certificate chain of this server. */
  readonly cert: string;
  /** Private key. */
  readonly key: string;
  /** CA bundle; when set, clients may present a certificate signed by it (mTLS). */
  readonly ca?: string;
  /** With `ca`: reject clients without a certificate (default true). */
  readonly requireClientCert?: boolean;
}

/** One service the server offers, with the full name health checks use for it (`wsman.WorkspaceManager`). */
export interface ServedService {
  readonly name: string;
  readonly definition: ServiceDefinition;
  readonly implementation: UntypedServiceImplementation;
}

export interface GrpcServerOptions {
  /** host:port; port 0 picks a free port. */
  readonly address: string;
  readonly services: readonly ServedService[];
  /**
   * `.proto` files that reflection describes, relative to {@link protoRoot} (see `protoFiles`); none: no
   * reflection service (it costs a few milliseconds per server, too much for one server per workspace).
   */
  readonly reflectionProtos: readonly string[];
  /** Whether to serve `grpc.health.v1.Health` (default true). */
  readonly healthChecks?: boolean;
  readonly tls?: ServerTlsFiles;
  /** grpc-js server options: message limits, keepalive, interceptors. */
  readonly serverOptions?: ServerOptions;
  /** Whether health checks answer SERVING from the start (default true); else the owner calls `setServing`. */
  readonly servingAtStart?: boolean;
  /**
   * Binds the server itself instead of `bindAsync(address)` (e.g. a unix socket staged with its final mode and
   * owner); resolves to the bound port (0 for a socket). Plaintext only: `tls` does not apply.
   */
  readonly bind?: (server: Server) => Promise<number>;
}

export interface StartedGrpcServer {
  /** The bound address (host:port), with the real port when 0 was asked for. */
  readonly address: string;
  readonly server: Server;
  readonly health: HealthImplementation;
  /** Sets the health status of the server and of each of its services. */
  setServing(serving: boolean): void;
  /** Marks the services NOT_SERVING, waits for running calls up to `graceMs`, then forces the rest. */
  stop(graceMs: number): Promise<void>;
}

async function credentialsFor(tls: ServerTlsFiles | undefined): Promise<ServerCredentials> {
  if (!tls) return ServerCredentials.createInsecure();
  const [cert, key, ca] = await Promise.all([
    readFile(tls.cert),
    readFile(tls.key),
    tls.ca ? readFile(tls.ca) : Promise.resolve(null),
  ]);
  return ServerCredentials.createSsl(
    ca,
    [{ cert_chain: cert, private_key: key }],
    ca !== null && (tls.requireClientCert ?? true),
  );
}

/** Binds `address` (host:port or `unix:/path`) with the credentials `tls` asks for; resolves to the port. */
export async function bindAddress(server: Server, address: string, tls?: ServerTlsFiles): Promise<number> {
  const credentials = await credentialsFor(tls);
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(address, credentials, (error, bound) => (error ? reject(error) : resolve(bound)));
  });
}

const reflectionDefinitions = new Map<string, ReturnType<typeof loadSync>>();

function reflection(protos: readonly string[]): ReflectionService {
  // Parsing the protos takes a moment; once per set of files and process.
  const cacheKey = protos.join('\0');
  let definition = reflectionDefinitions.get(cacheKey);
  if (!definition) {
    definition = loadSync([...protos], { includeDirs: [protoRoot], keepCase: true, defaults: true, oneofs: true });
    reflectionDefinitions.set(cacheKey, definition);
  }
  return new ReflectionService(definition);
}

/** Starts a gRPC server with health checking and reflection; see the module comment. */
export async function startGrpcServer(options: GrpcServerOptions): Promise<StartedGrpcServer> {
  const server = new Server(options.serverOptions);
  for (const service of options.services) server.addService(service.definition, service.implementation);
  const initial = options.servingAtStart === false ? 'NOT_SERVING' : 'SERVING';
  const names = ['', ...options.services.map((s) => s.name)];
  const health = new HealthImplementation(Object.fromEntries(names.map((name) => [name, initial])));
  if (options.healthChecks !== false) health.addToServer(server);
  if (options.reflectionProtos.length > 0) reflection(options.reflectionProtos).addToServer(server);

  let port: number;
  try {
    port = options.bind ? await options.bind(server) : await bindAddress(server, options.address, options.tls);
  } catch (error) {
    server.forceShutdown();
    throw error;
  }
  const host = options.address.slice(0, options.address.lastIndexOf(':'));
  const setServing = (serving: boolean): void => {
    for (const name of names) health.setStatus(name, serving ? 'SERVING' : 'NOT_SERVING');
  };
  return {
    address: `${host}:${port}`,
    server,
    health,
    setServing,
    async stop(graceMs: number): Promise<void> {
      setServing(false);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}
