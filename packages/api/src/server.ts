/**
 * Helpers for implementing the services with grpc-js: async handlers in, grpc-js handlers out, with errors
 * mapped by {@link toGrpcStatus} (domain errors keep their code; anything else becomes INTERNAL without
 * details).
 *
 * @example
 * const impl: WorkspaceManagerServer = {
 *   describeWorkspace: unaryHandler(async (request) => ({ status: await manager.describe(request.id) })),
 *   subscribe: serverStreamHandler((request, { signal }) => manager.updates(request, signal)),
 *   // ...
 * };
 * server.addService(WorkspaceManagerService, impl);
 *
 * @module
 */
import type { ServerUnaryCall, ServerWritableStream, handleServerStreamingCall, handleUnaryCall } from '@grpc/grpc-js';
import { isObservable } from 'rxjs';
import type { Observable } from 'rxjs';
import { isWorkbayError, toGrpcStatus } from './errors.js';

export interface HandlerOptions {
  /**
   * Called with every error that is not a Workbay error (those that become INTERNAL), e.g. to log it; the
   * client never sees these details.
   */
  readonly onInternalError?: (error: unknown, path: string) => void;
  /**
   * Called with every error a handler ends with, domain errors included, e.g. to log the `cause` a domain error
   * carries when its message to the client is deliberately short.
   */
  readonly onError?: (error: unknown, path: string) => void;
}

/** What a server-streaming handler receives besides the request. */
export interface StreamContext<Req, Res> {
  /** Aborted when the client cancels or disconnects. */
  readonly signal: AbortSignal;
  readonly call: ServerWritableStream<Req, Res>;
}

function report(options: HandlerOptions | undefined, error: unknown, path: string): void {
  options?.onError?.(error, path);
  if (!isWorkbayError(error)) options?.onInternalError?.(error, path);
}

/** Wraps an async function as a grpc-js unary handler. */
export function unaryHandler<Req, Res>(
  handler: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res> | Res,
  options?: HandlerOptions,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    void (async () => {
      try {
        const response = await handler(call.request, call);
        callback(null, response);
      } catch (error) {
        report(options, error, call.getPath());
        callback(toGrpcStatus(error));
      }
    })();
  };
}

/**
 * Wraps a function that returns an async iterable (or an RxJS Observable) as a grpc-js server-streaming
 * handler. Iterables are written with backpressure; the iteration stops (and the signal aborts) when the
 * client goes away. An error thrown by the source ends the call with the mapped status.
 */
export function serverStreamHandler<Req, Res>(
  handler: (request: Req, context: StreamContext<Req, Res>) => AsyncIterable<Res> | Observable<Res>,
  options?: HandlerOptions,
): handleServerStreamingCall<Req, Res> {
  return (call) => {
    const controller = new AbortController();
    const abort = (): void => controller.abort();
    call.once('cancelled', abort);
    call.once('close', abort);

    const fail = (error: unknown): void => {
      report(options, error, call.getPath());
      if (!call.cancelled) call.emit('error', toGrpcStatus(error));
    };

    let source: AsyncIterable<Res> | Observable<Res>;
    try {
      source = handler(call.request, { signal: controller.signal, call });
    } catch (error) {
      fail(error);
      return;
    }

    if (isObservable(source)) {
      const subscription = source.subscribe({
        next: (message) => {
          if (!call.cancelled) call.write(message);
        },
        error: fail,
        complete: () => {
          if (!call.cancelled) call.end();
        },
      });
      controller.signal.addEventListener('abort', () => subscription.unsubscribe(), { once: true });
      return;
    }

    const iterable = source;
    void (async () => {
      try {
        for await (const message of iterable) {
          if (controller.signal.aborted) break;
          if (!call.write(message)) await drained(call, controller.signal);
        }
        if (!call.cancelled) call.end();
      } catch (error) {
        fail(error);
      }
    })();
  };
}

function drained(call: ServerWritableStream<unknown, unknown>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      call.off('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    call.once('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
