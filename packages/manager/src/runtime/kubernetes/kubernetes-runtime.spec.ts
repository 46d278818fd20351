/**
 * The kubernetes runtime's watch against a FAKE API server, only for what a real kube-apiserver cannot be made to
 * do on demand: hold a watch open without a word (before or after answering its headers), and answer a watch with
 * 410 Gone. Everything else (pods, status, stop, deletion, rejection, an API server restart) is proven on a real
 * API server in packages/integration/src/kubernetes/kubernetes-runtime.spec.ts (the manager cannot depend on
 * @workbay/testing, which starts it).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { V1Pod } from '@kubernetes/client-node';
import { firstValueFrom, filter, take } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import { PluginHost } from '@workbay/api';
import type { RuntimeEvent } from '@workbay/api';
import { KubernetesRuntime } from './kubernetes-runtime.js';
import { kubernetesRuntimePlugin } from './plugin.js';

type WatchMode = 'silent' | 'no-headers' | 'gone-event' | 'gone-status' | 'normal';

/** Pods in memory; each watch request is answered as `mode` says. */
class FakeApiServer {
  readonly pods = new Map<string, V1Pod>();
  mode: WatchMode = 'normal';
  lists = 0;
  watches = 0;
  private version = 100;
  private readonly open = new Set<http.ServerResponse>();
  readonly server = http.createServer((req, res) => this.handle(req, res));

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const w of this.open) w.destroy();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  /** The runtime's NetworkPolicies at start: none listed, each create echoed (their content is proven on a real server). */
  private networkPolicies(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const json = { 'content-type': 'application/json' };
      if (req.method === 'POST') return res.writeHead(201, json).end(Buffer.concat(chunks));
      res.writeHead(200, json).end(JSON.stringify({ kind: 'NetworkPolicyList', metadata: {}, items: [] }));
    });
  }

  put(pod: V1Pod): void {
    pod.metadata!.resourceVersion = String(++this.version);
    this.pods.set(pod.metadata!.name!, pod);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    if (url.pathname.startsWith('/apis/networking.k8s.io/')) return this.networkPolicies(req, res);
    if (url.searchParams.get('watch') === 'true') {
      this.watches++;
      this.open.add(res);
      res.on('close', () => this.open.delete(res));
      switch (this.mode) {
        case 'no-headers':
          return; // never answers
        case 'silent':
          res.writeHead(200, { 'content-type': 'application/json' });
          res.flushHeaders();
          return; // answers, then says nothing
        case 'gone-event':
          res.writeHead(200, { 'content-type': 'application/json' });
          res.write(`${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } })}\n`);
          return;
        case 'gone-status':
          res.writeHead(410, { 'content-type': 'application/json' }).end('{"kind":"Status","code":410}');
          return;
        default:
          res.writeHead(200, { 'content-type': 'application/json' });
          res.flushHeaders();
          return;
      }
    }
    this.lists++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'PodList',
        metadata: { resourceVersion: String(this.version) },
        items: [...this.pods.values()],
      }),
    );
  }
}

const fakes: FakeApiServer[] = [];
const runtimes: KubernetesRuntime[] = [];
afterEach(async () => {
  for (const r of runtimes.splice(0)) await r.close();
  for (const f of fakes.splice(0)) await f.close();
});

async function setup(mode: WatchMode): Promise<{ fake: FakeApiServer; runtime: KubernetesRuntime }> {
  const fake = new FakeApiServer();
  fakes.push(fake);
  fake.mode = mode;
  const server = await fake.listen();
  fake.put(pod('i1', false));
  const runtime = await KubernetesRuntime.create({
    config: {
      server,
      token: 'test-token',
      skipTLSVerify: true,
      namespace: 'workspaces',
      watchRetryMs: 20,
      watchIdleTimeoutMs: 150,
    },
  });
  runtimes.push(runtime);
  return { fake, runtime };
}

function pod(instanceId: string, ready: boolean): V1Pod {
  return {
    metadata: {
      name: `ws-${instanceId}`,
      uid: `uid-${instanceId}`,
      annotations: { 'workbay.dev/instance-id': instanceId },
      labels: { 'app.kubernetes.io/managed-by': 'workbay', 'app.kubernetes.io/component': 'workspace' },
    },
    spec: { nodeName: 'node-a', containers: [{ name: 'workspace' }] },
    status: ready
      ? { phase: 'Running', podIP: '10.0.0.7', hostIP: '192.168.0.2', conditions: [{ type: 'Ready', status: 'True' }] }
      : { phase: 'Pending' },
  };
}

const next = (runtime: KubernetesRuntime, type: RuntimeEvent['type'], instanceId: string): Promise<RuntimeEvent> =>
  firstValueFrom(
    runtime.events$.pipe(
      filter((e) => e.type === type && e.instanceId === instanceId),
      take(1),
    ),
  );

describe('KubernetesRuntime watch (fake API server: what a real one cannot be made to do)', () => {
  for (const mode of ['silent', 'no-headers'] as const) {
    it(`notices a watch that stays ${mode === 'silent' ? 'silent after its headers' : 'without an answer'}, and re-lists`, async () => {
      const { fake, runtime } = await setup(mode);
      // The change reaches the runtime only through a re-list: the watch never delivers it.
      const ready = next(runtime, 'ready', 'i1');
      fake.put(pod('i1', true));
      expect((await ready).state).toMatchObject({ status: 'running', nodeIp: '192.168.0.2', podName: 'ws-i1' });
      expect(fake.lists).toBeGreaterThanOrEqual(2);
      // ...and watches again from there.
      while (fake.watches < 2) await new Promise((r) => setTimeout(r, 20));
    });
  }

  for (const mode of ['gone-event', 'gone-status'] as const) {
    it(`re-lists on 410 Gone (${mode === 'gone-event' ? 'an ERROR event' : 'the HTTP status'}) and reports what it missed`, async () => {
      const { fake, runtime } = await setup('normal');
      const exited = next(runtime, 'exited', 'i1');
      // Gone while the watch could not tell: the re-list's diff reports it.
      fake.pods.delete('ws-i1');
      fake.mode = mode;
      const lists = fake.lists;
      // The open watch ends (as at the server's timeout); the next one answers 410.
      for (const w of [...(fake as unknown as { open: Set<http.ServerResponse> }).open]) w.end();
      expect((await exited).state.failure).toMatch(
        /^the workspace pod ws-i1 was deleted by someone other than Workbay/,
      );
      expect(fake.lists).toBeGreaterThan(lists);
    });
  }
});

describe('kubernetesRuntimePlugin', () => {
  it('registers the kubernetes kind and names bad config keys', async () => {
    const host = new PluginHost().use(kubernetesRuntimePlugin);
    expect(host.runtimeKinds()).toEqual(['kubernetes']);
    await expect(host.createRuntime('kubernetes', { namespace: '' })).rejects.toMatchObject({
      field: 'runtime.kubernetes.namespace',
    });
    await expect(host.createRuntime('kubernetes', { readiness: { kind: 'exec' } })).rejects.toMatchObject({
      field: 'runtime.kubernetes.readiness.kind',
    });
    await expect(host.createRuntime('kubernetes', { nodeSelectr: {} })).rejects.toMatchObject({
      field: 'runtime.kubernetes.nodeSelectr',
    });
    await expect(host.createRuntime('kubernetes', { defaultImage: { image: '' } })).rejects.toMatchObject({
      field: 'runtime.kubernetes.defaultImage.image',
    });
  });
});
