/**
 * What the manager needs from the workspace daemon, in domain terms. The real implementation talks gRPC
 * (`wsdaemon.WorkspaceContentService`, see `./daemon-content-service.ts`); the manager never imports daemon code.
 *
 * Every method rejects with a Workbay domain error (`AlreadyExistsError`, `NotFoundError`, `UnavailableError`, …).
 *
 * @module
 */
import type { GitStatusInfo, InitializerMetricsInfo } from '../domain/types.js';

export interface InitContentRequest {
  readonly instanceId: string;
  readonly owner: string;
  readonly metaId: string;
  /** Base64 of the encoded `contentservice.WorkspaceInitializer`. */
  readonly initializer: string;
  readonly storageQuotaBytes: number;
}

export interface InitContentResult {
  /** Where the daemon put the content; undefined when the daemon does not say (older daemons). */
  readonly contentLocation?: string;
  readonly metrics?: InitializerMetricsInfo;
}

export interface ContentService {
  /** Creates and initialises the workspace content. `AlreadyExistsError` when it is already set up. */
  initWorkspace(request: InitContentRequest, signal?: AbortSignal): Promise<InitContentResult>;
  /** Waits until an initialisation under way has finished. */
  waitForInit(instanceId: string, signal?: AbortSignal): Promise<void>;
  isWorkspaceExists(instanceId: string): Promise<boolean>;
  /** Returns the snapshot as `<object>@<bucket>`. */
  takeSnapshot(instanceId: string, returnImmediately: boolean): Promise<string>;
  /**
   * Deletes a snapshot taken by `takeSnapshot` (`<object>@<bucket>`) from the daemon's storage; resolves false when
   * it does not exist. `InvalidArgumentError` (field `snapshot`) when the name is not one of the daemon's snapshots.
   */
  deleteSnapshot(snapshot: string): Promise<boolean>;
  /** Returns the backup's location. */
  backupWorkspace(instanceId: string): Promise<string>;
  /** Removes the content, after a final backup when `backup` is set. Idempotent. */
  disposeWorkspace(instanceId: string, backup: boolean, signal?: AbortSignal): Promise<{ gitStatus?: GitStatusInfo }>;
  close(): void;
}
