/**
 * Subscribe over real gRPC (a status bus stands in for the core): a burst of 1,000 updates reaches a slow but
 * reading client in full; a client that never reads is cut off after the stall period; the others carry on.
 */
import { connect } from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import { Server, ServerCredentials, status as grpcStatus } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wsman } from '@workbay/api';
import { defaultManagerConfig } from '../config.js';
import { StatusBus } from '../core/status-bus.js';
import { createSilentLogger } from '../logger.js';
import { ManagerMetrics } from '../metrics.js';
import { makeRecord } from '../test-support/records.js';
import { StatusConverter } from './convert.js';
import { createWorkspaceManagerImplementation, workspaceManagerServiceDefinition } from './service.js';

const burst = 1000;
const bufferSize = 50;

/**
 * A Subscribe call on a raw HTTP/2 connection of its own, so that not reading really stops the flow (Node's
 * HTTP/2 streams stop acknowledging data while paused; grpc-js clients buffer whatever arrives).
 */
function rawSubscribe(address: string): {
  stream: ClientHttp2Stream;
  session: ClientHttp2Session;
  messages: () => Buffer[];
} {
  const session = connect(`http://${address}`);
  // A server shut down under it ends the session with GOAWAY: the test has what it needs by then.
  session.on('error', () => undefined);
  const stream = session.request({
    ':method': 'POST',
    ':path': '/wsman.WorkspaceManager/Subscribe',
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  const body = Buffer.from(wsman.SubscribeRequest.encode(wsman.SubscribeRequest.fromPartial({})).finish());
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  stream.end(frame);
  let pending = Buffer.alloc(0);
  const messages: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
      const length = pending.readUInt32BE(1);
      messages.push(pending.subarray(5, 5 + length));
      pending = pending.subarray(5 + length);
    }
  });
  return { stream, session, messages: () => messages };
}

/** The grpc-status of a raw call: in its trailers, or in its headers for a call refused before any message. */
const statusOf = (stream: ClientHttp2Stream): Promise<{ code: number; message: string }> =>
  new Promise((resolve) => {
    const settle = (h: Record<string, unknown>): void => {
      if (h['grpc-status'] !== undefined)
        resolve({ code: Number(h['grpc-status']), message: decodeURIComponent(String(h['grpc-message'] ?? '')) });
    };
    stream.once('response', settle);
    stream.once('trailers', settle);
  });

describe('Subscribe backpressure', () => {
  let server: Server;
  let bus: StatusBus;
  let address: string;
  const metrics = new ManagerMetrics({ workspaces: () => [] });
  beforeAll(async () => {
    bus = new StatusBus(100, 0);
    const core = {
      updatesSince: (version: number) => bus.updatesSince(version),
      timeoutSettings: defaultManagerConfig.timeouts,
    };
    server = new Server();
    server.addService(
      workspaceManagerServiceDefinition,
      createWorkspaceManagerImplementation({
        core: core as never,
        logger: createSilentLogger(),
        metrics,
        bufferSize,
        stallTimeoutMs: 1_000,
        converter: new StatusConverter(defaultManagerConfig.timeouts),
      }),
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => {
    bus.complete();
    server.forceShutdown();
  });
  const versionsOf = (messages: Buffer[]): number[] =>
    messages.map((m) => wsman.SubscribeResponse.decode(m).status!.statusVersion);

  it('a slow but reading client gets all of a 1,000-update burst; a client that never reads is cut off; a third is unaffected', async () => {
    const slow = rawSubscribe(address);
    const fast = rawSubscribe(address);
    // Never reads: paused before anything arrives (no 'data' listener would do the same).
    const stuck = rawSubscribe(address);
    stuck.stream.pause();
    const stuckStatus = statusOf(stuck.stream);

    // Reads slowly: a pause after every chunk, long against the burst, short against the stall period.
    slow.stream.on('data', () => {
      slow.stream.pause();
      setTimeout(() => slow.stream.resume(), 5);
    });
    // Streams are live once the server has registered them.
    await new Promise((r) => setTimeout(r, 300));

    // The burst: 300 workspaces stopping, several updates each, with padding so that HTTP/2 windows fill up.
    const annotations = { note: 'x'.repeat(2000) };
    for (let v = 1; v <= burst; v += 1) {
      bus.publish(makeRecord({ id: `ws-${v % 300}`, statusVersion: v, phase: 'stopping', annotations }));
    }
    const all = Array.from({ length: burst }, (_, i) => i + 1);
    const received = (c: ReturnType<typeof rawSubscribe>): Promise<void> =>
      new Promise((resolve) => {
        const check = (): void => {
          if (c.messages().length >= burst) resolve();
          else setTimeout(check, 20);
        };
        check();
      });
    await Promise.all([received(slow), received(fast)]);
    expect(versionsOf(slow.messages())).toEqual(all);
    expect(versionsOf(fast.messages())).toEqual(all);

    // The server cuts the stuck client off once the stall period has passed; it sees why when it reads again.
    while ((await metrics.droppedSubscribersTotal.get()).values[0]?.value !== 1) {
      await new Promise((r) => setTimeout(r, 100));
    }
    stuck.stream.resume();
    const status = await stuckStatus;
    expect(status.code).toBe(grpcStatus.RESOURCE_EXHAUSTED);
    expect(status.message).toMatch(/subscriber too slow/);
    expect(stuck.messages().length).toBeLessThan(burst);

    // The others still get live updates after the cut-off.
    bus.publish(makeRecord({ id: 'ws-late', statusVersion: burst + 1 }));
    await new Promise<void>((resolve) => {
      const check = (): void => (fast.messages().length > burst ? resolve() : void setTimeout(check, 20));
      check();
    });
    expect(versionsOf(fast.messages()).at(-1)).toBe(burst + 1);
    for (const c of [slow, fast, stuck]) c.session.destroy();
  });
});

describe('Subscribe streams are bounded', () => {
  it('one stream over subscribe.maxStreams is refused with RESOURCE_EXHAUSTED; a closed one makes room', async () => {
    const bus = new StatusBus(100, 0);
    const metrics = new ManagerMetrics({ workspaces: () => [] });
    const server = new Server();
    server.addService(
      workspaceManagerServiceDefinition,
      createWorkspaceManagerImplementation({
        core: { updatesSince: (version: number) => bus.updatesSince(version) } as never,
        logger: createSilentLogger(),
        metrics,
        bufferSize,
        maxStreams: 2,
        converter: new StatusConverter(defaultManagerConfig.timeouts),
      }),
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    const address = `127.0.0.1:${port}`;
    try {
      const open = async (): Promise<number | undefined> =>
        (await metrics.registry.getSingleMetric('workbay_manager_subscribers')?.get())?.values[0]?.value;
      const first = rawSubscribe(address);
      const second = rawSubscribe(address);
      await expect.poll(open).toBe(2);
      const third = rawSubscribe(address);
      const refused = await statusOf(third.stream);
      expect(refused.code).toBe(grpcStatus.RESOURCE_EXHAUSTED);
      expect(refused.message).toContain('subscribe.maxStreams');
      expect(await metrics.registry.getSingleMetricAsString('workbay_manager_subscribers_refused_total')).toMatch(
        / 1$/,
      );

      first.session.destroy();
      await expect.poll(open).toBe(1);
      const fourth = rawSubscribe(address);
      await expect.poll(open).toBe(2);
      bus.publish(makeRecord({ id: 'w2', statusVersion: 2 }));
      await expect.poll(() => fourth.messages().length).toBe(1);
      expect(second.messages().length).toBe(1);
      for (const c of [second, third, fourth]) c.session.destroy();
    } finally {
      bus.complete();
      server.forceShutdown();
    }
  });
});
