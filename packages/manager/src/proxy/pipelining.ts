/**
 * One request at a time per client connection. Node's HTTP server parses requests a client pipelines (writes back
 * to back without waiting for answers) and hands each over at once; the proxy admitted, counted and forwarded them
 * all, and when the client left only the one being answered was let go. One connection of 600 pipelined requests,
 * open for 3 s, held 512 of a workspace's upstream connections; six held the node's whole anonymous budget, and every
 * public port of the node answered 503 for two minutes (red team round 12, P5). Here a request that arrives while
 * its connection has one in flight waits, uncounted and unforwarded, until that one's answer is done; once the
 * connection is gone, whatever waited is dropped.
 *
 * @module
 */
import type { Socket } from 'node:net';
import type { ServerResponse } from 'node:http';

/** Requests one connection may have waiting behind the one in flight; a connection with more is closed. */
export const maxPipelinedRequests = 32;

export class PipelinedRequests {
  /** Per connection with a request in flight: what waits behind it, in order. */
  private readonly waiting = new WeakMap<Socket, Array<() => void>>();

  /** Runs `handle` now, or once every earlier request of `socket` is answered (never, if `socket` closes first). */
  run(socket: Socket, res: ServerResponse, handle: () => void): void {
    const start = (): void => {
      res.once('close', () => this.next(socket));
      handle();
    };
    const queue = this.waiting.get(socket);
    if (!queue) {
      this.waiting.set(socket, []);
      start();
      return;
    }
    if (queue.length >= maxPipelinedRequests) {
      socket.destroy();
      return;
    }
    queue.push(start);
  }

  private next(socket: Socket): void {
    const queue = this.waiting.get(socket);
    const following = socket.destroyed ? undefined : queue?.shift();
    if (following) following();
    else this.waiting.delete(socket);
  }
}
