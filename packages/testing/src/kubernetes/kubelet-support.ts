import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubernetesApiError } from './client.js';
import type {
  KubernetesRequestOptions,
  KubernetesWatch,
  KubernetesWatchEvent,
  KubernetesWatchOptions,
} from './client.js';
import type { KubernetesTestCluster } from './cluster.js';

/**
 * List, then watch from the list's resourceVersion; resume from the last seen resourceVersion (bookmarks
 * included) when the stream ends or breaks, relist on 410 Gone. A relist hands the whole current state to
 * `onSync`, so the owner can forget objects deleted while it was not watching (e.g. across an API server restart).
 */
export class ListWatcher<T extends { metadata?: { resourceVersion?: string } }> {
  private resourceVersion: string | undefined;
  private current: KubernetesWatch | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;
  /** How many times the watch was (re)opened and the collection (re)listed: for tests of resilience. */
  readonly counters = { watches: 0, lists: 0 };

  constructor(
    private readonly cluster: Pick<KubernetesTestCluster, 'request' | 'watch'>,
    private readonly path: string,
    private readonly labelSelector: string,
    private readonly handlers: {
      onSync(items: T[]): void;
      onEvent(type: 'ADDED' | 'MODIFIED' | 'DELETED', object: T): void;
      onError(message: string): void;
    },
  ) {}

  /** Resolves after the first list was handed to `onSync`. */
  async start(): Promise<void> {
    await this.list();
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.stop();
    await this.loop;
  }

  private async list(): Promise<void> {
    const path = `${this.path}?labelSelector=${encodeURIComponent(this.labelSelector)}`;
    const res = await this.cluster.request<{ metadata: { resourceVersion: string }; items: T[] }>('GET', path);
    if (res.status !== 200) throw new KubernetesApiError('GET', path, res.status, res.body);
    this.counters.lists++;
    this.resourceVersion = res.body.metadata.resourceVersion;
    this.handlers.onSync(res.body.items);
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        if (!this.resourceVersion) await this.list();
        await this.watchOnce();
        failures = 0;
      } catch (error) {
        if (this.stopped) return;
        // The API server is away (restarting) or refused: back off and try again from where we were. A restart
        // is routine; only an outage of about a minute is worth reporting.
        failures++;
        if (failures % 30 === 0) this.handlers.onError(`pod watch: ${(error as Error).message.slice(0, 300)}`);
        await sleep(Math.min(2_000, 100 * 2 ** Math.min(failures, 5)));
      }
    }
  }

  private async watchOnce(): Promise<void> {
    const options: KubernetesWatchOptions = {
      resourceVersion: this.resourceVersion,
      labelSelector: this.labelSelector,
      timeoutSeconds: 60,
    };
    this.counters.watches++;
    let endNow = false;
    let watch: KubernetesWatch | undefined = undefined;
    watch = this.cluster.watch<T>(
      this.path,
      (event: KubernetesWatchEvent<T>) => {
        if (endNow) return;
        if (event.type === 'ERROR') {
          const status = event.object as unknown as { code?: number; message?: string };
          // 410 Gone: our resourceVersion was compacted away; anything else: start over the same way.
          this.resourceVersion = undefined;
          if (status.code !== 410) this.handlers.onError(`pod watch error ${status.code}: ${status.message ?? ''}`);
          endNow = true;
          watch?.stop();
          return;
        }
        const rv = event.object.metadata?.resourceVersion;
        if (rv) this.resourceVersion = rv;
        if (event.type !== 'BOOKMARK') this.handlers.onEvent(event.type, event.object);
      },
      options,
    );
    this.current = watch;
    if (this.stopped || endNow) watch.stop();
    try {
      await watch.done;
    } catch (error) {
      // A watch from a too-old resourceVersion may also be refused up front.
      if (error instanceof KubernetesApiError && error.status === 410) this.resourceVersion = undefined;
      else throw error;
    }
  }
}

/** Bounds the simulator's concurrent API calls, so that 1,000 pods do not open 1,000 TLS connections at once. */
export class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly max: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

/**
 * Hands out loopback addresses 127.0.<n>.<m> (Linux routes all of 127/8 to `lo`): one per pod. Starts at a
 * random block so that simulators in parallel test files rarely meet; a taken address/port is skipped by the
 * caller via {@link LoopbackAllocator.next}.
 */
export class LoopbackAllocator {
  private cursor: number;

  constructor() {
    // 127.0.1.1 .. 127.0.254.254; 127.0.0.x is left to the servers tests start on 127.0.0.1.
    this.cursor = (1 + Math.floor(Math.random() * 200)) * 256;
  }

  next(): string {
    for (;;) {
      this.cursor = (this.cursor + 1) % (255 * 256);
      const n = Math.floor(this.cursor / 256);
      const m = this.cursor % 256;
      if (n >= 1 && m >= 1 && m <= 254) return `127.0.${n}.${m}`;
    }
  }
}

/** Listens on `ip` at every port with a server that answers 200 and `body`; closes what it opened on failure. */
export async function servePorts(ip: string, ports: readonly number[], body: string): Promise<Server[]> {
  const servers: Server[] = [];
  try {
    for (const port of ports) {
      const server = createServer((req, res) => {
        req.resume();
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(body);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, ip, () => {
          server.off('error', reject);
          resolve();
        });
      });
      servers.push(server);
    }
    return servers;
  } catch (error) {
    await closeServers(servers);
    throw error;
  }
}

export async function closeServers(servers: readonly Server[]): Promise<void> {
  await Promise.all(
    servers.map(
      (server) =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    ),
  );
}

/**
 * The simulator's API access: bounded concurrency, retries while the API server is away (restarting) or says
 * "not now" (429, 5xx) for up to a minute, and a list of problems a test can assert to be empty.
 */
export class SimulatorClient {
  readonly problems: string[] = [];
  stopped = false;
  private readonly limiter: Limiter;

  constructor(
    private readonly cluster: Pick<KubernetesTestCluster, 'request'>,
    maxConcurrent: number,
  ) {
    this.limiter = new Limiter(maxConcurrent);
  }

  async request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    options?: KubernetesRequestOptions,
  ): Promise<{ status: number; body: T }> {
    const deadline = Date.now() + 60_000;
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.limiter.run(() => this.cluster.request<T>(method, path, body, options));
        // 429 and 5xx are the API server's "not now": try again like client-go does.
        if ((res.status === 429 || res.status >= 500) && Date.now() < deadline && !this.stopped) {
          await sleep(Math.min(1_000, 50 * 2 ** attempt));
          continue;
        }
        return res;
      } catch (error) {
        if (Date.now() >= deadline || this.stopped) throw error;
        await sleep(Math.min(1_000, 50 * 2 ** attempt));
      }
    }
  }

  problem(message: string): void {
    if (this.problems.length < 100) this.problems.push(message);
  }

  /** Deletes a pod with grace 0 and its uid as precondition (what a kubelet does once the containers are gone). */
  async forceDelete(podsPath: string, pod: { metadata: { name: string; uid: string } }): Promise<void> {
    const path = `${podsPath}/${encodeURIComponent(pod.metadata.name)}`;
    const res = await this.request('DELETE', path, {
      apiVersion: 'v1',
      kind: 'DeleteOptions',
      gracePeriodSeconds: 0,
      preconditions: { uid: pod.metadata.uid },
    });
    // 404: already gone; 409: the name now belongs to a new pod (uid precondition), which is not ours to delete.
    if (res.status !== 200 && res.status !== 202 && res.status !== 404 && res.status !== 409) {
      this.problem(`DELETE ${path}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
    }
  }
}
