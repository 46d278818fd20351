import { readFile } from 'node:fs/promises';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { PluginLogger, WorkspaceContentServiceServer } from '@workbay/api';
import { WorkspaceContentServiceService, protoFiles, protoRoot, unaryHandler } from '@workbay/api';
import type { WorkspaceContentService } from '../content-service.js';
import { boundError, limits } from '../util/bounds.js';
import { gitStatusToProto, initRequestFromProto, metricToProto, requireId } from './convert.js';

/** The full name health checks use for the content service. */
export const contentServiceName = 'wsdaemon.WorkspaceContentService';

/**
 * Every error leaves through here with a bounded message: the one place that guarantees invariant 7 for
 * text built from something unbounded below (a git stderr, a storage backend's message).
 */
function bounded<Req, Res>(handler: (request: Req) => Promise<Res> | Res): (request: Req) => Promise<Res> {
  return async (request) => {
    try {
      return await handler(request);
    } catch (error) {
      throw boundError(error);
    }
  };
}

/** The grpc-js implementation of `wsdaemon.WorkspaceContentService` over the domain service. */
export function createContentServiceImplementation(
  service: WorkspaceContentService,
  logger: PluginLogger,
): WorkspaceContentServiceServer {
  const options = {
    onInternalError: (error: unknown, path: string) =>
      logger.error(
        { path, err: error instanceof Error ? error.stack : String(error) },
        'unexpected error in gRPC handler',
      ),
  };
  return {
    initWorkspace: unaryHandler(
      bounded(async (request) => {
        const result = await service.initWorkspace(initRequestFromProto(request));
        return {
          contentLocation: result.contentLocation,
          initializerMetrics: result.metrics.map(metricToProto),
          contentSource: result.source,
        };
      }),
      options,
    ),
    waitForInit: unaryHandler(
      bounded(async (request) => {
        await service.waitForInit(requireId(request.id));
        return {};
      }),
      options,
    ),
    isWorkspaceExists: unaryHandler(
      bounded((request) => ({ exists: service.isWorkspaceExists(requireId(request.id)) })),
      options,
    ),
    takeSnapshot: unaryHandler(
      bounded(async (request) => ({
        url: await service.takeSnapshot(requireId(request.id), { returnImmediately: request.returnImmediately }),
      })),
      options,
    ),
    disposeWorkspace: unaryHandler(
      bounded(async (request) => {
        const result = await service.disposeWorkspace(requireId(request.id), {
          backup: request.backup,
          backupLogs: request.backupLogs,
        });
        return result.gitStatus ? { gitStatus: gitStatusToProto(result.gitStatus) } : {};
      }),
      options,
    ),
    backupWorkspace: unaryHandler(
      bounded(async (request) => ({ url: (await service.backupWorkspace(requireId(request.id))).url })),
      options,
    ),
    deleteSnapshot: unaryHandler(
      bounded(async (request) => {
        await service.deleteSnapshot(request.snapshot);
        return { wasDeleted: true };
      }),
      options,
    ),
  };
}

export interface GrpcTlsOptions {
  readonly certPath: string;
  readonly keyPath: string;
  /** When set, clients must present a certificate signed by this CA. */
  readonly caPath?: string;
}

export interface StartedGrpcServer {
  readonly server: Server;
  /** `host:port` actually bound. */
  readonly address: string;
  readonly health: HealthImplementation;
  stop(graceMs: number): Promise<void>;
}

async function credentials(tls: GrpcTlsOptions | undefined): Promise<ServerCredentials> {
  if (!tls) return ServerCredentials.createInsecure();
  const [cert, key, ca] = await Promise.all([
    readFile(tls.certPath),
    readFile(tls.keyPath),
    tls.caPath ? readFile(tls.caPath) : Promise.resolve(null),
  ]);
  return ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], ca !== null);
}

/** Starts the daemon's gRPC server: the content service, health checking and reflection. */
export async function startGrpcServer(
  address: string,
  implementation: WorkspaceContentServiceServer,
  options: { tls?: GrpcTlsOptions } = {},
): Promise<StartedGrpcServer> {
  // Larger messages are refused (RESOURCE_EXHAUSTED) before they are decoded; no request needs more.
  const server = new Server({ 'grpc.max_receive_message_length': limits.messageBytes });
  server.addService(WorkspaceContentServiceService, implementation);
  const health = new HealthImplementation({ '': 'NOT_SERVING', [contentServiceName]: 'NOT_SERVING' });
  health.addToServer(server);
  const definition = loadSync([protoFiles.wsdaemon], { includeDirs: [protoRoot], keepCase: true, defaults: true });
  new ReflectionService(definition).addToServer(server);
  const port = await new Promise<number>((resolve, reject) => {
    void credentials(options.tls).then(
      (creds) => server.bindAsync(address, creds, (error, bound) => (error ? reject(error) : resolve(bound))),
      reject,
    );
  });
  const host = address.slice(0, address.lastIndexOf(':'));
  return {
    server,
    address: `${host}:${port}`,
    health,
    stop: (graceMs) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
