import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workspacePhase, wsman } from '@workbay/api';
import type { WorkspacePhase } from '@workbay/api';
import { startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

/** Collects the updates of a typed-client subscription until `until` says stop. */
async function collect(
  stream: AsyncIterable<wsman.SubscribeResponse>,
  until: (updates: wsman.SubscribeResponse[]) => boolean,
): Promise<wsman.SubscribeResponse[]> {
  const updates: wsman.SubscribeResponse[] = [];
  for await (const update of stream) {
    updates.push(update);
    if (until(updates)) break;
  }
  return updates;
}

const phaseOf = (u: wsman.SubscribeResponse): WorkspacePhase | undefined =>
  u.status ? workspacePhase.fromProto(u.status.phase) : undefined;

describe('Subscribe and GetWorkspaces', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ config: { subscribe: { historySize: 50, stallTimeout: '1s' } } });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('streams every phase of a workspace in status_version order, filtered by owner', async () => {
    const mine = startRequest({ owner: 'carol' });
    const other = startRequest({ owner: 'dave' });
    const stream = h.client.subscribe({ mustMatch: { owner: 'carol', metaId: '', annotations: {} } });
    const done = collect(stream, (us) => us.some((u) => u.status?.id === mine.id && phaseOf(u) === 'stopped'));
    // Give the stream a moment to be established before anything happens.
    await new Promise((r) => setTimeout(r, 100));
    await h.client.startWorkspace(other);
    await h.client.startWorkspace(mine);
    await waitForPhase(h.client, mine.id, 'running');
    await h.client.stopWorkspace({ id: mine.id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    const updates = await done;
    expect(updates.every((u) => u.status?.metadata?.owner === 'carol')).toBe(true);
    const versions = updates.map((u) => u.status!.statusVersion);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    expect(new Set(versions).size).toBe(versions.length);
    const phases = updates.map(phaseOf).filter((p, i, all) => p !== all[i - 1]);
    expect(phases).toEqual(['pending', 'creating', 'initializing', 'running', 'stopping', 'stopped']);
    await waitForPhase(h.client, other.id, 'running');
    await h.client.stopWorkspace({ id: other.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, other.id, 'stopped');
  });

  it('GetWorkspaces filters by owner, meta id and annotation subset', async () => {
    const a = startRequest({ owner: 'erin', annotations: { team: 'red', tier: 'gold' } });
    const b = startRequest({ owner: 'erin', annotations: { team: 'blue' } });
    await h.client.startWorkspace(a);
    await h.client.startWorkspace(b);
    const ids = async (filter: Partial<wsman.MetadataFilter>) =>
      (await h.client.getWorkspaces({ mustMatch: { owner: '', metaId: '', annotations: {}, ...filter } })).status
        .map((s) => s.id)
        .sort();
    expect(await ids({ owner: 'erin' })).toEqual([a.id, b.id].sort());
    expect(await ids({ owner: 'erin', annotations: { team: 'red' } })).toEqual([a.id]);
    expect(await ids({ annotations: { team: 'red', tier: 'gold' } })).toEqual([a.id]);
    expect(await ids({ annotations: { team: 'red', tier: 'silver' } })).toEqual([]);
    expect(await ids({ metaId: b.metadata!.metaId })).toEqual([b.id]);
    const all = await h.client.getWorkspaces({});
    expect(all.status.length).toBeGreaterThanOrEqual(2);
    for (const r of [a, b]) {
      await h.client.stopWorkspace({ id: r.id, policy: wsman.StopWorkspacePolicy.ABORT });
      await waitForPhase(h.client, r.id, 'stopped');
    }
  });

  it('resumes from a status_version out of the history, or asks for a resync', async () => {
    const r = startRequest({ owner: 'frank' });
    await h.client.startWorkspace(r);
    const running = await waitForPhase(h.client, r.id, 'running');
    const pending = (await h.client.getWorkspaces({ mustMatch: { owner: 'frank', metaId: '', annotations: {} } }))
      .status;
    expect(pending).toHaveLength(1);
    // Resume from just before RUNNING: the history replays RUNNING (and nothing older).
    const stream = h.client.subscribe({
      mustMatch: { owner: 'frank', metaId: '', annotations: {} },
      resumeFromStatusVersion: running.statusVersion - 1,
    });
    const replayed = await collect(stream, (us) => us.length >= 1);
    expect(replayed[0]!.resyncRequired).toBe(false);
    expect(replayed[0]!.status!.statusVersion).toBe(running.statusVersion);
    expect(phaseOf(replayed[0]!)).toBe('running');

    // Push the history (50 entries) past that version.
    for (let i = 0; i < 60; i += 1) {
      await h.client.controlPort({
        id: r.id,
        expose: i % 2 === 0,
        spec: { port: 3000, visibility: 0, protocol: 0, url: '' },
      });
    }
    const stale = h.client.subscribe({ resumeFromStatusVersion: running.statusVersion - 1 });
    const first = await collect(stale, (us) => us.length >= 1);
    expect(first[0]!.resyncRequired).toBe(true);
    expect(first[0]!.status).toBeUndefined();
    await h.client.stopWorkspace({ id: r.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, r.id, 'stopped');
  });

  it('cuts off a subscriber that stops reading with RESOURCE_EXHAUSTED, without slowing the others', async () => {
    // Sizeable statuses (annotations are part of them), so that the transport buffers fill in reasonable time.
    const big: Record<string, string> = {};
    for (let i = 0; i < 10; i += 1) big[`note-${i}`] = 'x'.repeat(1000);
    const r = startRequest({ owner: 'gina', annotations: big });
    await h.client.startWorkspace(r);
    await waitForPhase(h.client, r.id, 'running');

    // The slow subscriber is another process that we freeze (SIGSTOP): it stops reading at the TCP level.
    const script = join(h.dir, 'slow-subscriber.mjs');
    const grpcPath = createRequire(import.meta.url).resolve('@grpc/grpc-js');
    await writeFile(
      script,
      `import grpc from ${JSON.stringify(grpcPath)};
       const client = new grpc.Client(process.argv[2], grpc.credentials.createInsecure());
       // SubscribeRequest{must_match{owner:"gina"}}, encoded by hand to keep this script dependency-free.
       const request = Buffer.from([0x0a, 0x06, 0x0a, 0x04, ...Buffer.from('gina')]);
       const stream = client.makeServerStreamRequest('/wsman.WorkspaceManager/Subscribe', (b) => b, (b) => b, request);
       let count = 0;
       stream.on('metadata', () => console.log('subscribed'));
       stream.on('data', () => { count += 1; });
       stream.on('error', (e) => { console.log(JSON.stringify({ code: e.code, details: e.details, count })); process.exit(0); });
       stream.on('end', () => { console.log(JSON.stringify({ end: true, count })); process.exit(0); });`,
    );
    const child = spawn(process.execPath, [script, h.running.grpcAddress], { stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

    let fastCount = 0;
    const fast = h.client.subscribe({ mustMatch: { owner: 'gina', metaId: '', annotations: {} } });
    const fastDone = (async () => {
      try {
        for await (const _ of fast) fastCount += 1;
      } catch (error) {
        if ((error as { code?: string }).code !== 'cancelled') throw error;
      }
    })();
    // Publish until the child's stream is established (its first update carries the response headers).
    let published = 0;
    const update = (): void => {
      published += 1;
      void h.running.core.controlPort(r.id, published % 2 === 0, {
        port: 4000,
        visibility: 'private',
        protocol: 'http',
      });
    };
    while (!output.includes('subscribed') || fastCount === 0) {
      update();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // Updates published before the fast stream was registered never reach it.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const missedByFast = published - fastCount;
    child.kill('SIGSTOP');

    for (let i = 1; i <= 3000; i += 1) {
      update();
      // Pace the updates as busy real traffic would be (about 1,000 per second).
      if (i % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const deadline = Date.now() + 30_000;
    while (fastCount < published - missedByFast && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    // The reader that keeps up got every update; the frozen one was cut off.
    expect(fastCount).toBe(published - missedByFast);
    // Cut off once it has been over its buffer without reading for the stall period (1 s here).
    const dropped = async (): Promise<number | undefined> =>
      (await h.running.metrics.droppedSubscribersTotal.get()).values[0]?.value;
    while ((await dropped()) !== 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await dropped()).toBe(1);

    child.kill('SIGCONT');
    await exited;
    const result = JSON.parse(output.trim().split('\n').pop()!) as { code?: number; details?: string };
    expect(result.code).toBe(grpcStatus.RESOURCE_EXHAUSTED);
    expect(result.details).toMatch(/subscriber too slow/);
    fast.cancel();
    await fastDone;
    await h.client.stopWorkspace({ id: r.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, r.id, 'stopped');
  });
});
