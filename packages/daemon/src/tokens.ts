/**
 * Typed DI tokens of the daemon. The daemon registers its parts in the plugin host's child container, so
 * plugins and embedders resolve them with `resolveToken(container, token)` instead of bare strings.
 */
import { createToken } from '@workbay/api';
import type { PluginLogger, RemoteStorage } from '@workbay/api';
import type { DaemonConfig } from './config.js';
import type { WorkspaceContentService } from './content-service.js';
import type { DaemonMetrics } from './health/metrics.js';
import type { HostOps } from './host-ops/host-ops.js';
import type { DiskQuota } from './quota/disk-quota.js';

export const daemonConfigToken = createToken<DaemonConfig>('workbay.daemon.config');
export const daemonLoggerToken = createToken<PluginLogger>('workbay.daemon.logger');
export const hostOpsToken = createToken<HostOps>('workbay.daemon.hostOps');
export const remoteStorageToken = createToken<RemoteStorage>('workbay.daemon.remoteStorage');
export const diskQuotaToken = createToken<DiskQuota>('workbay.daemon.diskQuota');
export const daemonMetricsToken = createToken<DaemonMetrics>('workbay.daemon.metrics');
export const contentServiceToken = createToken<WorkspaceContentService>('workbay.daemon.contentService');
