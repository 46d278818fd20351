import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InvalidArgumentError } from '../errors.js';
import { AcquireAborted, Semaphore } from './concurrency.js';
import { parseWithSchema } from './config-schema.js';
import { createLogger } from './logger.js';
import { parseByteSize } from './size.js';

describe('Semaphore', () => {
  it('serves waiters in order, hands a released slot straight on, and ignores a second release', async () => {
    const slots = new Semaphore(1);
    const first = await slots.acquire();
    const order: number[] = [];
    const second = slots.acquire().then((release) => (order.push(2), release));
    const third = slots.acquire().then((release) => (order.push(3), release));
    expect(slots.waiting).toBe(2);
    first();
    first();
    (await second)();
    (await third)();
    expect(order).toEqual([2, 3]);
    expect(slots.inUse).toBe(0);
  });

  it('a waiter that aborts leaves the queue holding nothing', async () => {
    const slots = new Semaphore(1);
    const held = await slots.acquire();
    const controller = new AbortController();
    const waiting = slots.acquire(controller.signal);
    controller.abort();
    await expect(waiting).rejects.toBeInstanceOf(AcquireAborted);
    expect(slots.waiting).toBe(0);
    held();
    expect(slots.inUse).toBe(0);
  });
});

describe('parseByteSize', () => {
  it.each([
    ['4Gi', 4 * 1024 ** 3],
    ['512MiB', 512 * 1024 ** 2],
    ['10G', 10e9],
    ['10GB', 10e9],
    ['1.5Gi', 1.5 * 1024 ** 3],
    ['100b', 100],
    [1000, 1000],
  ] as const)('%s', (value, bytes) => expect(parseByteSize(value)).toBe(bytes));

  it('names the field and quotes a short prefix of bad input', () => {
    const error = (() => {
      try {
        return parseByteSize(`ten${'x'.repeat(500)}`, 'backup.maxSize');
      } catch (e) {
        return e;
      }
    })() as InvalidArgumentError;
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error.field).toBe('backup.maxSize');
    expect(error.message.length).toBeLessThan(120);
    expect(() => parseByteSize(-1)).toThrow(InvalidArgumentError);
  });
});

describe('parseWithSchema', () => {
  const schema = z.strictObject({ items: z.array(z.strictObject({ port: z.number() })) });

  it('names the key of the first issue, array indices and unknown keys included', () => {
    const fieldOf = (raw: unknown): string => {
      try {
        parseWithSchema(schema, raw, 'runtime');
      } catch (error) {
        return (error as InvalidArgumentError).field;
      }
      return '';
    };
    expect(fieldOf({ items: [{ port: 'x' }] })).toBe('runtime.items[0].port');
    expect(fieldOf({ items: [], extra: 1 })).toBe('runtime.extra');
    expect(parseWithSchema(schema, { items: [{ port: 1 }] }, '')).toEqual({ items: [{ port: 1 }] });
  });
});

describe('createLogger', () => {
  it('redacts credential fields and credentials in text', async () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = createLogger({ name: 'test', destination });
    logger.info({ request: { auth: { password: 'hunter2' } }, token: 'abc' }, 'see https://u:s3cret@host/x?token=t0k');
    logger.flush();
    await new Promise((resolve) => setImmediate(resolve));
    const text = lines.join('');
    expect(text).toContain('"name":"test"');
    expect(text).not.toMatch(/hunter2|s3cret|t0k|"abc"/);
  });
});
