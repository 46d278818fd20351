/**
 * The manager's gRPC server: `wsman.WorkspaceManager`, gRPC health checking (`grpc.health.v1.Health`, also per
 * service) and server reflection (built from the api package's `.proto` files), on plaintext or TLS/mTLS.
 *
 * @module
 */
import { protoFiles, startGrpcServer } from '@workbay/api';
import type { StartedGrpcServer } from '@workbay/api';
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
  readonly subscribeMaxStreams?: number;
  /** Bearer tokens every call must carry (health checks excepted); none: no token check. */
  readonly tokens?: TokenSet;
}

/** The manager's started gRPC server (the shared bootstrap's handle). */
export type ManagerServer = StartedGrpcServer;

export async function startManagerServer(options: ManagerServerOptions): Promise<ManagerServer> {
  const interceptors = options.tokens && options.tokens.size > 0 ? [bearerTokenInterceptor(options.tokens)] : [];
  // The converter needs the configured defaults to report each workspace's effective timeouts.
  const converter = new StatusConverter(options.core.timeoutSettings);
  const implementation = createWorkspaceManagerImplementation({
    core: options.core,
    logger: options.logger,
    metrics: options.metrics,
    bufferSize: options.subscribeBufferSize ?? 250,
    stallTimeoutMs: options.subscribeStallTimeoutMs,
    maxBacklog: options.subscribeMaxBacklog,
    maxStreams: options.subscribeMaxStreams,
    converter,
  });
  const started = await startGrpcServer({
    address: options.address,
    tls: options.tls,
    services: [{ name: workspaceManagerServiceName, definition: workspaceManagerServiceDefinition, implementation }],
    reflectionProtos: [protoFiles.wsman, protoFiles.wsdaemon, protoFiles.contentservice],
    serverOptions: {
      interceptors,
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
      'grpc.max_concurrent_streams': 10_000,
      // Large enough for any valid request (see grpc/bounds.ts), small enough that one message cannot hog memory.
      'grpc.max_receive_message_length': requestLimits.maxMessageBytes,
    },
  });
  options.logger.info(
    { address: started.address, tls: Boolean(options.tls), bearerTokens: interceptors.length > 0 },
    'gRPC server listening',
  );
  return started;
}
