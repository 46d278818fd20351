import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const prefix = 'workbay_daemon_';
const secondsBuckets = [0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/** What the metrics read from the backup worker pool (see backup/worker-pool.ts). */
export interface BackupWorkerHealth {
  /** Workers replaced because a call in them never returned. */
  readonly stalls: number;
  /** Threads of replaced workers still stuck in that call. */
  readonly stuckThreads: number;
}

/** The daemon's Prometheus metrics, in a registry of its own (two daemons in one process do not clash). */
export class DaemonMetrics {
  readonly registry = new Registry();
  readonly initializeSeconds: Histogram<'source' | 'outcome'>;
  readonly finalizeSeconds: Histogram<'backup' | 'outcome'>;
  readonly backupSeconds: Histogram<'reason' | 'format'>;
  readonly backupWaitingSeconds: Histogram<string>;
  readonly backupUploadedBytes: Counter<'reason' | 'format'>;
  readonly backupContentBytes: Counter<'reason' | 'format'>;
  readonly backups: Counter<'reason' | 'format'>;
  readonly backupFailures: Counter<'reason'>;
  readonly backupRetries: Counter<'reason'>;
  readonly restores: Counter<'kind' | 'outcome'>;
  readonly snapshots: Counter<'outcome'>;
  readonly workspaces: Gauge<'phase'>;
  readonly diskFreeBytes: Gauge<'path'>;
  readonly quotaExceeded: Counter<string>;
  readonly housekeepingRemoved: Counter<'kind'>;
  readonly iwsPenalties: Counter<'reason'>;

  constructor(options: { defaultMetrics?: boolean; backupWorkers?: BackupWorkerHealth } = {}) {
    const registers = [this.registry];
    this.initializeSeconds = new Histogram({
      name: `${prefix}workspace_initialize_seconds`,
      help: 'Time to initialize workspace content (restore or initializer)',
      labelNames: ['source', 'outcome'],
      buckets: secondsBuckets,
      registers,
    });
    this.finalizeSeconds = new Histogram({
      name: `${prefix}workspace_finalize_seconds`,
      help: 'Time to dispose a workspace (final backup and deletion)',
      labelNames: ['backup', 'outcome'],
      buckets: secondsBuckets,
      registers,
    });
    this.backupSeconds = new Histogram({
      name: `${prefix}backup_seconds`,
      help: 'Duration of successful backups',
      labelNames: ['reason', 'format'],
      buckets: secondsBuckets,
      registers,
    });
    this.backupWaitingSeconds = new Histogram({
      name: `${prefix}backup_waiting_seconds`,
      help: 'Time backups waited for a concurrency slot',
      buckets: secondsBuckets,
      registers,
    });
    this.backupUploadedBytes = new Counter({
      name: `${prefix}backup_uploaded_bytes_total`,
      help: 'Bytes uploaded by backups (incremental backups upload only what changed)',
      labelNames: ['reason', 'format'],
      registers,
    });
    this.backupContentBytes = new Counter({
      name: `${prefix}backup_content_bytes_total`,
      help: 'Bytes of workspace content covered by backups',
      labelNames: ['reason', 'format'],
      registers,
    });
    this.backups = new Counter({
      name: `${prefix}backups_total`,
      help: 'Successful backups',
      labelNames: ['reason', 'format'],
      registers,
    });
    this.backupFailures = new Counter({
      name: `${prefix}backup_failures_total`,
      help: 'Backups that failed after all attempts',
      labelNames: ['reason'],
      registers,
    });
    this.backupRetries = new Counter({
      name: `${prefix}backup_retries_total`,
      help: 'Backup attempts that were retried',
      labelNames: ['reason'],
      registers,
    });
    this.restores = new Counter({
      name: `${prefix}restores_total`,
      help: 'Content restores from backups and snapshots',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    this.snapshots = new Counter({
      name: `${prefix}snapshots_total`,
      help: 'Snapshots taken',
      labelNames: ['outcome'],
      registers,
    });
    this.workspaces = new Gauge({
      name: `${prefix}workspaces`,
      help: 'Workspaces on this node by content phase',
      labelNames: ['phase'],
      registers,
    });
    this.diskFreeBytes = new Gauge({
      name: `${prefix}disk_free_bytes`,
      help: 'Free bytes where workspaces live',
      labelNames: ['path'],
      registers,
    });
    this.quotaExceeded = new Counter({
      name: `${prefix}quota_exceeded_total`,
      help: 'Workspaces seen over their disk quota (watch mode)',
      registers,
    });
    this.housekeepingRemoved = new Counter({
      name: `${prefix}housekeeping_removed_total`,
      help: 'Orphaned directories, images and tombstones removed by housekeeping',
      labelNames: ['kind'],
      registers,
    });
    this.iwsPenalties = new Counter({
      name: `${prefix}iws_penalties_total`,
      help: 'Times a workspace flooded its in-workspace service socket and lost it for a cooldown',
      labelNames: ['reason'],
      registers,
    });
    const workers = options.backupWorkers;
    if (workers) {
      new Gauge({
        name: `${prefix}backup_worker_stalls_total`,
        help: 'Backup workers replaced because a call in them never returned (their jobs failed)',
        registers,
        collect() {
          this.set(workers.stalls);
        },
      });
      new Gauge({
        name: `${prefix}backup_workers_stuck`,
        help: 'Threads of replaced backup workers still stuck in a call; /live fails once all workers are',
        registers,
        collect() {
          this.set(workers.stuckThreads);
        },
      });
    }
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix });
  }
}
