/**
 * Admission of a StartWorkspace: the workspace class it runs with, and ALREADY_EXISTS for an id or meta id
 * that is in use, being accepted right now, or still being cleaned up.
 *
 * @module
 */
import { AlreadyExistsError, InvalidArgumentError } from '@workbay/api';
import type { ManagerConfig, ResolvedClass } from '../config.js';
import type { WorkspaceRecord } from '../domain/types.js';
import type { WorkspaceRepository } from './repository.js';

export class StartAdmission {
  /** Ids and meta ids of StartWorkspace calls waiting for their record to be durable. */
  private readonly accepting = new Set<string>();

  constructor(
    private readonly config: ManagerConfig,
    private readonly classes: ReadonlyMap<string, ResolvedClass>,
    private readonly repo: WorkspaceRepository,
    /** True while effects of the workspace still run. */
    private readonly busy: (id: string) => boolean,
  ) {}

  resolveClass(requested: string): string {
    const className = requested || this.config.defaultWorkspaceClass;
    if (this.classes.has(className)) return className;
    if (this.config.unknownClass === 'reject') {
      const known = [...this.classes.keys()].join(', ');
      throw new InvalidArgumentError(
        'spec.class',
        `unknown workspace class '${className.slice(0, 64)}'; known: ${known}`,
      );
    }
    return this.config.defaultWorkspaceClass;
  }

  /** ALREADY_EXISTS for an id or meta id that is not stopped, being accepted, or still being cleaned up. */
  assertStartable(id: string, metaId: string): void {
    const existing = this.repo.get(id);
    if (existing && existing.phase !== 'stopped') {
      throw new AlreadyExistsError(`workspace ${id} already exists (phase ${existing.phase})`);
    }
    for (const other of this.repo.list()) {
      if (other.metaId === metaId && other.phase !== 'stopped' && other.id !== id) {
        throw new AlreadyExistsError(
          `workspace ${metaId} already has an instance that is not stopped: ${other.id} (phase ${other.phase})`,
        );
      }
    }
    if (this.accepting.has(id) || this.accepting.has(`meta:${metaId}`)) {
      throw new AlreadyExistsError(`workspace ${id} is being started`);
    }
    if (existing && this.busy(id)) {
      throw new AlreadyExistsError(`workspace ${id} is still being cleaned up; retry shortly`);
    }
  }

  /** Holds the id and meta id against concurrent starts while the record is being made durable. */
  async whileAccepting<T>(record: WorkspaceRecord, body: () => Promise<T>): Promise<T> {
    const keys = [record.id, `meta:${record.metaId}`];
    for (const key of keys) this.accepting.add(key);
    try {
      return await body();
    } finally {
      for (const key of keys) this.accepting.delete(key);
    }
  }
}
