import { describe, expect, it } from 'vitest';
import type { KubernetesWatchEvent, KubernetesWatchOptions } from './client.js';
import { KubernetesApiError } from './client.js';
import { ListWatcher, Limiter, LoopbackAllocator } from './kubelet-support.js';

type Obj = { metadata: { name: string; resourceVersion: string } };
const obj = (name: string, rv: string): Obj => ({ metadata: { name, resourceVersion: rv } });

/**
 * A scripted API server (unit test of the resume/relist rules; the real-server behaviour is covered by
 * kubelet.spec.ts): each watch call runs the next script step; lists answer the current items.
 */
function scripted(steps: ((emit: (e: KubernetesWatchEvent<Obj>) => void) => Promise<void>)[]) {
  const calls: string[] = [];
  let items: Obj[] = [obj('a', '10')];
  let listRv = '10';
  const cluster = {
    request: async <T>(_method: string, path: string) => {
      calls.push(`list ${path.split('?')[0]}`);
      return { status: 200, body: { metadata: { resourceVersion: listRv }, items } as T };
    },
    watch: <T>(_path: string, onEvent: (e: KubernetesWatchEvent<T>) => void, options: KubernetesWatchOptions = {}) => {
      calls.push(`watch from ${options.resourceVersion}`);
      const step = steps.shift() ?? (() => new Promise<void>(() => {}));
      let stopped = false;
      let stop!: () => void;
      const stoppedPromise = new Promise<void>((resolve) => (stop = resolve));
      const done = Promise.race([
        step((e) => {
          if (!stopped) onEvent(e as unknown as KubernetesWatchEvent<T>);
        }),
        stoppedPromise,
      ]);
      return {
        done,
        stop: () => {
          stopped = true;
          stop();
        },
      };
    },
  };
  return {
    cluster,
    calls,
    setItems(next: Obj[], rv: string) {
      items = next;
      listRv = rv;
    },
  };
}

describe('ListWatcher', () => {
  it('resumes from the last resourceVersion (bookmarks too) and relists on 410 Gone', async () => {
    const synced: string[][] = [];
    const events: string[] = [];
    let relisted!: () => void;
    const relist = new Promise<void>((resolve) => (relisted = resolve));
    const api: ReturnType<typeof scripted> = scripted([
      async (emit) => {
        emit({ type: 'ADDED', object: obj('b', '11') });
        emit({ type: 'BOOKMARK', object: obj('', '15') });
        // The server ended the watch (its timeout): resume.
      },
      async () => {
        // The server went away: a broken stream, retried from the same place.
        throw new Error('socket hang up');
      },
      async (emit) => {
        api.setItems([obj('c', '40')], '40');
        emit({ type: 'ERROR', object: { code: 410, message: 'too old resource version' } as never });
      },
    ]);
    const watcher = new ListWatcher<Obj>(api.cluster, '/api/v1/pods', 'x=y', {
      onSync: (items) => {
        synced.push(items.map((i) => i.metadata.name));
        if (synced.length === 2) relisted();
      },
      onEvent: (type, o) => events.push(`${type} ${o.metadata.name}`),
      onError: () => {},
    });
    await watcher.start();
    await relist;
    await watcher.stop();
    expect(synced).toEqual([['a'], ['c']]);
    expect(events).toEqual(['ADDED b']);
    expect(api.calls.slice(0, 6)).toEqual([
      'list /api/v1/pods',
      'watch from 10',
      'watch from 15',
      'watch from 15',
      'list /api/v1/pods',
      'watch from 40',
    ]);
    expect(watcher.counters.lists).toBe(2);
  });

  it('relists when the watch request itself is refused with 410', async () => {
    let relisted!: () => void;
    const relist = new Promise<void>((resolve) => (relisted = resolve));
    const api = scripted([
      async () => {
        throw new KubernetesApiError('GET', '/api/v1/pods', 410, { reason: 'Expired' });
      },
    ]);
    let syncs = 0;
    const watcher = new ListWatcher<Obj>(api.cluster, '/api/v1/pods', 'x=y', {
      onSync: () => {
        if (++syncs === 2) relisted();
      },
      onEvent: () => {},
      onError: () => {},
    });
    await watcher.start();
    await relist;
    await watcher.stop();
    expect(api.calls.slice(0, 3)).toEqual(['list /api/v1/pods', 'watch from 10', 'list /api/v1/pods']);
  });
});

describe('LoopbackAllocator and Limiter', () => {
  it('hands out distinct 127.0.x.y addresses outside 127.0.0.0/24', () => {
    const allocator = new LoopbackAllocator();
    const seen = new Set<string>();
    const malformed: string[] = [];
    for (let i = 0; i < 70_000; i++) {
      const ip = allocator.next();
      const [, n, m] = /^127\.0\.(\d+)\.(\d+)$/.exec(ip) ?? [];
      if (!(Number(n) >= 1 && Number(n) <= 254 && Number(m) >= 1 && Number(m) <= 254)) malformed.push(ip);
      seen.add(ip);
    }
    expect(malformed).toEqual([]);
    // The space wraps after 254 * 254 addresses; until then no address repeats.
    expect(seen.size).toBe(254 * 254);
  });

  it('runs at most max tasks at once', async () => {
    const limiter = new Limiter(2);
    let active = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 10 }, () =>
        limiter.run(async () => {
          active++;
          peak = Math.max(peak, active);
          await new Promise((resolve) => setImmediate(resolve));
          active--;
        }),
      ),
    );
    expect(peak).toBe(2);
  });
});
