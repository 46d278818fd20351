/**
 * Hands out host ports for workspace IDEs from a configured range: a port is given out if no live workspace
 * holds it and nothing on the host listens on it (checked by binding it briefly).
 *
 * @module
 */
import { createServer } from 'node:net';
import { ResourceExhaustedError } from '@workbay/api';

function isFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

export class PortAllocator implements IdePorts {
  private next: number;
  private readonly reserved = new Set<number>();

  constructor(
    private readonly from: number,
    private readonly to: number,
    private readonly host = '127.0.0.1',
  ) {
    this.next = from;
  }

  /** Marks a port as taken (a re-adopted workspace's port). */
  reserve(port: number): void {
    this.reserved.add(port);
  }

  release(port: number): void {
    this.reserved.delete(port);
  }

  /** A free port, reserved until released. Round-robin, so a just-released port is not reused at once. */
  async allocate(): Promise<number> {
    const size = this.to - this.from + 1;
    for (let i = 0; i < size; i += 1) {
      const port = this.next;
      this.next = port >= this.to ? this.from : port + 1;
      if (this.reserved.has(port)) continue;
      // Reserve before the async check so that concurrent allocations never pick the same port.
      this.reserved.add(port);
      if (await isFree(port, this.host)) return port;
      this.reserved.delete(port);
    }
    throw new ResourceExhaustedError(`no free IDE port in ${this.from}-${this.to}; raise idePorts in the config`);
  }
}

/**
 * Ports for a runtime whose instances each have their own address: every instance gets the same IDE port, and
 * nothing is held (a thousand pods do not exhaust a range meant for one host).
 */
export class FixedPort implements IdePorts {
  constructor(private readonly port: number) {}
  reserve(): void {}
  release(): void {}
  async allocate(): Promise<number> {
    return this.port;
  }
}

/** What the lifecycle needs of IDE ports. */
export interface IdePorts {
  reserve(port: number): void;
  release(port: number): void;
  allocate(): Promise<number>;
}
