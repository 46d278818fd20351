import type { PluginLogger } from '@workbay/api';
import type { HostResources } from './provision.js';

/** How long resources reserved ahead wait for their start before they are given back (a start then reserves anew). */
export const defaultPreparedTtlMs = 15 * 60_000;

interface Reservation {
  readonly host: Promise<HostResources | undefined>;
  readonly timer: NodeJS.Timeout;
}

/**
 * Host resources reserved ahead of a start, by instance id (the runtime's `prepare`): the cgroup and the network are
 * made while the daemon still produces the content, and the start takes them. Whatever no start takes goes back when
 * the workspace is stopped, the runtime closes, or `ttlMs` passed. A reservation that failed is only logged: the
 * start then reserves for itself and reports its own failure.
 */
export class PreparedHosts {
  private readonly reservations = new Map<string, Reservation>();

  constructor(
    private readonly logger: PluginLogger,
    private readonly ttlMs = defaultPreparedTtlMs,
  ) {}

  /** Reserves with `reserve` unless a reservation for `id` exists; resolves once it is made (or failed). */
  async reserve(id: string, reserve: () => Promise<HostResources>): Promise<void> {
    if (this.reservations.has(id)) return;
    const host = reserve().catch((error: unknown) => {
      // Deliberate: see the class comment; the start does the same work again and answers for it.
      this.logger.debug({ instanceId: id, err: error }, 'reserving host resources ahead of the start failed');
      return undefined;
    });
    const timer = setTimeout(() => void this.release(id), this.ttlMs);
    timer.unref();
    this.reservations.set(id, { host, timer });
    await host;
  }

  /** Hands the reservation for `id` over to a start (undefined when there is none or it failed). */
  take(id: string): Promise<HostResources | undefined> {
    const reservation = this.reservations.get(id);
    if (!reservation) return Promise.resolve(undefined);
    clearTimeout(reservation.timer);
    this.reservations.delete(id);
    return reservation.host;
  }

  /** Gives back what is reserved for `id`, once its reservation is made. */
  async release(id: string): Promise<void> {
    const host = await this.take(id);
    await host?.release();
  }

  async releaseAll(): Promise<void> {
    await Promise.all([...this.reservations.keys()].map((id) => this.release(id)));
  }

  has(id: string): boolean {
    return this.reservations.has(id);
  }
}
