import { describe, expect, it } from 'vitest';
import { silentLogger } from '@workbay/api';
import { PreparedHosts } from './prepared-hosts.js';
import type { HostResources } from './provision.js';

/** TEST ONLY: host resources that count their releases. */
function fakeHost(): HostResources & { released: number } {
  const host = {
    released: 0,
    release: async () => {
      host.released += 1;
    },
  };
  return host;
}

describe('PreparedHosts', () => {
  it('hands a reservation to one start, once; a second reserve for the same id reserves nothing', async () => {
    const hosts = new PreparedHosts(silentLogger);
    const host = fakeHost();
    let reserved = 0;
    const reserve = async (): Promise<HostResources> => {
      reserved += 1;
      return host;
    };
    await hosts.reserve('a', reserve);
    await hosts.reserve('a', reserve);
    expect(reserved).toBe(1);
    expect(await hosts.take('a')).toBe(host);
    expect(await hosts.take('a')).toBeUndefined();
    await hosts.release('a');
    expect(host.released).toBe(0);
  });

  it('a failed reservation is no reservation: the start reserves for itself', async () => {
    const hosts = new PreparedHosts(silentLogger);
    await hosts.reserve('a', async () => {
      throw new Error('no free slot');
    });
    expect(await hosts.take('a')).toBeUndefined();
  });

  it('gives back what no start took: on release, on releaseAll, and after its time to live', async () => {
    const hosts = new PreparedHosts(silentLogger, 30);
    const [a, b, c] = [fakeHost(), fakeHost(), fakeHost()];
    await hosts.reserve('a', async () => a);
    await hosts.release('a');
    expect(a.released).toBe(1);
    await hosts.reserve('b', async () => b);
    await hosts.releaseAll();
    expect(b.released).toBe(1);
    await hosts.reserve('c', async () => c);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(c.released).toBe(1);
    expect(hosts.has('c')).toBe(false);
  });

  it('a release during a reservation still in flight waits for it and gives it back', async () => {
    const hosts = new PreparedHosts(silentLogger);
    const host = fakeHost();
    let finish!: () => void;
    const reserving = hosts.reserve('a', () => new Promise<HostResources>((resolve) => (finish = () => resolve(host))));
    const releasing = hosts.release('a');
    finish();
    await Promise.all([reserving, releasing]);
    expect(host.released).toBe(1);
  });
});
