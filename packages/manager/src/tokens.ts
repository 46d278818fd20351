/**
 * Typed DI tokens of the manager's components. `startManager` registers them in the plugin host's child
 * container, so plugins (and embedders) resolve the running components by type instead of by bare string.
 *
 * @module
 */
import { createToken } from '@workbay/api';
import type { ManagerConfig } from './config.js';
import type { ContentService } from './content/content-service.js';
import type { MaintenanceMode } from './core/maintenance.js';
import type { WorkspaceManagerCore } from './core/manager.js';
import type { ManagerMetrics } from './metrics.js';
import type { WorkspaceStore } from './store/file-store.js';

export const managerConfigToken = createToken<ManagerConfig>('manager.config');
export const workspaceManagerCoreToken = createToken<WorkspaceManagerCore>('manager.core');
export const workspaceStoreToken = createToken<WorkspaceStore>('manager.store');
export const contentServiceToken = createToken<ContentService>('manager.contentService');
export const maintenanceModeToken = createToken<MaintenanceMode>('manager.maintenance');
export const managerMetricsToken = createToken<ManagerMetrics>('manager.metrics');
