/**
 * {@link ContentService} over gRPC: the typed `wsdaemon.WorkspaceContentService` client from @workbay/api.
 * Proto types stay in this file.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { contentservice, createWorkspaceContentClient, isWorkbayError, limitGitStatus } from '@workbay/api';
import type { ClientOptions, WorkspaceContentClient } from '@workbay/api';
import type { GitStatusInfo, InitializerMetricsInfo, InitializerMetricKind } from '../domain/types.js';
import type { ContentService, InitContentRequest, InitContentResult, InitProgressInfo } from './content-service.js';

export interface DaemonClientTls {
  readonly ca: string;
  readonly cert?: string;
  readonly key?: string;
  readonly serverName?: string;
}

/** Deadlines for the daemon calls that should never hang; init, backup and dispose take as long as they take. */
const quickCallTimeoutMs = 30_000;
/** Progress is polled while a workspace initialises: an answer that takes longer is of no use anymore. */
const progressCallTimeoutMs = 5_000;

export class DaemonContentService implements ContentService {
  private readonly client: WorkspaceContentClient;

  constructor(address: string, tls?: DaemonClientTls) {
    const options: ClientOptions = tls
      ? {
          tls: {
            rootCerts: readFileSync(tls.ca),
            certChain: tls.cert ? readFileSync(tls.cert) : undefined,
            privateKey: tls.key ? readFileSync(tls.key) : undefined,
            serverName: tls.serverName,
          },
        }
      : {};
    this.client = createWorkspaceContentClient(address, {
      ...options,
      channelOptions: {
        'grpc.keepalive_time_ms': 30_000,
        'grpc.max_receive_message_length': 16 * 1024 * 1024,
        // Reconnect quickly after a daemon restart: the manager's retries should find it, not a backing-off channel.
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 2_000,
      },
    });
  }

  async initWorkspace(request: InitContentRequest, signal?: AbortSignal): Promise<InitContentResult> {
    const initializer = contentservice.WorkspaceInitializer.decode(Buffer.from(request.initializer, 'base64'));
    const response = await this.client.initWorkspace(
      {
        id: request.instanceId,
        metadata: { owner: request.owner, metaId: request.metaId },
        initializer,
        storageQuotaBytes: request.storageQuotaBytes,
      },
      { signal },
    );
    // Extension fields (content_location = 100, metrics) are read when the contract has them.
    const extended = response as { contentLocation?: unknown; initializerMetrics?: unknown };
    const contentLocation =
      typeof extended.contentLocation === 'string' && extended.contentLocation !== ''
        ? extended.contentLocation
        : undefined;
    return { contentLocation, metrics: toMetrics(extended.initializerMetrics) };
  }

  async waitForInit(instanceId: string, signal?: AbortSignal): Promise<void> {
    await this.client.waitForInit({ id: instanceId }, { signal });
  }

  async initProgress(instanceId: string, signal?: AbortSignal): Promise<InitProgressInfo | undefined> {
    try {
      const r = await this.client.initProgress({ id: instanceId }, { timeoutMs: progressCallTimeoutMs, signal });
      return {
        initializing: r.initializing,
        step: r.step,
        attempt: r.attempt,
        maxAttempts: r.maxAttempts,
        lastError: r.lastError,
      };
    } catch (error) {
      // A daemon without the extension: there is no progress to show, which is not a failure of anything.
      if (isWorkbayError(error, 'unimplemented')) return undefined;
      throw error;
    }
  }

  async isWorkspaceExists(instanceId: string): Promise<boolean> {
    const response = await this.client.isWorkspaceExists({ id: instanceId }, { timeoutMs: quickCallTimeoutMs });
    return response.exists;
  }

  async takeSnapshot(instanceId: string, returnImmediately: boolean): Promise<string> {
    const response = await this.client.takeSnapshot({ id: instanceId, returnImmediately });
    return response.url;
  }

  async deleteSnapshot(snapshot: string): Promise<boolean> {
    try {
      return (await this.client.deleteSnapshot({ snapshot }, { timeoutMs: quickCallTimeoutMs })).wasDeleted;
    } catch (error) {
      if (isWorkbayError(error, 'not-found')) return false;
      throw error;
    }
  }

  async backupWorkspace(instanceId: string): Promise<string> {
    const response = await this.client.backupWorkspace({ id: instanceId });
    return response.url;
  }

  async disposeWorkspace(
    instanceId: string,
    backup: boolean,
    signal?: AbortSignal,
  ): Promise<{ gitStatus?: GitStatusInfo }> {
    const response = await this.client.disposeWorkspace({ id: instanceId, backup, backupLogs: false }, { signal });
    const git = response.gitStatus;
    if (!git) return {};
    // The daemon bounds it too; a status kept for every client is not left to another process's version to bound.
    return {
      gitStatus: limitGitStatus({
        branch: git.branch,
        latestCommit: git.latestCommit,
        uncommittedFiles: git.uncommitedFiles,
        untrackedFiles: git.untrackedFiles,
        unpushedCommits: git.unpushedCommits,
        totalUncommittedFiles: git.totalUncommitedFiles,
        totalUntrackedFiles: git.totalUntrackedFiles,
        totalUnpushedCommits: git.totalUnpushedCommits,
      }),
    };
  }

  close(): void {
    this.client.close();
  }
}

const metricKinds: Readonly<Record<string, InitializerMetricKind>> = {
  git: 'git',
  file_download: 'fileDownload',
  fileDownload: 'fileDownload',
  snapshot: 'snapshot',
  backup: 'backup',
  prebuild: 'prebuild',
  composite: 'composite',
};

interface StepMetric {
  readonly type?: string;
  readonly duration?: { readonly seconds?: number; readonly nanos?: number };
  readonly size?: number;
}

/** Sums the daemon's per-step metrics (`InitWorkspaceResponse.initializer_metrics`, extension 101) per kind. */
function toMetrics(raw: unknown): InitializerMetricsInfo | undefined {
  if (!Array.isArray(raw) || raw.length === 0) return undefined;
  const out: Partial<Record<InitializerMetricKind, { durationMs: number; sizeBytes: number }>> = {};
  for (const step of raw as StepMetric[]) {
    const kind = step.type ? metricKinds[step.type] : undefined;
    if (!kind) continue;
    const durationMs = (step.duration?.seconds ?? 0) * 1000 + (step.duration?.nanos ?? 0) / 1e6;
    const previous = out[kind];
    out[kind] = {
      durationMs: (previous?.durationMs ?? 0) + durationMs,
      sizeBytes: (previous?.sizeBytes ?? 0) + (step.size ?? 0),
    };
  }
  return Object.keys(out).length > 0 ? out : undefined;
}
