/**
 * Benchmark load generator, run as a child process (so that clients and server do not share an event loop).
 * Talks raw grpc-js with pass-through serialisation, so the manager and the bare baseline servers are measured
 * with exactly the same client work. Controlled over IPC:
 *
 * - `{ kind: 'subscribe', address, path, request (base64), subscribers, channels, expected }`: opens the streams
 *   and answers `{ ready }` once every stream got its response headers. `{ kind: 'quiet' }` answers `{ quiet }` once
 *   nothing arrived for 300 ms. `{ kind: 'reset' }` forgets what arrived
 *   so far (answer `{ reset }`). After `expected` messages per subscriber since the reset (or `{ kind: 'finish' }`)
 *   it answers `{ arrivals, errors }` (per message index, the arrival times in ms since the epoch) and exits.
 * - `{ kind: 'unary', address, path, request (base64), callers, callsPerCaller }`: runs the callers, answers
 *   `{ latencies, wallMs }`.
 */
import { Client, credentials } from '@grpc/grpc-js';
import type { ClientReadableStream } from '@grpc/grpc-js';

interface SubscribeJob {
  readonly kind: 'subscribe';
  readonly address: string;
  readonly path: string;
  readonly request: string;
  readonly subscribers: number;
  readonly channels: number;
  readonly expected: number;
}

interface UnaryJob {
  readonly kind: 'unary';
  readonly address: string;
  readonly path: string;
  readonly request: string;
  readonly callers: number;
  readonly callsPerCaller: number;
}

const send = (message: unknown): void => {
  process.send!(message);
};

/** Sends the last message and exits once it left: a large answer may take a while if the parent is busy. */
const sendAndExit = (message: unknown): void => {
  process.send!(message, undefined, {}, () => process.exit(0));
};

const passthrough = (value: Buffer): Buffer => value;

function clients(address: string, count: number): Client[] {
  // Separate connections, as separate client processes would have.
  return Array.from(
    { length: count },
    (_, i) =>
      new Client(address, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'x-bench-channel': i }),
  );
}

function runSubscribe(job: SubscribeJob): void {
  const pool = clients(job.address, job.channels);
  const request = Buffer.from(job.request, 'base64');
  // arrivals[i][s]: when subscriber s received message i (counted from the last reset).
  let arrivals: number[][] = [];
  let counts = new Array<number>(job.subscribers).fill(0);
  let done = 0;
  let errors = 0;
  let opened = 0;
  let finished = false;
  let armed = false;
  let lastArrival = Date.now();
  const streams: ClientReadableStream<Buffer>[] = [];
  const finish = (): void => {
    if (finished) return;
    finished = true;
    for (const s of streams) s.cancel();
    for (const c of pool) c.close();
    sendAndExit({ arrivals, errors });
  };
  for (let s = 0; s < job.subscribers; s += 1) {
    const stream = pool[s % pool.length]!.makeServerStreamRequest(job.path, passthrough, passthrough, request);
    streams.push(stream);
    stream.on('metadata', () => {
      opened += 1;
      if (opened === job.subscribers) send({ ready: true });
    });
    stream.on('data', () => {
      const now = Date.now();
      lastArrival = now;
      const index = counts[s]!;
      counts[s] = index + 1;
      (arrivals[index] ??= [])[s] = now;
      // Counted only after the reset: priming a thousand streams on a loaded machine can take longer than
      // `expected` primer updates.
      if (armed && index + 1 === job.expected) {
        done += 1;
        if (done === job.subscribers) finish();
      }
    });
    stream.on('error', (error: { code?: number }) => {
      if (error.code !== 1) errors += 1;
    });
  }
  process.on('message', (message: { kind?: string }) => {
    if (message.kind === 'quiet') {
      // Answers once nothing arrived for a while: primer updates still in flight would shift the indices.
      const check = (): void => {
        if (Date.now() - lastArrival >= 300) send({ quiet: true });
        else setTimeout(check, 50);
      };
      check();
    }
    if (message.kind === 'reset') {
      arrivals = [];
      counts = new Array<number>(job.subscribers).fill(0);
      done = 0;
      armed = true;
      send({ reset: true });
    }
    if (message.kind === 'finish') finish();
  });
}

async function runUnary(job: UnaryJob): Promise<void> {
  const pool = clients(job.address, Math.min(8, job.callers));
  const request = Buffer.from(job.request, 'base64');
  const call = (client: Client): Promise<void> =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(job.path, passthrough, passthrough, request, (error) =>
        error ? reject(error) : resolve(),
      );
    });
  // Warm up every connection.
  await Promise.all(pool.map((c) => call(c)));
  const latencies: number[] = [];
  const started = performance.now();
  await Promise.all(
    Array.from({ length: job.callers }, async (_, i) => {
      const client = pool[i % pool.length]!;
      for (let n = 0; n < job.callsPerCaller; n += 1) {
        const t0 = performance.now();
        await call(client);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const wallMs = performance.now() - started;
  for (const c of pool) c.close();
  sendAndExit({ latencies, wallMs });
}

process.once('message', (job: SubscribeJob | UnaryJob) => {
  if (job.kind === 'subscribe') runSubscribe(job);
  else
    void runUnary(job).catch((error: unknown) => {
      console.error(error);
      process.exit(1);
    });
});
