import { BehaviorSubject } from 'rxjs';
import type { Observable } from 'rxjs';
import type { PluginLogger } from '@workbay/api';
import { silentLogger } from '@workbay/api';
import { ResourceExhaustedError, errorMessage } from '../errors.js';
import type { HostOps } from '../host-ops/host-ops.js';

export interface DiskGuardStatus {
  /** True when every watched path has at least the threshold free. */
  readonly ok: boolean;
  readonly paths: ReadonlyArray<{ readonly path: string; readonly freeBytes: number; readonly minFreeBytes: number }>;
  readonly checkedAt: Date;
}

export interface DiskGuardOptions {
  readonly paths: readonly string[];
  /** Below this many free bytes the daemon is not ready and refuses new workspaces (0 disables the guard). */
  readonly minFreeBytes: number;
  readonly intervalMs: number;
  readonly logger?: PluginLogger;
}

/**
 * Watches free space where workspaces live. Below the threshold the daemon reports not-ready and
 * InitWorkspace fails with RESOURCE_EXHAUSTED, naming the free bytes and the threshold.
 */
export class DiskGuard {
  private readonly status = new BehaviorSubject<DiskGuardStatus>({ ok: true, paths: [], checkedAt: new Date(0) });
  /** Emits after every check. */
  readonly status$: Observable<DiskGuardStatus> = this.status.asObservable();
  private timer: NodeJS.Timeout | undefined;
  private readonly logger: PluginLogger;

  constructor(
    private readonly ops: HostOps,
    private readonly options: DiskGuardOptions,
  ) {
    this.logger = options.logger ?? silentLogger;
  }

  getStatus(): DiskGuardStatus {
    return this.status.getValue();
  }

  async check(): Promise<DiskGuardStatus> {
    const paths = [];
    for (const path of this.options.paths) {
      try {
        const stats = await this.ops.statfs(path);
        paths.push({ path, freeBytes: stats.freeBytes, minFreeBytes: this.options.minFreeBytes });
      } catch (error) {
        this.logger.warn({ path, err: errorMessage(error) }, 'disk guard could not stat path');
        paths.push({ path, freeBytes: 0, minFreeBytes: this.options.minFreeBytes });
      }
    }
    const ok = this.options.minFreeBytes <= 0 || paths.every((p) => p.freeBytes >= p.minFreeBytes);
    const previous = this.status.getValue();
    if (previous.ok !== ok) {
      if (ok) this.logger.info({ paths }, 'disk space recovered; accepting workspaces again');
      else this.logger.warn({ paths }, 'disk space below threshold; refusing new workspaces');
    }
    const status = { ok, paths, checkedAt: new Date() };
    this.status.next(status);
    return status;
  }

  /** Throws RESOURCE_EXHAUSTED when a fresh check finds too little space. */
  async assertSpace(): Promise<void> {
    const status = await this.check();
    if (status.ok) return;
    const low = status.paths.find((p) => p.freeBytes < p.minFreeBytes);
    throw new ResourceExhaustedError(
      `not enough disk space for new workspaces: ${low?.freeBytes ?? 0} bytes free in ${low?.path ?? '?'}, threshold ${this.options.minFreeBytes} bytes`,
    );
  }

  start(): void {
    if (this.timer) return;
    void this.check();
    this.timer = setInterval(() => void this.check(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.status.complete();
  }
}
