/**
 * The proxy's server-wide connection cap, kept for clients that use their connections.
 *
 * A plain cap (Node's `server.maxConnections`) drops whoever comes after the cap is reached: a slowloris client
 * that opens connections from many addresses and trickles its request heads fills it and keeps it full, each
 * connection living up to the headers timeout and then replaced (red team round 5: 256 connections from each of
 * 17 loopback addresses took all 4,096; a legitimate client got 68 resets in 87 requests). Here a connection is
 * *waiting* while it has no request in progress and is not a tunnel: before its first complete request head, and
 * between requests of a keep-alive connection. When the server is full, a new connection takes the slot of the
 * connection that has been waiting longest, which is closed. A slowloris connection is waiting for its whole life,
 * a real client's for the milliseconds its head takes to arrive, or while its keep-alive connection is idle (a
 * client reopens such a connection when it needs one, as it does after any keep-alive close). Only when every
 * connection is busy (requests in progress, tunnels) is a new connection refused.
 *
 * @module
 */
import type { Socket } from 'node:net';

/** What {@link ConnectionSlots.admit} did. */
export type Admission =
  { readonly admitted: true; readonly evicted?: Socket } | { readonly admitted: false; readonly evicted?: undefined };

export class ConnectionSlots {
  private readonly open = new Set<Socket>();
  /** Open connections without a request in progress and not upgraded, longest waiting first (insertion order). */
  private readonly waiting = new Set<Socket>();
  /** Connections the proxy is closing (their client's grace to take the rest, `closing.ts`): the first to go. */
  private readonly closingSet = new Set<Socket>();

  /** `max` 0: no cap (nothing is ever evicted). */
  constructor(private readonly max: number) {}

  /**
   * Gives `socket` a slot, as a waiting connection. When the server is full, the longest-waiting connection loses
   * its slot (returned as `evicted`: the caller closes it); when none is waiting, `socket` is not admitted.
   */
  admit(socket: Socket): Admission {
    let evicted: Socket | undefined;
    if (this.max > 0 && this.open.size >= this.max) {
      evicted = this.closingSet.values().next().value ?? this.waiting.values().next().value;
      if (evicted === undefined) return { admitted: false };
      this.release(evicted);
    }
    this.open.add(socket);
    this.waiting.add(socket);
    socket.once('close', () => this.release(socket));
    return evicted ? { admitted: true, evicted } : { admitted: true };
  }

  /** A request (or an upgrade) is in progress on `socket`: it keeps its slot until it waits again. */
  busy(socket: Socket): void {
    this.waiting.delete(socket);
  }

  /** The response on `socket` is done: the connection waits for its next request, at the end of the line. */
  waitingAgain(socket: Socket): void {
    if (!this.open.has(socket) || socket.destroyed) return;
    this.waiting.delete(socket);
    this.waiting.add(socket);
  }

  /** The proxy is closing `socket`: it keeps its slot only until a new connection needs one. */
  closing(socket: Socket): void {
    if (!this.open.has(socket)) return;
    this.waiting.delete(socket);
    this.closingSet.add(socket);
  }

  /** Open connections that hold a slot. */
  get size(): number {
    return this.open.size;
  }

  /** Of those, the ones waiting (for tests and metrics). */
  get waitingCount(): number {
    return this.waiting.size;
  }

  private release(socket: Socket): void {
    this.open.delete(socket);
    this.waiting.delete(socket);
    this.closingSet.delete(socket);
  }
}
