/**
 * Initialization progress in the workspace's status: while the `init-content` effect waits for the daemon, this
 * polls the daemon's InitProgress extension and turns what a retrying step reports (a flaky git server, a
 * download that times out) into a status message, e.g. `git clone failed, retrying (attempt 2 of at most 7):
 * fatal: unable to access ...`. Without it a start that retries for minutes shows nothing until it ends.
 *
 * The daemon already scrubs the text; the manager scrubs and bounds it again before it becomes a status message
 * (the status reaches every client of the workspace): no credentials, one line, bounded.
 *
 * @module
 */
import { isWorkbayError } from '@workbay/api';
import type { ContentService, InitProgressInfo } from '../../content/content-service.js';
import type { Logger } from '../../logger.js';
import { redactText } from '../../logger.js';
import { FlowAborted, sleep } from '../async.js';

/** How often the daemon is asked while a workspace initialises. */
export const defaultInitProgressPollMs = 1_000;

/** The longest progress message a status carries. */
const maxMessageChars = 320;

// eslint-disable-next-line no-control-regex -- control characters are exactly what is removed from the text
const controlCharacters = /[\u0000-\u001f\u007f]/g;

/** The status message for a progress report; empty when there is nothing worth saying (no retry yet). */
export function initProgressMessage(progress: InitProgressInfo): string {
  if (!progress.initializing || progress.attempt < 2 || progress.step === '') return '';
  const of = progress.maxAttempts >= progress.attempt ? ` of at most ${progress.maxAttempts}` : '';
  const error = progress.lastError === '' ? '' : `: ${progress.lastError}`;
  const text = redactText(`${progress.step} failed, retrying (attempt ${progress.attempt}${of})${error}`).replace(
    controlCharacters,
    ' ',
  );
  return text.length > maxMessageChars ? `${text.slice(0, maxMessageChars - 3)}...` : text;
}

export interface InitProgressWatchOptions {
  readonly id: string;
  readonly content: ContentService;
  readonly intervalMs: number;
  /** The init effect's signal: a stop or shutdown ends the watch too. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** Called with each new message (never twice the same in a row), never after the returned stop was called. */
  readonly onMessage: (message: string) => void;
}

export interface InitProgressWatch {
  /** Ends the watch: no message is reported after this returns. */
  stop(): void;
  /** Settles once the watch has ended (stopped, aborted, or the daemon cannot say). */
  readonly ended: Promise<void>;
}

/**
 * Polls the daemon until stopped (or the signal aborts). Failures to ask are not the
 * workspace's: they are logged at debug level and the next poll asks again; a daemon without the extension ends
 * the watch.
 */
export function watchInitProgress(options: InitProgressWatchOptions): InitProgressWatch {
  const ask = options.content.initProgress?.bind(options.content);
  if (!ask) return { stop: () => undefined, ended: Promise.resolve() };
  const controller = new AbortController();
  const signal = AbortSignal.any([options.signal, controller.signal]);
  const loop = async (): Promise<void> => {
    let last = '';
    for (;;) {
      await sleep(options.intervalMs, signal);
      let progress: InitProgressInfo | undefined;
      try {
        progress = await ask(options.id, signal);
      } catch (error) {
        if (signal.aborted) return;
        // Deliberate: NOT_FOUND until the daemon has registered the workspace, UNAVAILABLE while it restarts;
        // the init effect itself reports every failure that matters.
        if (!isWorkbayError(error, 'not-found'))
          options.logger.debug({ err: error, workspace: options.id }, 'cannot read the initialization progress');
        continue;
      }
      // Checked after the await: the effect may have ended meanwhile, and no message may follow its outcome.
      if (signal.aborted || progress === undefined) return;
      const message = initProgressMessage(progress);
      if (message !== '' && message !== last) {
        last = message;
        options.onMessage(message);
      }
    }
  };
  const ended = loop().catch((error: unknown) => {
    // Deliberate: the sleep's abort is how the watch ends; anything else is a bug worth a log line, never a
    // failure of the workspace (progress is informational).
    if (!(error instanceof FlowAborted))
      options.logger.warn({ err: error, workspace: options.id }, 'the initialization progress watch failed');
  });
  return { stop: () => controller.abort(), ended };
}
