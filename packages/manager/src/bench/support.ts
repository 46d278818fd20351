/** Helpers of the manager bench: a port waiter, the load-client process and a bare grpc-js baseline server. */
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Metadata, Server, ServerCredentials } from '@grpc/grpc-js';
import type { ServerWritableStream } from '@grpc/grpc-js';

const here = fileURLToPath(new URL('.', import.meta.url));

const passthrough = (value: Buffer): Buffer => value;

export function waitForPort(port: number): Promise<void> {
  return new Promise((resolve) => {
    const attempt = (): void => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => {
        socket.destroy();
        setTimeout(attempt, 10);
      });
    };
    attempt();
  });
}

export function loadClient(): ChildProcess {
  return fork(join(here, 'load-client.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

export function nextMessage<T>(child: ChildProcess, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`load client exited with ${code} before ${what}`));
    child.once('message', (message) => {
      child.off('exit', onExit);
      resolve(message as T);
    });
    child.once('exit', onExit);
  });
}

/** A bare grpc-js server: a streaming method that broadcasts given bytes and a unary method answering with fixed bytes. */
export async function startBareServer(unaryAnswer: Buffer): Promise<{
  address: string;
  streams: Set<ServerWritableStream<Buffer, Buffer>>;
  close(): void;
}> {
  const server = new Server({ 'grpc.max_concurrent_streams': 10_000 });
  const streams = new Set<ServerWritableStream<Buffer, Buffer>>();
  server.addService(
    {
      subscribe: {
        path: '/bench.Bare/Subscribe',
        requestStream: false,
        responseStream: true,
        requestSerialize: passthrough,
        requestDeserialize: passthrough,
        responseSerialize: passthrough,
        responseDeserialize: passthrough,
      },
      echo: {
        path: '/bench.Bare/Echo',
        requestStream: false,
        responseStream: false,
        requestSerialize: passthrough,
        requestDeserialize: passthrough,
        responseSerialize: passthrough,
        responseDeserialize: passthrough,
      },
    },
    {
      subscribe: (call: ServerWritableStream<Buffer, Buffer>) => {
        streams.add(call);
        call.sendMetadata(new Metadata());
        call.on('cancelled', () => streams.delete(call));
      },
      echo: (_call: unknown, callback: (error: null, value: Buffer) => void) => callback(null, unaryAnswer),
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, streams, close: () => server.forceShutdown() };
}
