/**
 * Maintenance mode (§2.11): while enabled, StartWorkspace, StopWorkspace and TakeSnapshot answer
 * FAILED_PRECONDITION and timeouts pause. Sources, any of which enables it:
 * - the config flag `maintenance.enabled`;
 * - the file `maintenance.file` (`{"enabledUntil": "<RFC3339>"}` or `{"enabled": true}`), re-read every
 *   `pollInterval`, so an operator can switch it without an RPC or a restart;
 * - {@link MaintenanceMode.set}, used by the admin endpoint on the metrics port; it writes the same file, so the
 *   switch survives a restart.
 *
 * @module
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BehaviorSubject, distinctUntilChanged } from 'rxjs';
import type { Observable } from 'rxjs';
import type { Logger } from '../logger.js';

export interface MaintenanceState {
  readonly enabled: boolean;
  /** When the file switch expires; undefined when open-ended or off. */
  readonly enabledUntil?: Date;
  readonly source: 'config' | 'file' | 'off';
}

interface FileSwitch {
  readonly enabled?: boolean;
  readonly enabledUntil?: string;
}

export class MaintenanceMode {
  private readonly subject: BehaviorSubject<MaintenanceState>;
  private fileSwitch: FileSwitch = {};
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: { readonly enabled: boolean; readonly file: string; readonly pollIntervalMs: number },
    private readonly logger?: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.subject = new BehaviorSubject<MaintenanceState>(this.compute());
  }

  get state$(): Observable<MaintenanceState> {
    return this.subject.pipe(distinctUntilChanged((a, b) => a.enabled === b.enabled && a.source === b.source));
  }

  get state(): MaintenanceState {
    return this.compute();
  }

  isEnabled(): boolean {
    return this.compute().enabled;
  }

  /** Reads the file once and then every pollInterval. */
  async start(): Promise<void> {
    await this.reload();
    this.timer = setInterval(() => void this.reload(), this.options.pollIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Re-reads the file (also on SIGHUP in the embedded entry). */
  async reload(): Promise<void> {
    let next: FileSwitch = {};
    try {
      const parsed = JSON.parse(await readFile(this.options.file, 'utf8')) as unknown;
      if (typeof parsed === 'object' && parsed !== null) next = parsed as FileSwitch;
    } catch (error) {
      // No file: no switch. An unreadable one (torn write, permissions) keeps the last state read: flipping
      // maintenance off because a file could not be read would start workspaces the operator meant to hold.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.logger?.error(
          { err: error, file: this.options.file },
          'cannot read the maintenance file; keeping the last state',
        );
        next = this.fileSwitch;
      }
    }
    this.fileSwitch = next;
    this.emit();
  }

  /** Switches maintenance on (optionally until a time) or off by writing the file. */
  async set(enabled: boolean, until?: Date): Promise<MaintenanceState> {
    const content: FileSwitch = enabled
      ? until
        ? { enabledUntil: until.toISOString() }
        : { enabled: true }
      : { enabled: false };
    await mkdir(dirname(this.options.file), { recursive: true });
    const tmp = `${this.options.file}.tmp-${process.pid}`;
    await writeFile(tmp, `${JSON.stringify(content)}\n`, { mode: 0o600 });
    await rename(tmp, this.options.file);
    this.fileSwitch = content;
    this.emit();
    return this.compute();
  }

  private emit(): void {
    const state = this.compute();
    const previous = this.subject.value;
    if (state.enabled !== previous.enabled) this.logger?.info({ maintenance: state }, 'maintenance mode changed');
    this.subject.next(state);
  }

  private compute(): MaintenanceState {
    if (this.options.enabled) return { enabled: true, source: 'config' };
    const file = this.fileSwitch;
    if (file.enabledUntil) {
      const until = new Date(file.enabledUntil);
      if (!Number.isNaN(until.getTime()) && this.now() < until.getTime()) {
        return { enabled: true, enabledUntil: until, source: 'file' };
      }
      return { enabled: false, source: 'off' };
    }
    if (file.enabled === true) return { enabled: true, source: 'file' };
    return { enabled: false, source: 'off' };
  }
}
