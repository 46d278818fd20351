import net from 'node:net';

/** True when nothing on this machine listens on `port` (checked by binding it on all addresses, then letting go). */
export function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A port the kernel just handed out as free. */
export function ephemeralPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port: 0, host: '0.0.0.0', exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Hands out host ports for workspace IDE ports. Every workspace asks for the same port (the manager's IDE port),
 * so the first one gets it and the rest get a free one; ports reserved for live instances are never handed out
 * twice, even before the workspace has bound them.
 */
export class PortAllocator {
  private readonly reserved = new Map<number, string>();

  async allocate(owner: string, wanted: number): Promise<number> {
    if (wanted > 0 && !this.reserved.has(wanted) && (await isPortFree(wanted))) {
      return this.reserve(owner, wanted);
    }
    for (let attempt = 0; attempt < 20; attempt++) {
      const port = await ephemeralPort();
      if (!this.reserved.has(port)) return this.reserve(owner, port);
    }
    throw new Error('no free port found');
  }

  /** Marks a port as used by an adopted instance. */
  reserve(owner: string, port: number): number {
    this.reserved.set(port, owner);
    return port;
  }

  release(owner: string): void {
    for (const [port, holder] of this.reserved) if (holder === owner) this.reserved.delete(port);
  }
}
