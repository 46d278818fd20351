/**
 * The `wsman.WorkspaceManager` service: decodes requests into domain calls on {@link WorkspaceManagerCore} and
 * encodes the answers. Errors become gRPC status through the api's `toGrpcStatus` (via `unaryHandler`).
 *
 * Subscribe streams are fanned out from the core's status bus, one RxJS pipeline per subscriber
 * (./subscribe.ts): only a client that stops reading is ever cut off, and it never slows the others.
 *
 * @module
 */
import type { handleServerStreamingCall } from '@grpc/grpc-js';
import {
  WorkspaceManagerService,
  admissionLevel,
  portProtocol,
  portVisibility,
  stopPolicy,
  timeoutType,
  unaryHandler,
  workspaceType,
  wsman,
  tolerantDecoder,
} from '@workbay/api';
import type { WorkspaceManagerServer } from '@workbay/api';
import type { WorkspaceManagerCore } from '../core/manager.js';
import type { Logger } from '../logger.js';
import type { ManagerMetrics } from '../metrics.js';
import type { StatusConverter } from './convert.js';
import { boundErrorMessage, checkRequestBounds } from './bounds.js';
import { filterFromProto, startInputFromProto } from './convert.js';
import { createSubscribeHandler } from './subscribe.js';

export interface ServiceOptions {
  readonly core: WorkspaceManagerCore;
  readonly logger: Logger;
  readonly metrics?: ManagerMetrics;
  readonly bufferSize: number;
  /** See grpc/subscribe.ts. */
  readonly stallTimeoutMs?: number;
  readonly maxBacklog?: number;
  readonly maxStreams?: number;
  readonly converter: StatusConverter;
}

/**
 * The service definition to register: the generated one, except that Subscribe also accepts pre-encoded
 * responses (a status fanned out to many subscribers is encoded once).
 */
export const workspaceManagerServiceDefinition = {
  // Undecodable requests get INVALID_ARGUMENT from the handler instead of grpc-js's INTERNAL.
  ...(Object.fromEntries(
    Object.entries(WorkspaceManagerService).map(([name, method]) => [
      name,
      { ...method, requestDeserialize: tolerantDecoder(method.requestDeserialize) },
    ]),
  ) as typeof WorkspaceManagerService),
  subscribe: {
    ...WorkspaceManagerService.subscribe,
    requestDeserialize: tolerantDecoder(WorkspaceManagerService.subscribe.requestDeserialize),
    responseSerialize: (value: wsman.SubscribeResponse | Buffer): Buffer =>
      Buffer.isBuffer(value) ? value : Buffer.from(wsman.SubscribeResponse.encode(value).finish()),
  },
  // DescribeWorkspace answers are cached per record (the hot path of polling clients).
  describeWorkspace: {
    ...WorkspaceManagerService.describeWorkspace,
    requestDeserialize: tolerantDecoder(WorkspaceManagerService.describeWorkspace.requestDeserialize),
    responseSerialize: (value: wsman.DescribeWorkspaceResponse | Buffer): Buffer =>
      Buffer.isBuffer(value) ? value : Buffer.from(wsman.DescribeWorkspaceResponse.encode(value).finish()),
  },
};

export function createWorkspaceManagerImplementation(options: ServiceOptions): WorkspaceManagerServer {
  const { core, converter, logger } = options;
  const handlerOptions = {
    onInternalError: (error: unknown, path: string) => logger.error({ err: error, method: path }, 'internal error'),
  };
  // Every request is size-checked before the core sees it, and no error message grows with the input.
  const unary = <Req, Res>(fn: (request: Req) => Promise<Res> | Res) =>
    unaryHandler<Req, Res>(async (request) => {
      try {
        checkRequestBounds(request);
        return await fn(request);
      } catch (error) {
        throw boundErrorMessage(error);
      }
    }, handlerOptions);

  return {
    getWorkspaces: unary<wsman.GetWorkspacesRequest, wsman.GetWorkspacesResponse>((request) => ({
      status: core.listWorkspaces(filterFromProto(request.mustMatch)).map((r) => converter.toProto(r)),
    })),

    startWorkspace: unary<wsman.StartWorkspaceRequest, wsman.StartWorkspaceResponse>(async (request) => {
      const result = await core.startWorkspace(startInputFromProto(request));
      return { url: result.url, ownerToken: result.ownerToken };
    }),

    stopWorkspace: unary<wsman.StopWorkspaceRequest, wsman.StopWorkspaceResponse>(async (request) => {
      await core.stopWorkspace(request.id, stopPolicy.fromProto(request.policy, 'policy'));
      return {};
    }),

    describeWorkspace: unary<wsman.DescribeWorkspaceRequest, wsman.DescribeWorkspaceResponse>((request) => {
      const result = core.describeWorkspace(request.id);
      // Pre-encoded; the service definition above passes the bytes through.
      return converter.describeResponseBytes(
        result.status,
        result.lastActivity,
      ) as unknown as wsman.DescribeWorkspaceResponse;
    }),

    backupWorkspace: unary<wsman.BackupWorkspaceRequest, wsman.BackupWorkspaceResponse>(async (request) => ({
      url: await core.backupWorkspace(request.id),
    })),

    subscribe: createSubscribeHandler({ ...options, core }) as handleServerStreamingCall<
      wsman.SubscribeRequest,
      wsman.SubscribeResponse
    >,

    markActive: unary<wsman.MarkActiveRequest, wsman.MarkActiveResponse>(async (request) => {
      await core.markActive(request.id, { closed: request.closed, ignoreIfActive: request.ignoreIfActive });
      return {};
    }),

    setTimeout: unary<wsman.SetTimeoutRequest, wsman.SetTimeoutResponse>(async (request) => {
      await core.setTimeout(request.id, timeoutType.fromProto(request.type, 'type'), request.duration);
      return {};
    }),

    controlPort: unary<wsman.ControlPortRequest, wsman.ControlPortResponse>(async (request) => {
      const spec = request.spec;
      await core.controlPort(
        request.id,
        request.expose,
        spec && {
          port: spec.port,
          visibility: portVisibility.fromProto(spec.visibility, 'spec.visibility'),
          protocol: portProtocol.fromProto(spec.protocol, 'spec.protocol'),
        },
      );
      return {};
    }),

    takeSnapshot: unary<wsman.TakeSnapshotRequest, wsman.TakeSnapshotResponse>(async (request) => ({
      url: await core.takeSnapshot(request.id, request.returnImmediately),
    })),

    controlAdmission: unary<wsman.ControlAdmissionRequest, wsman.ControlAdmissionResponse>(async (request) => {
      await core.controlAdmission(request.id, admissionLevel.fromProto(request.level, 'level'));
      return {};
    }),

    deleteVolumeSnapshot: unary<wsman.DeleteVolumeSnapshotRequest, wsman.DeleteVolumeSnapshotResponse>(
      async (request) => {
        // Validated for completeness; snapshots are deleted the same way for every type.
        workspaceType.fromProto(request.wsType, 'ws_type');
        return { wasDeleted: await core.deleteVolumeSnapshot(request.volumeHandle, request.softDelete) };
      },
    ),

    updateSshKey: unary<wsman.UpdateSSHKeyRequest, wsman.UpdateSSHKeyResponse>(async (request) => {
      await core.updateSshKeys(request.id, request.keys);
      return {};
    }),

    describeCluster: unary<wsman.DescribeClusterRequest, wsman.DescribeClusterResponse>(() => {
      const cluster = core.describeCluster();
      return {
        workspaceClasses: cluster.classes.map((c) => ({
          id: c.id,
          displayName: c.displayName,
          description: c.description,
          creditsPerMinute: c.creditsPerMinute,
        })),
        preferredWorkspaceClass: cluster.preferred,
      };
    }),
  };
}
