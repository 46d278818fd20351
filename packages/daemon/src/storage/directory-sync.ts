import { fsyncDirectory } from '../util/atomic-file.js';

/**
 * Group commit of directory fsyncs: callers that renamed something into a directory wait for an fsync of it
 * that started after their rename. While one fsync runs, every caller arriving meanwhile shares the single next
 * one, so N uploads committing into one directory at once cost two directory fsyncs, not N.
 */
export class DirectorySyncs {
  private readonly state = new Map<string, { running: Promise<void>; next?: Promise<void> }>();

  constructor(private readonly fsync: (dir: string) => Promise<void> = fsyncDirectory) {}

  sync(dir: string): Promise<void> {
    const current = this.state.get(dir);
    if (!current) return this.start(dir);
    // The running fsync may have started before the caller's rename: the caller needs the next one.
    current.next ??= current.running.then(
      () => this.start(dir),
      () => this.start(dir),
    );
    return current.next;
  }

  private start(dir: string): Promise<void> {
    const running = this.fsync(dir);
    const entry = { running } as { running: Promise<void>; next?: Promise<void> };
    this.state.set(dir, entry);
    const settle = (): void => {
      // A queued successor replaces this entry when it starts; otherwise the directory is idle again.
      if (this.state.get(dir) === entry && entry.next === undefined) this.state.delete(dir);
    };
    running.then(settle, settle);
    return running;
  }
}
