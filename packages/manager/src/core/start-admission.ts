/**
 * Admission of a StartWorkspace: the workspace class it runs with, and ALREADY_EXISTS for an id or meta id
 * that is in use, being accepted right now, or still being cleaned up. A StopWorkspace of an id being accepted
 * waits for the acceptance ({@link StartAdmission.acceptanceOf}), so that it stops the workspace instead of
 * finding no record and being dropped.
 *
 * @module
 */
import { AlreadyExistsError, InvalidArgumentError } from '@workbay/api';
import type { ManagerConfig, ResolvedClass } from '../config.js';
import type { WorkspaceRecord } from '../domain/types.js';
import { truncate } from '../domain/validation.js';
import type { WorkspaceRepository } from './repository.js';

/**
 * An instance id as the proxy's host routing serves it (`<id>.ws.<domain>`, `<port>-<id>.ws.<domain>`): one DNS
 * label, lower case (hosts are case-insensitive), short enough for the port's prefix within 63 characters.
 */
const hostLabelPattern = /^[a-z0-9][a-z0-9_-]{0,56}$/;
/**
 * Labels that are not an id of their own there: what the proxy's host routes read as `<port>-<id>` (proxy/routing.ts),
 * and IDNA's reserved form (`xn--…` shows in browsers as Unicode: one owner's id as a lookalike of another's).
 */
const notAnIdLabel = /^([0-9]{1,5}-|..--)/;

export class StartAdmission {
  /**
   * Ids and meta ids (`meta:<id>`) of StartWorkspace calls waiting for their record to be durable, each with a
   * promise that resolves (never rejects) once that acceptance is over.
   */
  private readonly accepting = new Map<string, Promise<void>>();

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

  /**
   * ALREADY_EXISTS for an id or meta id that is not stopped, being accepted, or still being cleaned up, and for the id
   * of a stopped workspace of another owner or meta id: its record and any content the node kept (a final backup that
   * failed keeps it) are that workspace's. Red team round 9 started eve's workspace with the id of mallory's stopped
   * one, ran it on mallory's content and had its snapshots written to mallory's storage.
   */
  assertStartable(id: string, metaId: string, owner: string): void {
    // Red team round 14: under host routing mallory's `evil.a1` was a subdomain of alice's `a1` (its pages set
    // cookies for alice's workspace), and alice's `Ab1` was served at `ab1.ws.<domain>`, which the proxy routed to
    // mallory's `ab1`.
    // Nor a label the proxy reads as `<port>-<id>` (round 14b, R1: alice's `8080-app` was mallory's `app`, port 8080).
    if (
      this.config.proxy.enabled &&
      this.config.proxy.domain &&
      (!hostLabelPattern.test(id) || notAnIdLabel.test(id))
    ) {
      throw new InvalidArgumentError(
        'id',
        `'${truncate(id)}' is not one DNS label, as host routing (<id>.ws.<domain>) needs: use 1-57 lower-case letters, digits, '_' or '-', not starting <digits>- nor ??--`,
      );
    }
    const existing = this.repo.get(id);
    if (existing && existing.phase !== 'stopped') {
      throw new AlreadyExistsError(`workspace ${truncate(id)} already exists (phase ${existing.phase})`);
    }
    if (existing && (existing.owner !== owner || existing.metaId !== metaId)) {
      throw new AlreadyExistsError(
        `instance id ${truncate(id)} belongs to another workspace (stopped); start with a new instance id`,
      );
    }
    for (const other of this.repo.list()) {
      if (other.metaId === metaId && other.phase !== 'stopped' && other.id !== id) {
        throw new AlreadyExistsError(
          `workspace ${truncate(metaId)} already has an instance that is not stopped: ${truncate(other.id)} (phase ${other.phase})`,
        );
      }
    }
    if (this.accepting.has(id) || this.accepting.has(`meta:${metaId}`)) {
      throw new AlreadyExistsError(`workspace ${truncate(id)} is being started`);
    }
    if (existing && this.busy(id)) {
      throw new AlreadyExistsError(`workspace ${truncate(id)} is still being cleaned up; retry shortly`);
    }
  }

  /**
   * Holds the id and meta id against concurrent starts while `body` makes the record durable (and starts its
   * lifecycle). The hold begins synchronously, before `body` runs: a stop issued right after the start call, even
   * without awaiting it, finds it.
   */
  async whileAccepting<T>(record: WorkspaceRecord, body: () => Promise<T>): Promise<T> {
    const keys = [record.id, `meta:${record.metaId}`];
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => (settle = resolve));
    for (const key of keys) this.accepting.set(key, settled);
    try {
      return await body();
    } finally {
      for (const key of keys) if (this.accepting.get(key) === settled) this.accepting.delete(key);
      settle();
    }
  }

  /**
   * When a StartWorkspace of `id` is being accepted: a promise that resolves (never rejects) once it is over,
   * with its record created and its lifecycle started, or with the start refused. Otherwise undefined.
   */
  acceptanceOf(id: string): Promise<void> | undefined {
    return this.accepting.get(id);
  }
}
