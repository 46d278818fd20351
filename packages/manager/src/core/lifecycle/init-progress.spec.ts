/**
 * The manager's side of initialization progress: the status message made of a daemon's report (scrubbed and
 * bounded again, whatever the daemon sent), and the watch that polls it while the init effect runs.
 */
import { describe, expect, it } from 'vitest';
import { NotFoundError } from '@workbay/api';
import type { ContentService, InitProgressInfo } from '../../content/content-service.js';
import { createSilentLogger } from '../../logger.js';
import { initProgressMessage, watchInitProgress } from './init-progress.js';

const report = (overrides: Partial<InitProgressInfo> = {}): InitProgressInfo => ({
  initializing: true,
  step: 'git clone',
  attempt: 2,
  maxAttempts: 7,
  lastError: "fatal: unable to access 'https://git.example.com/r.git/': The requested URL returned error: 503",
  ...overrides,
});

describe('initProgressMessage', () => {
  it('says which attempt of how many, and why', () => {
    expect(initProgressMessage(report())).toBe(
      "git clone failed, retrying (attempt 2 of at most 7): fatal: unable to access 'https://git.example.com/r.git/': The requested URL returned error: 503",
    );
  });

  it('says nothing before a retry or once initialization ended', () => {
    expect(initProgressMessage(report({ attempt: 1 }))).toBe('');
    expect(initProgressMessage(report({ attempt: 0, step: '' }))).toBe('');
    expect(initProgressMessage(report({ initializing: false }))).toBe('');
  });

  it('scrubs and bounds what a (hostile or older) daemon sends', () => {
    const message = initProgressMessage(
      report({
        step: 'git clone\nInjected: line',
        maxAttempts: 0,
        lastError: `fatal: https://bob:pa55w0rd-xyz@evil.example/?token=tok-abcdef ${'y'.repeat(5_000)}`,
      }),
    );
    expect(message).not.toContain('pa55w0rd-xyz');
    expect(message).not.toContain('tok-abcdef');
    expect(message).not.toMatch(/[\n\r]/);
    expect(message).toMatch(/^git clone Injected: line failed, retrying \(attempt 2\): fatal: /);
    expect(message.length).toBeLessThanOrEqual(320);
  });
});

/** A content service whose initProgress answers from a script, one answer per poll. */
function scripted(answers: (InitProgressInfo | Error | undefined)[]): ContentService & { polls: number } {
  const service = {
    polls: 0,
    async initProgress(): Promise<InitProgressInfo | undefined> {
      const answer = answers[Math.min(service.polls, answers.length - 1)];
      service.polls += 1;
      if (answer instanceof Error) throw answer;
      return answer;
    },
  };
  return service as unknown as ContentService & { polls: number };
}

describe('watchInitProgress', () => {
  it('reports each new message once, skips failures to ask, and stops when told', async () => {
    const content = scripted([
      new NotFoundError('not registered yet'),
      report({ attempt: 1, lastError: '' }),
      report(),
      report(),
      report({ attempt: 3 }),
    ]);
    const messages: string[] = [];
    let resolveSeen!: () => void;
    const seen = new Promise<void>((resolve) => (resolveSeen = resolve));
    const watch = watchInitProgress({
      id: 'ws-1',
      content,
      intervalMs: 1,
      signal: new AbortController().signal,
      logger: createSilentLogger(),
      onMessage: (message) => {
        messages.push(message);
        if (messages.length === 2) resolveSeen();
      },
    });
    await seen;
    watch.stop();
    await watch.ended;
    expect(messages.map((m) => /attempt (\d)/.exec(m)![1])).toEqual(['2', '3']);
    const polls = content.polls;
    // Stopped means stopped: no further poll, no further message.
    await new Promise((resolve) => setImmediate(resolve));
    expect(content.polls).toBe(polls);
    expect(messages).toHaveLength(2);
  });

  it('ends at once against a daemon without the extension', async () => {
    const content = scripted([undefined]);
    const watch = watchInitProgress({
      id: 'ws-1',
      content,
      intervalMs: 1,
      signal: new AbortController().signal,
      logger: createSilentLogger(),
      onMessage: () => expect.fail('no message expected'),
    });
    await watch.ended;
    expect(content.polls).toBe(1);
  });

  it('ends when the init effect is aborted', async () => {
    const effect = new AbortController();
    const content = scripted([report({ attempt: 1 })]);
    const watch = watchInitProgress({
      id: 'ws-1',
      content,
      intervalMs: 1,
      signal: effect.signal,
      logger: createSilentLogger(),
      onMessage: () => expect.fail('no message expected'),
    });
    effect.abort();
    await watch.ended;
  });
});
