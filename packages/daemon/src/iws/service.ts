import type { handleUnaryCall } from '@grpc/grpc-js';
import { fsShiftMethod, isWorkbayError, ResourceExhaustedError, toGrpcStatus, unaryHandler } from '@workbay/api';
import type { InWorkspaceServiceServer, iws, PluginLogger, WorkspaceInfoServiceServer } from '@workbay/api';
import type { InWorkspaceServiceDeps } from './context.js';
import { InWorkspaceOperations } from './operations.js';

/**
 * The gRPC edge of `iws.InWorkspaceService` for one workspace: proto messages in, domain calls on
 * {@link InWorkspaceOperations}, proto messages out. Errors are domain errors until `unaryHandler` maps
 * them to a status.
 */
export function createInWorkspaceService(
  deps: InWorkspaceServiceDeps | InWorkspaceOperations,
): InWorkspaceServiceServer {
  const ops = deps instanceof InWorkspaceOperations ? deps : new InWorkspaceOperations(deps);
  const logger: PluginLogger | undefined = deps instanceof InWorkspaceOperations ? undefined : deps.logger;
  const options = {
    onInternalError: (error: unknown, path: string) => logger?.error({ err: error, path }, 'in-workspace call failed'),
    // Answers to the workspace say only what failed (error-mapping.ts); what the tools said goes to the log.
    onError: (error: unknown, path: string) => {
      const cause = error instanceof Error ? error.cause : undefined;
      if (isWorkbayError(error) && cause !== undefined)
        logger?.warn({ err: cause, path, answer: error.message }, 'in-workspace call refused or failed');
    },
  };
  const empty = {};

  return gate(ops, {
    prepareForUserNs: unaryHandler<iws.PrepareForUserNSRequest, iws.PrepareForUserNSResponse>(async (req) => {
      const r = await ops.prepareForUserNs({ usernsPid: req.usernsPid });
      return {
        fsShift: fsShiftMethod.toProto(r.fsShift),
        fullWorkspaceBackup: false,
        persistentVolumeClaim: r.persistentVolumeClaim,
      };
    }, options),
    writeIdMapping: unaryHandler<iws.WriteIDMappingRequest, iws.WriteIDMappingResponse>(async (req) => {
      await ops.writeIdMapping({
        pid: req.pid,
        gid: req.gid,
        mappings: req.mapping.map((m) => ({ containerId: m.containerId, hostId: m.hostId, size: m.size })),
      });
      return { message: '', errorCode: 0 };
    }, options),
    evacuateCGroup: unaryHandler<iws.EvacuateCGroupRequest, iws.EvacuateCGroupResponse>(async () => {
      await ops.evacuateCgroup();
      return empty;
    }, options),
    mountProc: unaryHandler<iws.MountProcRequest, iws.MountProcResponse>(async (req) => {
      await ops.mountProc({ target: req.target, pid: req.pid });
      return empty;
    }, options),
    umountProc: unaryHandler<iws.UmountProcRequest, iws.UmountProcResponse>(async (req) => {
      await ops.umountProc({ target: req.target, pid: req.pid });
      return empty;
    }, options),
    mountSysfs: unaryHandler<iws.MountProcRequest, iws.MountProcResponse>(async (req) => {
      await ops.mountSysfs({ target: req.target, pid: req.pid });
      return empty;
    }, options),
    umountSysfs: unaryHandler<iws.UmountProcRequest, iws.UmountProcResponse>(async (req) => {
      await ops.umountSysfs({ target: req.target, pid: req.pid });
      return empty;
    }, options),
    mountNfs: unaryHandler<iws.MountNfsRequest, iws.MountNfsResponse>(async (req) => {
      await ops.mountNfs({ source: req.source, target: req.target, args: req.args, pid: req.pid });
      return empty;
    }, options),
    umountNfs: unaryHandler<iws.UmountNfsRequest, iws.UmountNfsResponse>(async (req) => {
      await ops.umountNfs({ target: req.target, pid: req.pid });
      return empty;
    }, options),
    teardown: unaryHandler<iws.TeardownRequest, iws.TeardownResponse>(
      async () => ({ success: await ops.teardown() }),
      options,
    ),
    wipingTeardown: unaryHandler<iws.WipingTeardownRequest, iws.WipingTeardownResponse>(
      async (req) => ({ success: await ops.wipingTeardown({ doWipe: req.doWipe }) }),
      options,
    ),
    setupPairVeths: unaryHandler<iws.SetupPairVethsRequest, iws.SetupPairVethsResponse>(async (req) => {
      await ops.setupPairVeths({ pid: req.pid });
      return empty;
    }, options),
    workspaceInfo: unaryHandler<iws.WorkspaceInfoRequest, iws.WorkspaceInfoResponse>(async () => {
      const r = await ops.workspaceInfo();
      return {
        resources: {
          cpu: { used: r.cpu.usedMillicores, limit: r.cpu.limitMillicores },
          memory: { used: r.memory.usedBytes, limit: r.memory.limitBytes },
        },
      };
    }, options),
  });
}

/**
 * Methods whose operation takes its rate-limit token before anything else (so refusing them early answers what they
 * would answer), by handler name. The others validate their request first and keep doing so.
 */
const RATE_LIMITED_FIRST: Readonly<Record<string, string>> = Object.freeze({
  workspaceInfo: 'WorkspaceInfo',
  evacuateCGroup: 'EvacuateCGroup',
  teardown: 'Teardown',
  wipingTeardown: 'WipingTeardown',
});

/**
 * Refuses a call with RESOURCE_EXHAUSTED while the workspace already has `maxInFlight` calls running (both
 * services share the limit through the operations), before any work or validation is done. Every call answered
 * with an error counts toward the workspace's flood penalty (`FloodGuard`): refusals are what a flood gets, and
 * an error costs the daemon no less than an answer.
 */
function gate(ops: InWorkspaceOperations, service: InWorkspaceServiceServer): InWorkspaceServiceServer {
  const gated = {} as Record<string, handleUnaryCall<unknown, unknown>>;
  for (const [name, handler] of Object.entries(service) as [string, handleUnaryCall<unknown, unknown>][]) {
    const limited = RATE_LIMITED_FIRST[name];
    gated[name] = (call, callback) => {
      // Refused right here, synchronously: through the async handler a refusal costs a rejected promise and its
      // bookkeeping (a tenth of a flooded call's cost), and a flood is mostly refusals.
      const refusal = limited !== undefined ? ops.rateLimitRefusal(limited) : undefined;
      if (refusal) {
        ops.flood.offence('calls');
        callback(toGrpcStatus(refusal));
        return;
      }
      if (!ops.inFlight.tryEnter()) {
        ops.flood.offence('calls');
        callback(
          toGrpcStatus(
            new ResourceExhaustedError(`this workspace has ${ops.inFlight.max} in-workspace calls running already`),
          ),
        );
        return;
      }
      handler(call, (...args: Parameters<typeof callback>) => {
        ops.inFlight.leave();
        if (args[0]) ops.flood.offence('calls');
        callback(...args);
      });
    };
  }
  return gated as unknown as InWorkspaceServiceServer;
}

/**
 * `iws.WorkspaceInfoService`: only WorkspaceInfo, for callers that must not reach the rest of the
 * in-workspace service. Shares the operations (and so the rate limit) of the workspace it is given.
 */
export function createWorkspaceInfoService(operations: InWorkspaceOperations): WorkspaceInfoServiceServer {
  return { workspaceInfo: createInWorkspaceService(operations).workspaceInfo };
}
