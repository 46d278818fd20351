/**
 * The kubernetes runtime against a fake API server (http.createServer on 127.0.0.1:0) that keeps pods in memory
 * and streams watch events. Not a real cluster: scheduling, kubelet and probes are simulated by the test.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { V1Pod } from '@kubernetes/client-node';
import { firstValueFrom, filter, take, timeout } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AlreadyExistsError, PluginHost } from '@workbay/api';
import type { RuntimeEvent, RuntimeWorkspaceSpec } from '@workbay/api';
import { KubernetesRuntime } from './kubernetes-runtime.js';
import { kubernetesRuntimePlugin } from './plugin.js';
import { podName } from './pods.js';

class FakeApiServer {
  readonly pods = new Map<string, V1Pod>();
  readonly requests: { method: string; url: string; auth?: string }[] = [];
  private readonly watchers = new Set<http.ServerResponse>();
  private version = 100;
  readonly server = http.createServer((req, res) => this.handle(req, res));

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const w of this.watchers) w.end();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  /** Simulates the kubelet: changes a pod's status and tells the watchers. */
  update(name: string, change: (pod: V1Pod) => void): void {
    const pod = this.pods.get(name);
    if (!pod) throw new Error(`no pod ${name}`);
    change(pod);
    pod.metadata!.resourceVersion = String(++this.version);
    this.broadcast('MODIFIED', pod);
  }

  /** Ends every open watch, as an API server does after its watch timeout. */
  dropWatches(): void {
    for (const w of this.watchers) w.end();
    this.watchers.clear();
  }

  private broadcast(type: string, pod: V1Pod): void {
    for (const w of this.watchers) w.write(`${JSON.stringify({ type, object: pod })}\n`);
  }

  private send(res: http.ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  }

  private status(res: http.ServerResponse, code: number, reason: string, message: string): void {
    this.send(res, code, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason, message, code });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    this.requests.push({ method: req.method ?? '', url: url.pathname + url.search, auth: req.headers.authorization });
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods(?:\/([^/]+))?$/.exec(url.pathname);
    if (!m) return this.status(res, 404, 'NotFound', 'no such path');
    const name = m[2];
    if (req.method === 'GET' && !name && url.searchParams.get('watch') === 'true') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      this.watchers.add(res);
      res.on('close', () => this.watchers.delete(res));
      return;
    }
    if (req.method === 'GET' && !name) {
      return this.send(res, 200, {
        apiVersion: 'v1',
        kind: 'PodList',
        metadata: { resourceVersion: String(this.version) },
        items: [...this.pods.values()],
      });
    }
    if (req.method === 'GET') {
      const pod = this.pods.get(name!);
      return pod ? this.send(res, 200, pod) : this.status(res, 404, 'NotFound', `pods "${name}" not found`);
    }
    if (req.method === 'POST') {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const pod = JSON.parse(body) as V1Pod;
        const podName = pod.metadata!.name!;
        if (this.pods.has(podName)) return this.status(res, 409, 'AlreadyExists', `pods "${podName}" already exists`);
        pod.metadata!.creationTimestamp = new Date() as unknown as Date;
        pod.metadata!.resourceVersion = String(++this.version);
        pod.status = { phase: 'Pending' };
        this.pods.set(podName, pod);
        this.broadcast('ADDED', pod);
        this.send(res, 201, pod);
      });
      return;
    }
    if (req.method === 'DELETE') {
      const pod = this.pods.get(name!);
      if (!pod) return this.status(res, 404, 'NotFound', `pods "${name}" not found`);
      pod.metadata!.deletionTimestamp = new Date() as unknown as Date;
      pod.metadata!.deletionGracePeriodSeconds = Number(url.searchParams.get('gracePeriodSeconds') ?? 30);
      this.update(name!, () => undefined);
      // The "kubelet" stops the container a little later and the object goes away.
      setTimeout(() => {
        this.pods.delete(name!);
        this.broadcast('DELETED', pod);
      }, 80);
      return this.send(res, 200, pod);
    }
    this.status(res, 405, 'MethodNotAllowed', 'nope');
  }
}

let fake: FakeApiServer;
let server: string;
const runtimes: KubernetesRuntime[] = [];

beforeAll(async () => {
  fake = new FakeApiServer();
  server = await fake.listen();
});
afterAll(async () => {
  await fake.close();
});
afterEach(async () => {
  for (const r of runtimes.splice(0)) await r.close();
});

async function newRuntime(): Promise<KubernetesRuntime> {
  const runtime = await KubernetesRuntime.create({
    config: {
      server,
      token: 'test-token',
      skipTLSVerify: true,
      namespace: 'workspaces',
      pollIntervalMs: 20,
      watchRetryMs: 50,
      runAsUser: 33333,
      maxImagePullFailures: 1,
    },
  });
  runtimes.push(runtime);
  return runtime;
}

let n = 0;
function spec(over: Partial<RuntimeWorkspaceSpec> = {}): RuntimeWorkspaceSpec {
  n++;
  return {
    instanceId: `0f8fad5b-d9cb-469f-a165-70867728950${n}`,
    workspaceId: `ws-K8s-${n}`,
    owner: 'alice@example.com',
    image: 'ghcr.io/acme/ide:1',
    url: `http://ws-${n}.example`,
    headless: false,
    type: 'regular',
    contentDir: `/var/lib/workbay/workspaces/inst-${n}`,
    env: { WORKBAY_WORKSPACE_ID: `ws-k8s-${n}` },
    ports: [23000, 3000],
    className: 'g1-standard',
    resources: { cpu: 2, memoryBytes: 4 * 1024 ** 3, pids: 2048, diskBytes: 10 * 1024 ** 3 },
    ...over,
  };
}

const next = (runtime: KubernetesRuntime, type: RuntimeEvent['type'], instanceId: string): Promise<RuntimeEvent> =>
  firstValueFrom(
    runtime.events$.pipe(
      filter((e) => e.type === type && e.instanceId === instanceId),
      take(1),
      timeout(10_000),
    ),
  );

const markReady = (name: string): void =>
  fake.update(name, (pod) => {
    pod.spec!.nodeName = 'node-a';
    pod.status = {
      phase: 'Running',
      podIP: '10.0.0.7',
      conditions: [{ type: 'Ready', status: 'True' }],
      containerStatuses: [
        { name: 'workspace', ready: true, restartCount: 0, image: 'x', imageID: 'x', state: { running: {} } },
      ],
    };
  });

describe('KubernetesRuntime (against a fake API server)', () => {
  it('creates one pod per workspace with labels, env, ports, resources, probe and the content volume', async () => {
    const runtime = await newRuntime();
    const s = spec();
    const state = await runtime.start(s);
    expect(state).toMatchObject({
      instanceId: s.instanceId,
      status: 'starting',
      ready: false,
      podName: podName(s.instanceId),
    });
    const pod = fake.pods.get(podName(s.instanceId))!;
    expect(pod.metadata!.labels).toMatchObject({
      'app.kubernetes.io/managed-by': 'workbay',
      'workbay.dev/instance-id': s.instanceId,
      'workbay.dev/workspace-id': s.workspaceId,
      'workbay.dev/owner': 'alice-example.com',
      'workbay.dev/class': 'g1-standard',
    });
    expect(pod.metadata!.annotations!['workbay.dev/owner']).toBe('alice@example.com');
    expect(pod.spec!.hostname).toBe(s.workspaceId.toLowerCase());
    expect(pod.spec!.restartPolicy).toBe('Never');
    expect(pod.spec!.securityContext).toMatchObject({ runAsUser: 33333, runAsNonRoot: true });
    const c = pod.spec!.containers[0]!;
    expect(c.image).toBe('ghcr.io/acme/ide:1');
    expect(c.env).toEqual(
      expect.arrayContaining([
        { name: 'WORKBAY_WORKSPACE_ID', value: s.env['WORKBAY_WORKSPACE_ID'] },
        { name: 'PORT', value: '23000' },
        { name: 'WORKBAY_IDE_PORT', value: '23000' },
      ]),
    );
    expect(c.ports!.map((p) => p.containerPort)).toEqual([23000, 3000]);
    expect(c.resources!.limits).toEqual({
      cpu: '2000m',
      memory: String(4 * 1024 ** 3),
      'ephemeral-storage': String(10 * 1024 ** 3),
    });
    expect(c.readinessProbe).toMatchObject({ tcpSocket: { port: 23000 }, periodSeconds: 1, failureThreshold: 600 });
    expect(pod.spec!.volumes![0]!.hostPath!.path).toBe(s.contentDir);
    expect(c.volumeMounts![0]!.mountPath).toBe('/workspace');
    expect(fake.requests.find((r) => r.method === 'POST')!.auth).toBe('Bearer test-token');

    await expect(runtime.start(s)).rejects.toBeInstanceOf(AlreadyExistsError);
  });

  it('reports ready from the pod status, stops with the grace period and reports the exit', async () => {
    const runtime = await newRuntime();
    const s = spec();
    const ready = next(runtime, 'ready', s.instanceId);
    await runtime.start(s);
    markReady(podName(s.instanceId));
    const r = await ready;
    expect(r.state).toMatchObject({ status: 'running', ready: true, nodeName: 'node-a', host: '10.0.0.7' });
    expect(await runtime.inspect(s.instanceId)).toMatchObject({ status: 'running', ready: true });
    expect((await runtime.list()).map((x) => x.instanceId)).toContain(s.instanceId);

    const exited = next(runtime, 'exited', s.instanceId);
    await runtime.stop(s.instanceId, { gracePeriodMs: 30_000 });
    const del = fake.requests.find((q) => q.method === 'DELETE')!;
    expect(del.url).toContain('gracePeriodSeconds=30');
    expect(fake.pods.has(podName(s.instanceId))).toBe(false);
    expect((await exited).state.failure).toBeUndefined();
    expect(await runtime.inspect(s.instanceId)).toBeUndefined();
    // Stopping what is gone is a no-op.
    await runtime.stop(s.instanceId, { gracePeriodMs: 1000 });
  });

  it('reports failures: OOM kill, non-zero exit, image pull errors', async () => {
    const runtime = await newRuntime();
    const [a, b, c] = [spec(), spec(), spec()];
    for (const x of [a, b, c]) await runtime.start(x);
    const exits = [a, b, c].map((x) => next(runtime, 'exited', x.instanceId));
    fake.update(podName(a.instanceId), (pod) => {
      pod.status = {
        phase: 'Failed',
        containerStatuses: [
          {
            name: 'workspace',
            ready: false,
            restartCount: 0,
            image: 'x',
            imageID: 'x',
            state: { terminated: { exitCode: 137, reason: 'OOMKilled' } },
          },
        ],
      };
    });
    fake.update(podName(b.instanceId), (pod) => {
      pod.status = {
        phase: 'Failed',
        containerStatuses: [
          {
            name: 'workspace',
            ready: false,
            restartCount: 0,
            image: 'x',
            imageID: 'x',
            state: { terminated: { exitCode: 2, reason: 'Error', message: 'boot\nno config' } },
          },
        ],
      };
    });
    fake.update(podName(c.instanceId), (pod) => {
      pod.status = {
        phase: 'Pending',
        containerStatuses: [
          {
            name: 'workspace',
            ready: false,
            restartCount: 0,
            image: 'x',
            imageID: '',
            state: { waiting: { reason: 'ErrImagePull', message: 'manifest unknown' } },
          },
        ],
      };
    });
    const [ea, eb, ec] = await Promise.all(exits);
    expect(ea!.state.failure).toMatch(/^out of memory/);
    expect(eb!.state).toMatchObject({ exitCode: 2, failure: 'the workspace container exited with code 2: no config' });
    expect(ec!.state.failure).toBe('cannot pull image (1 attempt): manifest unknown');
  });

  it('a new runtime instance lists existing pods, and the watch survives being dropped', async () => {
    const first = await newRuntime();
    const s = spec();
    await first.start(s);
    await first.close();
    const second = await newRuntime();
    expect((await second.list()).find((x) => x.instanceId === s.instanceId)).toMatchObject({ status: 'starting' });
    fake.dropWatches();
    await new Promise((r) => setTimeout(r, 200));
    const ready = next(second, 'ready', s.instanceId);
    markReady(podName(s.instanceId));
    await ready;
    // Deleted behind our back: an exit with a reason, as soon as the deletion starts.
    const exited = next(second, 'exited', s.instanceId);
    fake.update(podName(s.instanceId), (pod) => {
      pod.metadata!.deletionTimestamp = new Date();
      pod.metadata!.deletionGracePeriodSeconds = 30;
    });
    expect((await exited).state.failure).toMatch(/was deleted by someone other than Workbay \(grace period 30s\)$/);
  });
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
  });
});
