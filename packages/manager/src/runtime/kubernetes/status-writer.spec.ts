import { describe, expect, it, vi } from 'vitest';
import { createSilentLogger } from '../../logger.js';
import { makeRecord } from '../../test-support/records.js';
import type { WorkspaceRecord } from '../../domain/types.js';
import { StatusWriter, maxTransitions } from './status-writer.js';

interface Write {
  readonly record: WorkspaceRecord;
  readonly earlier: readonly WorkspaceRecord[];
  readonly done: (error?: Error) => void;
}

/** A writer whose writes complete only when the test says so. */
function controlledWriter(): { writer: StatusWriter; writes: Write[]; next: () => Promise<Write> } {
  const writes: Write[] = [];
  let waiting: ((write: Write) => void) | undefined;
  const writer = new StatusWriter({
    write: (record, earlier) =>
      new Promise<void>((resolve, reject) => {
        const write = { record, earlier, done: (error?: Error) => (error ? reject(error) : resolve()) };
        writes.push(write);
        waiting?.(write);
        waiting = undefined;
      }),
    leading: () => true,
    logger: createSilentLogger(),
    retryMs: 1,
  });
  let taken = 0;
  const next = (): Promise<Write> =>
    taken < writes.length
      ? Promise.resolve(writes[taken++]!)
      : new Promise((r) => (waiting = r)).then((w) => (taken++, w as Write));
  return { writer, writes, next };
}

const at = (statusVersion: number, extra: Partial<WorkspaceRecord> = {}): WorkspaceRecord =>
  makeRecord({ id: 'ws-1', statusVersion, ...extra });

describe('StatusWriter', () => {
  it('writes what was committed during a write in one write: the newest as the record, the visible ones before it as transitions', async () => {
    const { writer, next } = controlledWriter();
    writer.enqueue(at(1));
    const first = await next();
    expect(first.record.statusVersion).toBe(1);
    expect(first.earlier).toEqual([]);
    writer.enqueue(at(2));
    writer.enqueue(at(3));
    writer.enqueue(at(4));
    first.done();
    const second = await next();
    expect(second.record.statusVersion).toBe(4);
    expect(second.earlier.map((r) => r.statusVersion)).toEqual([2, 3]);
    second.done();
  });

  it('keeps an invisible change committed while the write of its status_version is in flight', async () => {
    const { writer, next } = controlledWriter();
    writer.enqueue(at(1, { url: 'before' }));
    const first = await next();
    // Same status_version (a change no subscriber sees), committed while the first write is in flight.
    writer.enqueue(at(1, { url: 'after' }));
    first.done();
    const second = await next();
    expect(second.record.url).toBe('after');
    second.done();
  });

  it('retries a failed write with what was committed meanwhile, in order and without duplicates', async () => {
    const { writer, next } = controlledWriter();
    writer.enqueue(at(1));
    const first = await next();
    writer.enqueue(at(1, { url: 'newer' }));
    writer.enqueue(at(2));
    first.done(new Error('the API server is unavailable'));
    const retry = await next();
    expect(retry.record.statusVersion).toBe(2);
    expect(retry.earlier.map((r) => [r.statusVersion, r.url])).toEqual([[1, 'newer']]);
    retry.done();
  });

  it('carries at most maxTransitions earlier changes per write, and writes the rest next', async () => {
    const { writer, next } = controlledWriter();
    writer.enqueue(at(1));
    const first = await next();
    for (let v = 2; v <= maxTransitions + 5; v += 1) writer.enqueue(at(v));
    first.done();
    const second = await next();
    expect(second.earlier).toHaveLength(maxTransitions);
    expect(second.record.statusVersion).toBe(maxTransitions + 2);
    second.done();
    const third = await next();
    expect(third.record.statusVersion).toBe(maxTransitions + 5);
    expect(third.earlier.map((r) => r.statusVersion)).toEqual([maxTransitions + 3, maxTransitions + 4]);
    third.done();
  });

  it('holds back a new start while as many workspaces as the limit have writes outstanding', async () => {
    const { writer, next } = controlledWriter();
    writer.enqueue(at(1));
    writer.enqueue(makeRecord({ id: 'ws-2', statusVersion: 2 }));
    expect(writer.backlog).toBe(2);
    await expect(writer.belowBacklog(3)).resolves.toBeUndefined();
    let admitted = false;
    void writer.belowBacklog(2).then(() => (admitted = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(admitted).toBe(false);
    (await next()).done();
    await vi.waitFor(() => expect(admitted).toBe(true));
    expect(writer.backlog).toBe(1);
  });

  it('refuses a start with UNAVAILABLE when the writes do not catch up in time', async () => {
    const { writer } = controlledWriter();
    writer.enqueue(at(1));
    await expect(writer.admit(1, 20, 'cannot start workspace ws-9')).rejects.toMatchObject({ code: 'unavailable' });
    await expect(writer.admit(2, 20, 'cannot start workspace ws-9')).resolves.toBeUndefined();
  });
});
