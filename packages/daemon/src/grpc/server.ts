import type { PluginLogger, ServerTlsFiles, StartedGrpcServer, WorkspaceContentServiceServer } from '@workbay/api';
import {
  WorkspaceContentServiceService,
  assertDecoded,
  boundErrorMessage,
  protoFiles,
  startGrpcServer,
  unaryHandler,
  withTolerantDecoding,
} from '@workbay/api';
import type { WorkspaceContentService } from '../content-service.js';
import { limits } from '../util/bounds.js';
import { gitStatusToProto, initRequestFromProto, metricToProto, requireId } from './convert.js';

/** The full name health checks use for the content service. */
export const contentServiceName = 'wsdaemon.WorkspaceContentService';

/**
 * Every error leaves through here with a bounded message (the bounding the manager's edge uses too): the one
 * place that guarantees invariant 7 for text built from something unbounded below (a git stderr, a storage
 * backend's message).
 */
function bounded<Req, Res>(handler: (request: Req) => Promise<Res> | Res): (request: Req) => Promise<Res> {
  return async (request) => {
    try {
      return await handler(assertDecoded(request));
    } catch (error) {
      throw boundErrorMessage(error);
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
    initProgress: unaryHandler(
      bounded((request) => {
        const { initializing, progress } = service.initProgress(requireId(request.id));
        return { initializing, step: '', attempt: 0, maxAttempts: 0, lastError: '', ...progress };
      }),
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

/** Starts the daemon's gRPC server (the shared bootstrap): the content service, health checking and reflection. */
export function startContentServer(
  address: string,
  implementation: WorkspaceContentServiceServer,
  tls: ServerTlsFiles | undefined,
): Promise<StartedGrpcServer> {
  return startGrpcServer({
    address,
    tls,
    // Undecodable requests (nested past protobufjs's limit) reach the handlers marked, to be refused with
    // INVALID_ARGUMENT there instead of grpc-js's INTERNAL.
    services: [
      {
        name: contentServiceName,
        definition: withTolerantDecoding(WorkspaceContentServiceService),
        implementation,
      },
    ],
    reflectionProtos: [protoFiles.wsdaemon],
    // Larger messages are refused (RESOURCE_EXHAUSTED) before they are decoded; no request needs more.
    serverOptions: { 'grpc.max_receive_message_length': limits.messageBytes },
    // The daemon says SERVING only once its content service has recovered (see daemon.ts).
    servingAtStart: false,
  });
}
