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
  /** The node whose daemon initialized the content (daemons per node); the workspace must run on it. */
  readonly nodeName?: string;
}

/** How an initialization under way is going, as the daemon reports it (its `InitProgress` extension). */
export interface InitProgressInfo {
  /** False once the initialization ended (either way). */
  readonly initializing: boolean;
  /** The step that reported (`git clone`, `download`, ...); empty until one retries. */
  readonly step: string;
  /** The attempt under way or about to start, from 1; 0 until a step reports. */
  readonly attempt: number;
  /** The most attempts the step makes (an upper bound for time-bounded retries); 0 when unknown. */
  readonly maxAttempts: number;
  /** The step's last transient failure, one line without credentials; empty when there was none. */
  readonly lastError: string;
}

export interface ContentService {
  /** Creates and initialises the workspace content. `AlreadyExistsError` when it is already set up. */
  initWorkspace(request: InitContentRequest, signal?: AbortSignal): Promise<InitContentResult>;
  /**
   * How the workspace's initialisation is going. Optional, and undefined when the daemon cannot say (one without
   * the InitProgress extension): the status then shows no progress, nothing else changes.
   */
  initProgress?(instanceId: string, signal?: AbortSignal): Promise<InitProgressInfo | undefined>;
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
