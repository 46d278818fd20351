/**
 * Prometheus metrics of the manager (prefix `workbay_manager_`), in a registry of its own so several managers
 * in one process (tests) do not collide. Labels `{type, class}` unless noted.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { WorkspaceRecord } from './domain/types.js';

const prefix = 'workbay_manager_';
const startBuckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

/** What the port proxy's TCP shedder did so far (`PortProxy.shedding`). */
export interface SheddingCounts {
  readonly shed: number;
  readonly refused: number;
  readonly refusedUnderPressure: number;
}

export class ManagerMetrics {
  readonly registry = new Registry();
  readonly startupSeconds: Histogram<'type' | 'class'>;
  readonly pendingSeconds: Histogram<'type' | 'class'>;
  readonly creatingSeconds: Histogram<'type' | 'class'>;
  readonly startsTotal: Counter<'type' | 'class'>;
  readonly startFailuresTotal: Counter<'type' | 'class'>;
  readonly failuresTotal: Counter<'type' | 'class'>;
  readonly stopsTotal: Counter<'reason' | 'type' | 'class'>;
  readonly backupsTotal: Counter<'type' | 'class'>;
  readonly backupFailuresTotal: Counter<'type' | 'class'>;
  readonly subscribers: Gauge;
  readonly droppedSubscribersTotal: Counter;
  readonly refusedSubscribersTotal: Counter;
  readonly maintenanceEnabled: Gauge;

  constructor(
    options: {
      readonly workspaces?: () => Iterable<WorkspaceRecord>;
      /** The port proxy's TCP shedder's counts (undefined while it is off). */
      readonly shedding?: () => SheddingCounts | undefined;
      readonly defaultMetrics?: boolean;
    } = {},
  ) {
    const registers = [this.registry];
    const labels = ['type', 'class'] as const;
    this.startupSeconds = new Histogram({
      name: `${prefix}workspace_startup_seconds`,
      help: 'Time from StartWorkspace to RUNNING.',
      labelNames: labels,
      buckets: startBuckets,
      registers,
    });
    this.pendingSeconds = new Histogram({
      name: `${prefix}workspace_pending_seconds`,
      help: 'Time a workspace spent in PENDING.',
      labelNames: labels,
      buckets: startBuckets,
      registers,
    });
    this.creatingSeconds = new Histogram({
      name: `${prefix}workspace_creating_seconds`,
      help: 'Time a workspace spent in CREATING.',
      labelNames: labels,
      buckets: startBuckets,
      registers,
    });
    this.startsTotal = new Counter({
      name: `${prefix}workspace_starts_total`,
      help: 'StartWorkspace calls that created a workspace.',
      labelNames: labels,
      registers,
    });
    this.startFailuresTotal = new Counter({
      name: `${prefix}workspace_starts_failure_total`,
      help: 'Workspaces that stopped without ever becoming ready (not aborted or stopped by request).',
      labelNames: labels,
      registers,
    });
    this.failuresTotal = new Counter({
      name: `${prefix}workspace_failure_total`,
      help: 'Workspaces that got a failed condition.',
      labelNames: labels,
      registers,
    });
    this.stopsTotal = new Counter({
      name: `${prefix}workspace_stops_total`,
      help: 'Workspaces that reached STOPPED, by reason.',
      labelNames: ['reason', ...labels],
      registers,
    });
    this.backupsTotal = new Counter({
      name: `${prefix}workspace_backups_total`,
      help: 'Backups taken (final and on request).',
      labelNames: labels,
      registers,
    });
    this.backupFailuresTotal = new Counter({
      name: `${prefix}workspace_backups_failure_total`,
      help: 'Backups that failed.',
      labelNames: labels,
      registers,
    });
    this.subscribers = new Gauge({
      name: `${prefix}subscribers`,
      help: 'Open Subscribe streams.',
      registers,
    });
    this.droppedSubscribersTotal = new Counter({
      name: `${prefix}subscribers_dropped_total`,
      help: 'Subscribe streams cut off because the client read too slowly.',
      registers,
    });
    this.refusedSubscribersTotal = new Counter({
      name: `${prefix}subscribers_refused_total`,
      help: 'Subscribe streams refused because subscribe.maxStreams were open.',
      registers,
    });
    this.maintenanceEnabled = new Gauge({
      name: `${prefix}maintenance_enabled`,
      help: '1 while maintenance mode is on.',
      registers,
    });
    const workspaces = options.workspaces;
    new Gauge({
      name: `${prefix}workspace_phase_total`,
      help: 'Workspaces per phase.',
      labelNames: ['phase', ...labels],
      registers,
      collect() {
        this.reset();
        if (!workspaces) return;
        const counts = new Map<string, { phase: string; type: string; class: string; n: number }>();
        for (const w of workspaces()) {
          const key = `${w.phase}\0${w.type}\0${w.spec.className}`;
          const entry = counts.get(key);
          if (entry) entry.n += 1;
          else counts.set(key, { phase: w.phase, type: w.type, class: w.spec.className, n: 1 });
        }
        for (const { phase, type, class: cls, n } of counts.values()) this.set({ phase, type, class: cls }, n);
      },
    });
    // The port proxy's TCP shedder keeps its own counts; each is read at scrape time.
    const shedding = options.shedding;
    const sheddingCounter = (name: string, help: string, read: (counts: SheddingCounts) => number): void => {
      new Counter({
        name: `${prefix}${name}`,
        help: `${help} (no labels).`,
        registers,
        collect() {
          this.reset();
          const counts = shedding?.();
          this.inc(counts ? read(counts) : 0);
        },
      });
    };
    sheddingCounter(
      'proxy_shed_transfers_total',
      'Proxied transfers reset because the manager’s TCP budget was nearly used up',
      (c) => c.shed,
    );
    sheddingCounter(
      'proxy_cooldown_refusals_total',
      'Proxy requests refused because their client (or owner, or network) was shed a moment ago',
      (c) => c.refused,
    );
    sheddingCounter(
      'proxy_pressure_refusals_total',
      'Proxy requests refused because their class (anonymous, or one owner) held over half of the manager’s TCP budget under pressure',
      (c) => c.refusedUnderPressure,
    );
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix });
  }

  static labels(record: WorkspaceRecord): { type: string; class: string } {
    return { type: record.type, class: record.spec.className };
  }
}
