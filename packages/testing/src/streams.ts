/**
 * The part of an RxJS Observable these helpers use, declared structurally so that the kit works with any
 * rxjs copy (and without depending on rxjs).
 */
export interface SubscribableLike<T> {
  subscribe(observer: { next: (value: T) => void; error: (error: unknown) => void; complete: () => void }): {
    unsubscribe(): void;
  };
}

export type StreamSource<T> = SubscribableLike<T> | AsyncIterable<T>;

/** Thrown when a stream did not produce what a test waited for; carries what it did produce. */
export class StreamExpectationError<T = unknown> extends Error {
  constructor(
    message: string,
    readonly collected: readonly T[],
  ) {
    super(message);
    this.name = 'StreamExpectationError';
  }
}

function isAsyncIterable<T>(source: StreamSource<T>): source is AsyncIterable<T> {
  return typeof (source as AsyncIterable<T>)[Symbol.asyncIterator] === 'function';
}

function describe(items: readonly unknown[]): string {
  const shown = items.slice(-20).map((i) => {
    try {
      return JSON.stringify(i, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
    } catch {
      return String(i);
    }
  });
  return `${items.length} item(s)${items.length > 20 ? ', last 20' : ''}: [${shown.join(', ')}]`;
}

/**
 * Collects items from an Observable or async iterable until `predicate` accepts one (that item included),
 * then unsubscribes. Rejects if the stream ends or errors first, or after `timeoutMs`, naming what arrived.
 */
export function collectUntil<T>(
  source: StreamSource<T>,
  predicate: (item: T, collected: readonly T[]) => boolean,
  timeoutMs = 10_000,
): Promise<T[]> {
  const collected: T[] = [];
  return new Promise<T[]>((resolve, reject) => {
    let done = false;
    let stop: () => void = () => undefined;
    const finish = (error?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stop();
      if (error) reject(error);
      else resolve(collected);
    };
    const timer = setTimeout(
      () =>
        finish(
          new StreamExpectationError(`no matching item within ${timeoutMs} ms; got ${describe(collected)}`, collected),
        ),
      timeoutMs,
    );
    const onItem = (item: T): void => {
      if (done) return;
      collected.push(item);
      let matched: boolean;
      try {
        matched = predicate(item, collected);
      } catch (error) {
        finish(error instanceof Error ? error : new Error(String(error)));
        return;
      }
      if (matched) finish();
    };
    const onEnd = (): void =>
      finish(
        new StreamExpectationError(`stream completed before a matching item; got ${describe(collected)}`, collected),
      );
    const onError = (error: unknown): void =>
      finish(
        new StreamExpectationError(
          `stream failed before a matching item (${error instanceof Error ? error.message : String(error)}); got ${describe(collected)}`,
          collected,
        ),
      );

    if (isAsyncIterable(source)) {
      const iterator = source[Symbol.asyncIterator]();
      stop = () => {
        void iterator.return?.().catch(() => undefined);
      };
      void (async () => {
        try {
          for (;;) {
            const next = await iterator.next();
            if (done) return;
            if (next.done) return onEnd();
            onItem(next.value);
          }
        } catch (error) {
          onError(error);
        }
      })();
    } else {
      // A synchronous source may match during subscribe(), before the subscription exists.
      let unsubscribeLater = false;
      stop = () => {
        unsubscribeLater = true;
      };
      const subscription = source.subscribe({ next: onItem, error: onError, complete: onEnd });
      stop = () => subscription.unsubscribe();
      if (unsubscribeLater) subscription.unsubscribe();
    }
  });
}

/** Reads a phase from a stream item: the item itself if a string, else `.phase` or `.status.phase`. */
export function defaultPhaseOf(item: unknown): string | undefined {
  if (typeof item === 'string') return item;
  if (typeof item !== 'object' || item === null) return undefined;
  const record = item as { phase?: unknown; status?: { phase?: unknown } };
  const phase = record.phase ?? record.status?.phase;
  return phase === undefined || phase === null ? undefined : String(phase);
}

export interface ExpectPhasesOptions<T> {
  /** Default 30 s. */
  readonly timeoutMs?: number;
  /** How to read an item's phase; default {@link defaultPhaseOf}. */
  readonly phaseOf?: (item: T) => string | undefined;
  /**
   * `exact` (default): the distinct phases seen, in order, equal `phases`. `subsequence`: `phases` appear in
   * this order, other phases may come between them.
   */
  readonly match?: 'exact' | 'subsequence';
}

/**
 * Waits until the stream reaches the last of `phases` and checks the way there: repeated updates in the same
 * phase count once. Resolves with the items collected; rejects naming the phases seen.
 */
export async function expectPhases<T>(
  stream: StreamSource<T>,
  phases: readonly string[],
  options: ExpectPhasesOptions<T> = {},
): Promise<T[]> {
  if (phases.length === 0) throw new Error('expectPhases needs at least one phase');
  const phaseOf = options.phaseOf ?? ((item: T) => defaultPhaseOf(item));
  const match = options.match ?? 'exact';
  const last = phases[phases.length - 1];
  const seen: string[] = [];
  const check = (): void => {
    if (match === 'exact') {
      const i = seen.length - 1;
      if (seen[i] !== phases[i]) {
        throw new StreamExpectationError(`expected phases [${phases.join(' → ')}] but saw [${seen.join(' → ')}]`, seen);
      }
    }
  };
  let items: T[];
  try {
    items = await collectUntil(
      stream,
      (item) => {
        const phase = phaseOf(item);
        if (phase === undefined || seen[seen.length - 1] === phase) return false;
        seen.push(phase);
        check();
        return phase === last && (match === 'subsequence' || seen.length === phases.length);
      },
      options.timeoutMs ?? 30_000,
    );
  } catch (error) {
    if (error instanceof StreamExpectationError && error.collected !== seen) {
      throw new StreamExpectationError(
        `expected phases [${phases.join(' → ')}] but saw [${seen.join(' → ')}]: ${error.message}`,
        error.collected,
      );
    }
    throw error;
  }
  if (match === 'subsequence') {
    let next = 0;
    for (const phase of seen) if (phase === phases[next]) next++;
    if (next < phases.length) {
      throw new StreamExpectationError(
        `expected phases [${phases.join(' → ')}] in this order but saw [${seen.join(' → ')}]`,
        items,
      );
    }
  }
  return items;
}
