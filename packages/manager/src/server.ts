/**
 * The manager's gRPC server: `wsman.WorkspaceManager`, gRPC health checking (`grpc.health.v1.Health`, also per
 * service) and server reflection (built from the api package's `.proto` files), on plaintext or TLS/mTLS.
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { protoFiles, protoRoot } from '@workbay/api';
import { HealthImplementation } from 'grpc-health-check';
import type { TlsFiles } from './config.js';
import type { WorkspaceManagerCore } from './core/manager.js';
import { bearerTokenInterceptor } from './grpc/auth.js';
import type { TokenSet } from './grpc/auth.js';
import { requestLimits } from './grpc/bounds.js';
import { StatusConverter } from './grpc/convert.js';
import { createWorkspaceManagerImplementation, workspaceManagerServiceDefinition } from './grpc/service.js';
import type { Logger } from './logger.js';
import type { ManagerMetrics } from './metrics.js';

export const workspaceManagerServiceName = 'wsman.WorkspaceManager';

export interface ManagerServerOptions {
  readonly core: WorkspaceManagerCore;
  readonly logger: Logger;
  readonly metrics?: ManagerMetrics;
  /** host:port; port 0 picks a free port. */
  readonly address: string;
  readonly tls?: TlsFiles;
  /** Subscribe buffer per subscriber (default 250). */
  readonly subscribeBufferSize?: number;
  /** How long a subscriber over its buffer may go without reading (default 10 s). */
  readonly subscribeStallTimeoutMs?: number;
  readonly subscribeMaxBacklog?: number;
  /** Bearer tokens every call must carry (health checks excepted); none: no token check. */
  readonly tokens?: TokenSet;
}

export interface ManagerServer {
  /** The bound address (host:port), with the real port when 0 was asked for. */
  readonly address: string;
  readonly server: Server;
  readonly health: HealthImplementation;
  /** Marks the services NOT_SERVING, waits for running calls up to `graceMs`, then forces the rest. */
  stop(graceMs?: number): Promise<void>;
}

async function credentialsFor(tls: TlsFiles | undefined): Promise<ServerCredentials> {
  if (!tls) return ServerCredentials.createInsecure();
  const [cert, key, ca] = await Promise.all([
    readFile(tls.cert),
    readFile(tls.key),
    tls.ca ? readFile(tls.ca) : Promise.resolve(null),
  ]);
  return ServerCredentials.createSsl(
    ca,
    [{ cert_chain: cert, private_key: key }],
    ca !== null && tls.requireClientCert,
  );
}

let reflectionDefinition: ReturnType<typeof loadSync> | undefined;

function reflection(): ReflectionService {
  // Parsing the protos takes a moment; do it once per process.
  reflectionDefinition ??= loadSync([protoFiles.wsman, protoFiles.wsdaemon, protoFiles.contentservice], {
    includeDirs: [protoRoot],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return new ReflectionService(reflectionDefinition);
}

export async function startManagerServer(options: ManagerServerOptions): Promise<ManagerServer> {
  const interceptors = options.tokens && options.tokens.size > 0 ? [bearerTokenInterceptor(options.tokens)] : [];
  const server = new Server({
    interceptors,
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
    'grpc.max_concurrent_streams': 10_000,
    // Large enough for any valid request (see grpc/bounds.ts), small enough that one message cannot hog memory.
    'grpc.max_receive_message_length': requestLimits.maxMessageBytes,
  });
  // The converter needs the configured defaults to report each workspace's effective timeouts.
  const converter = new StatusConverter(options.core.timeoutSettings);
  const implementation = createWorkspaceManagerImplementation({
    core: options.core,
    logger: options.logger,
    metrics: options.metrics,
    bufferSize: options.subscribeBufferSize ?? 250,
    stallTimeoutMs: options.subscribeStallTimeoutMs,
    maxBacklog: options.subscribeMaxBacklog,
    converter,
  });
  server.addService(workspaceManagerServiceDefinition, implementation);
  const health = new HealthImplementation({ '': 'SERVING', [workspaceManagerServiceName]: 'SERVING' });
  health.addToServer(server);
  reflection().addToServer(server);

  const credentials = await credentialsFor(options.tls);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.address, credentials, (error, bound) => (error ? reject(error) : resolve(bound)));
  });
  const host = options.address.slice(0, options.address.lastIndexOf(':'));
  const address = `${host}:${port}`;
  options.logger.info(
    { address, tls: Boolean(options.tls), bearerTokens: interceptors.length > 0 },
    'gRPC server listening',
  );

  return {
    address,
    server,
    health,
    async stop(graceMs = 5_000): Promise<void> {
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(workspaceManagerServiceName, 'NOT_SERVING');
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
