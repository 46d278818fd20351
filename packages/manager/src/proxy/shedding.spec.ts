import type { Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createSilentLogger } from '../logger.js';
import { TransferShedder } from './shedding.js';
import type { SheddingOptions } from './shedding.js';
import type { SocketQueue } from './socket-queues.js';

const MiB = 1024 * 1024;
let nextPort = 40_000;

/** A socket as the shedder sees it: its addresses, what it wrote, and whether it was reset. */
interface FakeEnd {
  readonly socket: Socket;
  readonly key: string;
  bytesWritten: number;
  reset: boolean;
}

function fakeEnd(client: string): FakeEnd {
  const port = nextPort++;
  const end = {
    key: `127.0.0.1:8080|${client}:${port}`,
    bytesWritten: 0,
    reset: false,
  } as FakeEnd;
  const socket = {
    localAddress: '127.0.0.1',
    localPort: 8080,
    remoteAddress: client,
    remotePort: port,
    writableLength: 0,
    get bytesWritten() {
      return end.bytesWritten;
    },
    get destroyed() {
      return end.reset;
    },
    resetAndDestroy() {
      end.reset = true;
    },
  } as unknown as Socket;
  return Object.assign(end, { socket });
}

describe('TransferShedder', () => {
  let load: number;
  let queues: Map<string, SocketQueue>;
  let shedder: TransferShedder;
  /** A shedder on the fake pressure and queues below, with `options` (the one each test starts with has none). */
  const withFakes = (options: Partial<SheddingOptions> = {}): TransferShedder =>
    new TransferShedder({
      pressure: () => Promise.resolve(load),
      socketQueues: () => Promise.resolve(queues),
      logger: createSilentLogger(),
      ...options,
    });
  beforeEach(() => {
    vi.useFakeTimers();
    load = 0;
    queues = new Map();
    shedder = withFakes();
  });
  afterEach(() => {
    shedder.stop();
    vi.useRealTimers();
  });

  /**
   * A one-socket transfer of `client` whose peer has `send` bytes queued and unacknowledged; with `owner`'s token, to
   * `workspace`, when given.
   */
  const transfer = (client: string, send: number, owner?: string, workspace?: string): FakeEnd => {
    const end = fakeEnd(client);
    queues.set(end.key, { send, receive: 0 });
    shedder.track([end.socket], owner, workspace);
    return end;
  };
  /** The shedder replaced by one with a budget of 20 MiB of its own. */
  const budgeted = (): void => {
    shedder.stop();
    shedder = withFakes({ budgetBytes: 20 * MiB });
  };
  const tick = async (): Promise<void> => {
    await vi.advanceTimersByTimeAsync(1_000);
  };
  /**
   * Ticks between 40% and 80% of the budget: what each transfer's peers take is watched, over three seconds;
   * `moving` runs before each (the peers that read take their bytes).
   */
  const watch = async (moving: () => void = () => undefined): Promise<void> => {
    for (let i = 0; i < 4; i++) {
      moving();
      await tick();
    }
  };

  it('resets the heaviest client address first, and refuses it for a cooldown that doubles when it returns', async () => {
    const flood = [1, 2, 3].map(() => transfer('10.0.0.1', 3 * MiB));
    const lone = transfer('10.0.0.2', 4 * MiB);
    // The peer of this one takes 8 MiB a second: it uses the memory it holds.
    const busy = transfer('10.0.0.3', 6 * MiB);
    load = 0.5;
    await watch();
    busy.bytesWritten += 8 * MiB;
    load = 0.95;
    await tick();
    expect(flood.map((e) => e.reset)).toEqual([true, true, true]);
    expect([lone.reset, busy.reset]).toEqual([false, false]);
    expect(shedder.refuses('10.0.0.1')?.reason).toBe('cooling');
    expect(shedder.refuses('::ffff:10.0.0.1')?.reason).toBe('cooling');
    expect(shedder.refuses('10.0.0.2')?.reason).not.toBe('cooling');

    // The excess left is covered by the next heaviest: the lone download, not the busy one.
    busy.bytesWritten += 8 * MiB;
    await tick();
    expect([lone.reset, busy.reset]).toEqual([true, false]);

    // Shed again while it cools down (its transfers from before): no second strike (round 19: every shed of one tick
    // counted, and an owner was out for 8 minutes at once). The answer says how long is left.
    transfer('10.0.0.1', 3 * MiB);
    await tick();
    expect(shedder.refuses('10.0.0.1')?.retryAfterSeconds).toBeLessThanOrEqual(30);
    await vi.advanceTimersByTimeAsync(29_000);
    expect(shedder.refuses('10.0.0.1')?.reason).not.toBe('cooling');
    // Back, stalled again soon after: out for 60 s this time.
    load = 0.5;
    transfer('10.0.0.1', 3 * MiB);
    await watch();
    load = 0.95;
    await tick();
    expect(shedder.refuses('10.0.0.1')?.reason).toBe('cooling');
    await vi.advanceTimersByTimeAsync(45_000);
    expect(shedder.refuses('10.0.0.1')).toEqual({ reason: 'cooling', retryAfterSeconds: 15 });
    await vi.advanceTimersByTimeAsync(16_000);
    expect(shedder.refuses('10.0.0.1')?.reason).not.toBe('cooling');
  });

  it('sheds stalled transfers before a heavier download that still moves, and does not lock its client out', async () => {
    // Round 18b: 80 addresses each holding 2.3 MB without reading, and a victim's one download at 40 KB/s holding
    // 6.5 MB: by weight alone the victim went first, then its address was refused for the cooldown.
    const flood = Array.from({ length: 8 }, (_, i) => transfer(`10.0.1.${i + 1}`, 2 * MiB));
    const victim = transfer('10.0.0.9', 6 * MiB);
    load = 0.5;
    await watch(() => (victim.bytesWritten += 40_000));
    load = 0.95;
    for (let i = 0; i < 3 && !flood.every((e) => e.reset); i++) {
      victim.bytesWritten += 40_000;
      await tick();
      // The victim is not reset while a stalled transfer is left.
      if (!flood.every((e) => e.reset)) expect(victim.reset).toBe(false);
    }
    expect(flood.every((e) => e.reset)).toBe(true);
    // Only the victim is left to shed while the pressure lasts: it goes, but may come back at once.
    victim.bytesWritten += 40_000;
    await tick();
    expect(victim.reset).toBe(true);
    expect(shedder.refuses('10.0.0.9')?.reason).not.toBe('cooling');
    expect(shedder.refuses('10.0.1.1')?.reason).toBe('cooling');
  });

  it('judges a sudden flood by its new connections, and a reader by several seconds of progress', async () => {
    // Round 18c: the cap went from 9% to 95% in one second, nothing watched before: the first tick reset a 300 KB/s
    // download older than the flood; and a 40 KB/s reader whose window reopens in ~98 KB steps every 2-3 s looked
    // stalled in half of the 1-s ticks, and was reset and locked out.
    const reader = transfer('10.0.0.9', 6 * MiB);
    await vi.advanceTimersByTimeAsync(10_000);
    const flood = Array.from({ length: 4 }, (_, i) => transfer(`10.0.3.${i + 1}`, 2 * MiB));
    load = 0.95;
    for (let i = 0; i < 3 && !flood.every((e) => e.reset); i++) {
      reader.bytesWritten += 40_000;
      await tick();
    }
    expect(flood.every((e) => e.reset)).toBe(true);
    expect(reader.reset).toBe(false);
    load = 0.3;
    await tick();
    // The reader's steps: 98 KB every third second. Another flood, watched long enough to be stalled, goes first and
    // the reader is never taken for stalled (so never refused, even once shed).
    const second = Array.from({ length: 4 }, (_, i) => transfer(`10.0.4.${i + 1}`, 1 * MiB));
    load = 0.5;
    let second0 = 0;
    await watch(() => {
      if (second0++ % 3 === 0) reader.bytesWritten += 98_000;
    });
    load = 0.95;
    for (let i = 0; i < 6; i++) {
      if (second0++ % 3 === 0) reader.bytesWritten += 98_000;
      await tick();
    }
    expect(second.every((e) => e.reset)).toBe(true);
    expect(shedder.refuses('10.0.4.1')?.reason).toBe('cooling');
    expect(shedder.refuses('10.0.0.9')?.reason).not.toBe('cooling');
  });

  it('resets an older download that moves only in a tick that found nothing newer to reset', async () => {
    // CI, a loaded machine: the first tick of a flood saw its transfers once, each holding only what it held so far;
    // they did not cover the excess, and the same tick reset the victim's older 40 KB/s download too.
    const victim = transfer('10.0.0.9', 6 * MiB);
    await vi.advanceTimersByTimeAsync(10_000);
    const flood = [1, 2, 3].map(() => transfer('10.0.5.1', 200 * 1024));
    load = 0.95;
    victim.bytesWritten += 40_000;
    await tick();
    expect(flood.every((e) => e.reset)).toBe(true);
    expect(victim.reset).toBe(false);
    // The pressure outlasts the flood: then the victim's download is what is left.
    victim.bytesWritten += 40_000;
    await tick();
    expect(victim.reset).toBe(true);
  });

  it('leaves a download that moves alone when resetting it would free little of the excess', async () => {
    // Round 18b: readers that took everything queued once a second pushed the budget up in spikes, and the victim's
    // steady 40 KB/s download, the one transfer holding anything between their reads, was reset.
    const bursts = Array.from({ length: 20 }, (_, i) => transfer(`10.0.2.${i + 1}`, 8 * MiB));
    const victim = transfer('10.0.0.9', 6 * MiB);
    load = 0.5;
    await watch(() => {
      for (const b of bursts) b.bytesWritten += 10 * MiB;
      victim.bytesWritten += 40_000;
    });
    load = 0.9;
    for (let i = 0; i < 3; i++) {
      for (const b of bursts) b.bytesWritten += 10 * MiB;
      victim.bytesWritten += 40_000;
      await tick();
    }
    expect([...bursts, victim].some((e) => e.reset)).toBe(false);
  });

  it('weighs each transfer on its own, and refuses nobody, where an address is not a client (a load balancer)', async () => {
    shedder.stop();
    shedder = withFakes({ addressIsClient: false });
    // Round 18b: a flood behind the shared address had every client behind it refused for 30 s.
    const flood = [1, 2, 3].map(() => transfer('10.0.0.1', 3 * MiB));
    const reader = transfer('10.0.0.1', 2 * MiB);
    load = 0.5;
    await watch();
    load = 0.95;
    // One transfer's worth of excess a tick (the pressure stays, as a fake): the stalled ones, one after the other.
    for (let i = 0; i < 3; i++) {
      reader.bytesWritten += 64 * 1024;
      await tick();
    }
    expect(flood.every((e) => e.reset)).toBe(true);
    expect(reader.reset).toBe(false);
    expect(shedder.refuses('10.0.0.1')?.reason).not.toBe('cooling');
  });

  it("cools an owner's token-carrying flood down apart from the anonymous clients of its address", async () => {
    // Round 18c, N6: with the owner's token, 80 reconnecting addresses were never refused.
    const end = transfer('10.0.5.1', 4 * MiB, 'trudy');
    load = 0.5;
    await watch();
    load = 0.95;
    await tick();
    expect(end.reset).toBe(true);
    expect(shedder.refuses('10.0.5.1', 'trudy')?.reason).toBe('cooling');
    expect(shedder.refuses('10.0.5.1')?.reason).toBeUndefined();
    expect(shedder.refuses('10.0.5.1', 'alice')?.reason).toBeUndefined();
  });

  it('sheds only anonymous transfers while they hold more than their share, and refuses anonymous requests', async () => {
    // Round 18b, N2b: a flood from a fresh address for every reset (400 in 60 s) kept the budget full for 59 of 60 s;
    // round 19: with every address primed by one request before the flood, 33 of 35 s, and the first tick of a flood
    // reset an owner's 40 KB/s reader, the heaviest client.
    const bob = transfer('10.0.0.9', 6 * MiB, 'bob');
    // 24 anonymous addresses, each holding 1 MiB and taking 20 KB/s: not stalled, each lighter than bob.
    const spread = Array.from({ length: 24 }, (_, i) => transfer(`10.0.10.${i + 1}`, 1 * MiB));
    const moving = (): void => {
      bob.bytesWritten += 40_000;
      for (const e of spread) e.bytesWritten += 20_000;
    };
    load = 0.5;
    await watch(moving);
    load = 0.95;
    for (let i = 0; i < 3; i++) {
      moving();
      await tick();
    }
    expect(bob.reset).toBe(false);
    expect(shedder.refuses('10.0.10.1')?.reason).toBe('pressure');
    expect(shedder.refuses('10.0.99.1')?.reason).toBe('pressure');
    expect(shedder.refuses('10.0.99.1', 'bob')?.reason).toBeUndefined();
    load = 0.3;
    await vi.advanceTimersByTimeAsync(9_000);
    expect(shedder.refuses('10.0.99.2')?.reason).toBe('pressure');
    await vi.advanceTimersByTimeAsync(2_000);
    expect(shedder.refuses('10.0.99.2')?.reason).toBeUndefined();
    expect(shedder.refused).toEqual({ cooling: 0, pressure: 3 });
  });

  it("refuses the anonymous requests of the flooded workspace only, not other workspaces' anonymous visitors", async () => {
    // Red team round 19c, N12: anonymous clients were one class, so a flood of one workspace's public port had every
    // anonymous visitor of every workspace refused for most of the flood.
    budgeted();
    const visitor = transfer('10.0.0.9', 1 * MiB, undefined, 'docs');
    for (let i = 0; i < 12; i++) {
      transfer(`10.0.17.${i + 1}`, 1 * MiB, undefined, 'target');
    }
    load = 0.95;
    visitor.bytesWritten += 40_000;
    await tick();
    expect(shedder.refuses('10.0.18.1', undefined, 'target')?.reason).toBe('pressure');
    expect(shedder.refuses('10.0.18.1', undefined, 'docs')).toBeUndefined();
    expect(shedder.refuses('10.0.18.1', 'bob', 'target')).toBeUndefined();
    expect(visitor.reset).toBe(false);
  });

  it('refuses the anonymous requests of the workspaces holding the most when an anonymous flood is spread over several', async () => {
    // The flood of the test above over six workspaces' public ports: none holds half of the budget, all together do.
    budgeted();
    const visitor = transfer('10.0.0.9', 0.3 * MiB, undefined, 'docs');
    [2.5, 2.2, 2, 1.8, 1.5, 1.2].forEach((mib, i) => {
      transfer(`10.0.19.${i + 1}`, mib * MiB, undefined, `w${i}`);
    });
    load = 0.95;
    visitor.bytesWritten += 40_000;
    await tick();
    // 2.5 + 2.2 + 2 MiB: half of the 11.2 MiB anonymous transfers hold.
    const refused = ['w0', 'w1', 'w2', 'w3', 'w4', 'w5', 'docs'].map(
      (workspace) => shedder.refuses('10.0.18.1', undefined, workspace)?.reason,
    );
    expect(refused).toEqual(['pressure', 'pressure', 'pressure', undefined, undefined, undefined, undefined]);
    expect(visitor.reset).toBe(false);
  });

  it("does not take a victim's downloads for the flood: its workspace's visitors and its owner pass", async () => {
    // Red team round 20b: an anonymous flood spread over three workspaces, each piece holding less than a victim's
    // downloads, which were older and moving. N15: the victim workspace's eight anonymous 40 KB/s downloads made it the
    // workspace holding the most, and its anonymous visitors were refused, 26 of 31 s; N16: twelve of bob's made him
    // the class holding the most once the pressure lasted, and bob was refused everywhere, the flood never.
    budgeted();
    const victims = Array.from({ length: 8 }, (_, i) => transfer(`10.0.20.${i + 1}`, 0.9 * MiB, undefined, 'docs'));
    const bobs = Array.from({ length: 6 }, (_, i) => transfer(`10.0.21.${i + 1}`, 0.9 * MiB, 'bob'));
    const moving = (): void => {
      for (const end of [...victims, ...bobs]) end.bytesWritten += 40_000;
    };
    load = 0.5;
    await watch(moving);
    load = 0.95;
    let flood: FakeEnd[] = [];
    const refused: Array<Array<string | undefined>> = [];
    for (let i = 0; i < 5; i++) {
      // Each second the flood closes what it had and opens three transfers of 1 MiB to each of its three workspaces.
      for (const end of flood) {
        end.reset = true;
        queues.delete(end.key);
      }
      flood = ['a', 'b', 'c'].flatMap((workspace, w) =>
        [1, 2, 3].map((j) => transfer(`10.0.22.${i * 9 + w * 3 + j}`, 1 * MiB, undefined, workspace)),
      );
      moving();
      await tick();
      refused.push(['docs', 'a', 'b', 'c'].map((w) => shedder.refuses('10.0.23.1', undefined, w)?.reason));
      expect(shedder.refuses('10.0.23.1', 'bob', 'docs')).toBeUndefined();
      expect(shedder.refuses('10.0.23.1', undefined, 'docs')).toBeUndefined();
    }
    // The flood's workspaces wait once the pressure has lasted (9 of the 20 MiB: not half), two of three covering half.
    expect(refused.at(-1)).toEqual([undefined, 'pressure', 'pressure', undefined]);
    expect([...victims, ...bobs].some((end) => end.reset)).toBe(false);
  });

  it("does not cool an owner down for its slow downloads while others' fresh transfers hold more", async () => {
    // Red team round 20, N16: 28 connections of mallory's, trudy's and anonymous ones, recycled before they could look
    // stalled, none over half: bob's eight 10 KB/s downloads were the only stalled transfers, and bob, holding a
    // quarter, was cooled down for 30 s, then 60 s, his IDE refused.
    budgeted();
    const bobs = Array.from({ length: 8 }, (_, i) => transfer(`10.0.24.${i + 1}`, 0.75 * MiB, 'bob'));
    load = 0.5;
    await watch();
    for (const owner of ['mallory', 'trudy']) {
      for (let i = 0; i < 8; i++) transfer(`10.0.25.${i + 1}`, 1 * MiB, owner);
    }
    load = 0.95;
    await tick();
    expect(bobs.some((end) => end.reset)).toBe(true);
    expect(shedder.refuses('10.0.26.1', 'bob')).toBeUndefined();
    expect(shedder.refuses('10.0.24.1', 'bob')).toBeUndefined();
  });

  it('takes a flood spread so that every class holds little for one once the pressure lasts, and resets it', async () => {
    // Red team round 20b, N17: three public workspaces and three owners' tokens, every class under a quarter of the
    // budget, each address holding a few MB: the cap stayed at 94-100% for 29 s, nothing refused, nothing reset.
    budgeted();
    let flood: FakeEnd[] = [];
    const refused: Array<string | undefined> = [];
    const reset: number[] = [];
    load = 0.95;
    for (let i = 0; i < 5; i++) {
      for (const end of flood) {
        end.reset = true;
        queues.delete(end.key);
      }
      flood = [
        ...['a', 'b', 'c'].flatMap((w, k) =>
          [1, 2].map((j) => transfer(`10.0.27.${i * 18 + k * 2 + j}`, 0.5 * MiB, undefined, w)),
        ),
        ...['t1', 't2', 't3'].flatMap((owner, k) =>
          [1, 2, 3].map((j) => transfer(`10.0.27.${i * 18 + 6 + k * 3 + j}`, 0.5 * MiB, owner)),
        ),
      ];
      await tick();
      refused.push(shedder.refuses('10.0.28.1', undefined, 'a')?.reason);
      reset.push(flood.filter((end) => end.reset).length);
    }
    // From the third tick: the anonymous ones (3 of the 7.5 MiB, more than any owner's 1.5) wait, and their fresh
    // transfers are reset, each holding too little for the floor of moving ones.
    expect(refused.slice(2)).toEqual(['pressure', 'pressure', 'pressure']);
    expect(reset.slice(2).every((n) => n > 0)).toBe(true);
  });

  it("refuses an owner's requests while its transfers hold more than half of the budget, and sheds only those", async () => {
    // Round 19, N8: transfers recycled every 2.5 s never looked stalled, so never cooled, and the cap stayed full while
    // another owner's slow download, the heaviest transfer, was reset again and again. Here with the owner's token.
    budgeted();
    const bob = transfer('10.0.0.9', 6 * MiB, 'bob');
    load = 0.5;
    await watch(() => (bob.bytesWritten += 40_000));
    load = 0.95;
    for (let i = 0; i < 4; i++) {
      // Eight fresh transfers of trudy's a second, 1.5 MiB each: 12 of the 20 MiB.
      for (let j = 0; j < 8; j++) {
        transfer(`10.0.13.${i * 8 + j + 1}`, 1.5 * MiB, 'trudy');
      }
      bob.bytesWritten += 40_000;
      await tick();
      expect(bob.reset).toBe(false);
      // From the first tick on: before any of them could look stalled (later, stalled, they cool trudy down too).
      expect(shedder.refuses('10.0.13.99', 'trudy')?.reason).toBeDefined();
      if (i === 0) expect(shedder.refuses('10.0.13.99', 'trudy')?.reason).toBe('pressure');
    }
    expect(shedder.refuses('10.0.13.99', 'bob')?.reason).toBeUndefined();
    expect(shedder.refuses('10.0.13.99')?.reason).toBeUndefined();
  });

  it('takes the class holding the most for the flooding one once the pressure lasts with none over half', async () => {
    // Two floods each under half of the budget (an anonymous one and trudy's with her token), recycled every second so
    // that none looks stalled: each tick reset some, nothing was refused, and the cap stayed full.
    budgeted();
    const bob = transfer('10.0.0.9', 1 * MiB, 'bob');
    load = 0.5;
    await watch(() => (bob.bytesWritten += 40_000));
    load = 0.95;
    const refusals: Array<string | undefined> = [];
    let recycled: FakeEnd[] = [];
    for (let i = 0; i < 4; i++) {
      // Each second, the floods close what they had and open eight fresh anonymous transfers of 1.1 MiB (8.8 of the
      // 20 MiB) and eight of trudy's of 1 MiB.
      for (const end of recycled) {
        end.reset = true;
        queues.delete(end.key);
      }
      recycled = Array.from({ length: 8 }, (_, j) => transfer(`10.0.14.${i * 8 + j + 1}`, 1.1 * MiB));
      for (let j = 0; j < 8; j++) {
        const end = transfer(`10.0.15.${i * 8 + j + 1}`, 1 * MiB, 'trudy');
        recycled.push(end);
      }
      bob.bytesWritten += 40_000;
      await tick();
      refusals.push(shedder.refuses('10.0.16.1')?.reason);
    }
    // Refused from the third tick under pressure on, whatever the address; trudy, bob and bob's download are not.
    expect(refusals).toEqual([undefined, undefined, 'pressure', 'pressure']);
    expect(shedder.refuses('10.0.16.1', 'trudy')?.reason).toBeUndefined();
    expect(shedder.refuses('10.0.16.1', 'bob')?.reason).toBeUndefined();
    expect(bob.reset).toBe(false);
  });

  it("does not reset another class's slow downloads while a class floods", async () => {
    // Round 19c, N14: bob's three 10 KB/s token downloads (stalled by the rule: under 16 KiB/s, bytes queued to him)
    // were reset seven times for an anonymous flood holding over half of the budget.
    shedder.stop();
    shedder = withFakes({ budgetBytes: 40 * MiB });
    const slow = transfer('10.0.18.1', 2 * MiB, 'bob');
    load = 0.5;
    await watch(() => (slow.bytesWritten += 10_000));
    // 24 MiB of anonymous transfers from 24 addresses, new every second (each under a quarter of the excess).
    load = 0.95;
    for (let i = 0; i < 5; i++) {
      for (let j = 0; j < 24; j++) transfer(`10.0.19.${i * 24 + j + 1}`, 1 * MiB);
      slow.bytesWritten += 10_000;
      await tick();
      expect(slow.reset).toBe(false);
    }
    expect(shedder.refuses('10.0.99.1')?.reason).toBe('pressure');
    expect(shedder.refuses('10.0.18.1', 'bob')).toBeUndefined();
  });

  it('does not take a download starved by the budget for a stalled one', async () => {
    // Round 19: an owner's 40 KB/s reader, starved while a flood held the cap full (nothing reached its socket), looked
    // stalled, and was reset and refused 28 times like the flood. Its bytes wait in the proxy, not on its client.
    const starved = fakeEnd('10.0.0.9');
    queues.set(starved.key, { send: 2 * 1024, receive: 4 * MiB });
    shedder.track([starved.socket], 'bob');
    const flood = transfer('10.0.11.1', 3 * MiB, 'trudy');
    // A third owner's download that moves: no owner holds half of the budget.
    const carol = transfer('10.0.12.1', 4 * MiB, 'carol');
    load = 0.5;
    await watch(() => (carol.bytesWritten += 40_000));
    load = 0.95;
    for (let i = 0; i < 4; i++) {
      carol.bytesWritten += 40_000;
      await tick();
    }
    expect(flood.reset).toBe(true);
    expect(shedder.refuses('10.0.11.1', 'trudy')?.reason).toBe('cooling');
    // Shed too once the pressure outlasts the stalled one, but not refused: its client did nothing wrong.
    expect(shedder.refuses('10.0.0.9', 'bob')?.reason).toBeUndefined();
  });

  it('refuses an owner everywhere once its stalled transfers were shed from three addresses', async () => {
    // Round 18b, N2b with the owner's token: a client is an address with the owner, so fresh addresses were new clients.
    const addresses = ['10.0.6.1', '10.0.6.2', '10.0.6.3'];
    // With the budget's size: neither owner holds half of it (no class refusal), however much is shed.
    shedder.stop();
    shedder = withFakes({ budgetBytes: 13 * MiB });
    for (const address of addresses) {
      transfer(address, 2 * MiB, 'trudy');
    }
    // Alice's download, taking more than it holds.
    const alice = transfer('10.0.7.1', 6 * MiB, 'alice');
    const reading = (): void => {
      alice.bytesWritten += 10 * MiB;
    };
    load = 0.5;
    await watch(reading);
    load = 0.95;
    // Two addresses' worth of excess in the first tick, one more in the next (the pressure stays, as a fake); trudy
    // comes back from two fresh addresses meanwhile, so her transfers still hold a good part of the budget.
    reading();
    await tick();
    expect(shedder.refuses('10.0.6.9', 'trudy')?.reason).toBeUndefined();
    for (const address of ['10.0.6.4', '10.0.6.5']) {
      transfer(address, 2 * MiB, 'trudy');
    }
    reading();
    await tick();
    expect(addresses.map((a) => shedder.refuses(a, 'trudy')?.reason)).toEqual(['cooling', 'cooling', 'cooling']);
    expect(shedder.refuses('10.0.6.9', 'trudy')?.reason).toBe('cooling');
    expect(shedder.refuses('10.0.6.9', 'alice')?.reason).toBeUndefined();
    expect(alice.reset).toBe(false);
    load = 0.3;
    await vi.advanceTimersByTimeAsync(31_000);
    expect(shedder.refuses('10.0.6.9', 'trudy')?.reason).toBeUndefined();
  });

  it("resets an owner's slow downloads under pressure, but does not lock the owner out for them", async () => {
    // Round 19, N9: eight downloads of bob's at 10 KB/s (under 16 KiB/s: stalled) during an anonymous flood were reset,
    // then refused 17-23 times each, and bob's IDE was refused from a fresh address (owner-wide cooldown).
    shedder.stop();
    shedder = withFakes({ budgetBytes: 40 * MiB });
    const slow = Array.from({ length: 8 }, (_, i) => {
      const end = transfer(`10.0.14.${i + 1}`, 512 * 1024, 'bob');
      return end;
    });
    // An anonymous flood that holds under half of the budget (so no class refusal), stalled too.
    const flood = Array.from({ length: 8 }, (_, i) => transfer(`10.0.15.${i + 1}`, 2 * MiB));
    const reading = (): void => {
      for (const end of slow) end.bytesWritten += 10_000;
    };
    load = 0.5;
    await watch(reading);
    load = 0.95;
    for (let i = 0; i < 6; i++) {
      reading();
      await tick();
    }
    expect(flood.every((e) => e.reset)).toBe(true);
    expect(slow.some((e) => e.reset)).toBe(true);
    expect(shedder.refuses('10.0.15.1')?.reason).toBe('cooling');
    expect(shedder.refuses('10.0.14.1', 'bob')?.reason).toBeUndefined();
    expect(shedder.refuses('10.0.99.1', 'bob')?.reason).toBeUndefined();
  });

  it('refuses the anonymous requests of a network once eight of its addresses were shed for stalling', async () => {
    // Round 18b, N2b: a fresh address for every reconnect; an IPv6 flood has a /48's 65,536 /64s to take them from.
    const flood = (address: (i: number) => string, count: number): void => {
      for (let i = 0; i < count; i++) transfer(address(i), 2 * MiB);
    };
    flood((i) => `10.0.8.${i + 1}`, 7);
    // Spelled as the kernel lists them (the fake queues are keyed by the spelling given).
    flood((i) => `2001:db8:1:${i + 1}:0:0:0:1`, 8);
    load = 0.5;
    await watch();
    load = 0.95;
    for (let i = 0; i < 15; i++) await tick();
    // Seven addresses of 10.0.8.0/24: only those are refused.
    expect(shedder.refuses('10.0.8.1')?.reason).toBe('cooling');
    expect(shedder.refuses('10.0.8.200')?.reason).not.toBe('cooling');
    // Eight /64s of 2001:db8:1::/48: the whole /48, for anonymous requests.
    expect(shedder.refuses('2001:db8:1:ff::7')?.reason).toBe('cooling');
    expect(shedder.refuses('2001:db8:2::7')?.reason).not.toBe('cooling');
    expect(shedder.refuses('2001:db8:1:ff::7', 'alice')?.reason).toBeUndefined();
  });

  it('keeps its transfers within a budget of its own where the kernel caps nothing (cgroup v2)', async () => {
    shedder.stop();
    let node = 0;
    let reads = 0;
    shedder = new TransferShedder({
      budgetBytes: 10 * MiB,
      nodeTcpBytes: () => Promise.resolve(node),
      socketQueues: () => {
        reads += 1;
        return Promise.resolve(queues);
      },
      logger: createSilentLogger(),
    });
    const stalled = transfer('10.0.0.1', 6 * MiB);
    const reader = transfer('10.0.0.2', 2 * MiB);
    // The node's sockets hold little: the proxy's cannot hold more, and its queues are not even read.
    node = 3 * MiB;
    await watch();
    expect(reads).toBe(0);
    // The node holds more: the proxy's own transfers are weighed (what their peers take watched from half the mark on,
    // 3 + 2 of 10 MiB), then the stalled one grows to 6 MiB: 80%.
    node = 64 * MiB;
    queues.set(stalled.key, { send: 3 * MiB, receive: 0 });
    await watch(() => (reader.bytesWritten += 64 * 1024));
    expect(reads).toBe(4);
    expect(stalled.reset).toBe(false);
    queues.set(stalled.key, { send: 6 * MiB, receive: 0 });
    reader.bytesWritten += 64 * 1024;
    await tick();
    expect([stalled.reset, reader.reset]).toEqual([true, false]);
    expect(shedder.refuses('10.0.0.1')?.reason).toBe('cooling');
  });

  it('weighs the end that was still connecting when tracked', async () => {
    // Round 19b, N10: the proxy's connection to the workspace is tracked while it connects, without its addresses, and
    // its queues (most of what a flood holds) were never read.
    const client = fakeEnd('10.0.16.1');
    queues.set(client.key, { send: 16 * 1024, receive: 0 });
    const upstream = fakeEnd('10.0.16.1');
    const connected = { remoteAddress: undefined as string | undefined };
    Object.defineProperty(upstream.socket, 'remoteAddress', { get: () => connected.remoteAddress });
    shedder.track([client.socket, upstream.socket]);
    connected.remoteAddress = '10.0.16.1';
    queues.set(upstream.key, { send: 0, receive: 4 * MiB });
    load = 0.5;
    await watch();
    load = 0.95;
    await tick();
    // 4 MiB held: gone, and its client cooled (the client half alone, 16 KiB, is under what is worth a reset).
    expect(client.reset).toBe(true);
    expect(shedder.refuses('10.0.16.1')?.reason).toBe('cooling');
  });

  it('weighs what the kernel charges for a socket, not only the data it holds', async () => {
    // Round 19b: a flood's 40-55 MB of data (1 KB receive windows, small segments) were 98-126 MB of the cap.
    const client = fakeEnd('10.0.17.1');
    queues.set(client.key, { send: 16 * 1024, receive: 0, memory: 1 * MiB });
    load = 0.5;
    shedder.track([client.socket]);
    await watch();
    load = 0.95;
    await tick();
    expect(client.reset).toBe(true);
  });

  it('sheds nothing without pressure, nor what holds too little to matter', async () => {
    const big = transfer('10.0.0.1', 8 * MiB);
    const small = transfer('10.0.0.2', 32 * 1024);
    load = 0.7;
    await tick();
    expect(big.reset).toBe(false);
    queues.delete(big.key);
    load = 1;
    await tick();
    await tick();
    expect([big.reset, small.reset]).toEqual([false, false]);
    expect(shedder.shed).toBe(0);
  });
});
