/**
 * The Subscribe stream of one client.
 *
 * Updates (the resume replay, then the live bus) are filtered, encoded once per record (shared by every
 * subscriber) and written with grpc-js backpressure by {@link writeWithBackpressure}: one update at a time, the
 * next after `drain` when `write()` says the stream is full; the updates that arrive meanwhile wait in the
 * client's unread backlog.
 *
 * A client is cut off (RESOURCE_EXHAUSTED) only when it stops reading: its backlog is over `bufferSize` and no
 * update was handed to its stream for `stallTimeoutMs`. Normal HTTP/2 write buffering during a burst (300
 * workspaces stopping at once) is not a stall: every drained write restarts the clock. `maxBacklog` is a memory
 * guard far above any burst; a backlog beyond it is cut off at once.
 *
 * @module
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import type { ServerWritableStream } from '@grpc/grpc-js';
import type { Writable } from 'node:stream';
import { wsman } from '@workbay/api';
import { filter, fromEvent, map, merge, share, take, takeUntil } from 'rxjs';
import type { Observable } from 'rxjs';
import type { WorkspaceManagerCore } from '../core/manager.js';
import { matchesFilter } from '../domain/status.js';
import type { MetadataFilter } from '../domain/types.js';
import type { Logger } from '../logger.js';
import type { ManagerMetrics } from '../metrics.js';
import { boundErrorMessage, checkRequestBounds } from './bounds.js';
import type { StatusConverter } from './convert.js';
import { filterFromProto } from './convert.js';
import { CutOff, writeWithBackpressure } from './stream-writer.js';

export interface SubscribeOptions {
  readonly core: Pick<WorkspaceManagerCore, 'updatesSince'>;
  readonly converter: StatusConverter;
  readonly logger: Logger;
  readonly metrics?: ManagerMetrics;
  /** Backlog above which a client that stops reading is cut off after `stallTimeoutMs`. */
  readonly bufferSize: number;
  /** How long a client over `bufferSize` may go without reading anything (default 10 s). */
  readonly stallTimeoutMs?: number;
  /** Backlog at which a client is cut off at once (memory guard; default max(50 000, 40 x bufferSize)). */
  readonly maxBacklog?: number;
  /** Streams open at once; one more is refused with RESOURCE_EXHAUSTED (default 10 000). */
  readonly maxStreams?: number;
}

export type SubscribeCall = ServerWritableStream<wsman.SubscribeRequest, wsman.SubscribeResponse | Buffer>;

/**
 * grpc-js hands a server stream's messages to HTTP/2 one at a time, the next only once the previous one's write
 * completed, which takes an event loop iteration: a leader with long iterations (watch and API bursts) delivered
 * a few updates per iteration to each client and a burst waited for seconds in `concatMap` (measured with grpc-js
 * alone, iterations held 20 ms: 400 updates took 3.1 s; handed over together, 0.44 s). A `_writev` hands every
 * message the stream buffered meanwhile to HTTP/2 at once (which batches them itself); the Writable still counts
 * them for backpressure and `drain`. It needs grpc-js's inner call (not public API): without one that can send,
 * the stream keeps grpc-js's own path.
 */
function sendBufferedTogether(call: SubscribeCall): void {
  type Send = (message: Buffer, done: () => void) => void;
  const inner = (call as unknown as { call?: { sendMessage?: Send } }).call;
  if (typeof inner?.sendMessage !== 'function' || typeof call._write !== 'function') return;
  // Reached only after a first message went through `_write` (a Writable uses `_writev` for 2+ buffered writes).
  (call as unknown as Writable)._writev = (chunks, done) => {
    let left = chunks.length;
    for (const { chunk } of chunks) inner.sendMessage!(chunk as Buffer, () => (--left === 0 ? done() : undefined));
  };
}

export function createSubscribeHandler(options: SubscribeOptions): (call: SubscribeCall) => void {
  const { core, converter, logger, metrics, bufferSize } = options;
  const stallTimeoutMs = options.stallTimeoutMs ?? 10_000;
  const maxBacklog = options.maxBacklog ?? Math.max(50_000, bufferSize * 40);
  const maxStreams = options.maxStreams ?? 10_000;
  let open = 0;

  return (call) => {
    let mustMatch: MetadataFilter | undefined;
    try {
      checkRequestBounds(call.request);
      mustMatch = filterFromProto(call.request.mustMatch);
    } catch (error) {
      call.emit('error', { code: grpcStatus.INVALID_ARGUMENT, details: (boundErrorMessage(error) as Error).message });
      return;
    }
    // Gone before we start: its 'cancelled' event has fired already and would never end the pipeline.
    if (call.cancelled) return;
    if (open >= maxStreams) {
      metrics?.refusedSubscribersTotal.inc();
      call.emit('error', {
        code: grpcStatus.RESOURCE_EXHAUSTED,
        details: `${open} Subscribe streams are open, the most this manager serves (config subscribe.maxStreams)`,
      });
      return;
    }
    open++;
    metrics?.subscribers.inc();
    sendBufferedTogether(call);

    const gone$ = merge(fromEvent(call, 'cancelled'), fromEvent(call, 'close'), fromEvent(call, 'error')).pipe(
      take(1),
      share(),
    );
    // The core joins the resume replay and the live updates on one subscription: nothing falls in between.
    const resyncRequired = Buffer.from(wsman.SubscribeResponse.encode({ header: {}, resyncRequired: true }).finish());
    const updates$: Observable<Buffer> = core.updatesSince(call.request.resumeFromStatusVersion).pipe(
      filter((update) => update.kind === 'resync-required' || matchesFilter(update.record, mustMatch)),
      map((update) => (update.kind === 'update' ? converter.subscribeResponseBytes(update.record) : resyncRequired)),
    );

    writeWithBackpressure(call, updates$, { bufferSize, stallTimeoutMs, maxBacklog })
      .pipe(takeUntil(gone$))
      .subscribe({
        error: (error: unknown) => {
          open--;
          metrics?.subscribers.dec();
          if (!(error instanceof CutOff)) {
            logger.error({ err: error }, 'subscribe stream failed');
            call.emit('error', { code: grpcStatus.INTERNAL, details: 'internal error' });
            return;
          }
          logger.warn({ peer: call.getPeer(), reason: error.message }, 'subscriber stopped reading; cutting it off');
          metrics?.droppedSubscribersTotal.inc();
          call.emit('error', {
            code: grpcStatus.RESOURCE_EXHAUSTED,
            details: `subscriber too slow: ${error.message}; reconnect and resync with GetWorkspaces`,
          });
        },
        complete: () => {
          open--;
          metrics?.subscribers.dec();
          // The bus completed (manager shutting down): end the stream cleanly, unless the client is gone.
          if (!call.cancelled && !call.destroyed) {
            try {
              call.end();
            } catch {
              // Already closed by the client.
            }
          }
        },
      });
  };
}
