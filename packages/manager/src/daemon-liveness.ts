/**
 * Watches the embedded daemon's liveness endpoint (`GET /live` on its metrics/health address). The daemon answers
 * 503 there when it can no longer do its work although its process runs (every backup worker stuck in a read or
 * write that never returns): a process supervisor that restarts only on exit would leave it so for good, every
 * owner's backups and stops failing meanwhile. After `failures` answers in a row that are not 2xx (or none within
 * the timeout), {@link LivenessWatch} calls `onDead` once.
 *
 * @module
 */
import http from 'node:http';

export interface LivenessOptions {
  /** `host:port` of the daemon's HTTP server. */
  readonly address: string;
  readonly intervalMs: number;
  /** Failed probes in a row that make the daemon dead. */
  readonly failures: number;
  /** Called once, with the last failure. */
  readonly onDead: (reason: string) => void;
}

/** The probe's answer: undefined when live, else why not. Never rejects. */
export function probeLive(address: string, timeoutMs: number): Promise<string | undefined> {
  const [host, port] = splitHostPort(address);
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/live', agent: false, timeout: timeoutMs }, (res) => {
      const status = res.statusCode ?? 0;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        // What the daemon says is short (which checks failed); a longer answer is cut, never read whole.
        if (body.length < 512) body += chunk;
        else req.destroy();
      });
      res.on('close', () =>
        resolve(status >= 200 && status < 300 ? undefined : `HTTP ${status}${body ? `: ${body.slice(0, 512)}` : ''}`),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (error) => resolve(error.message));
  });
}

function splitHostPort(address: string): [string, number] {
  const colon = address.lastIndexOf(':');
  return [address.slice(0, colon).replace(/^\[|\]$/g, ''), Number(address.slice(colon + 1))];
}

export class LivenessWatch {
  private timer: NodeJS.Timeout | undefined;
  private failed = 0;
  private stopped = false;

  constructor(private readonly options: LivenessOptions) {
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.probe(), this.options.intervalMs);
    this.timer.unref();
  }

  private async probe(): Promise<void> {
    const reason = await probeLive(this.options.address, Math.min(5_000, this.options.intervalMs));
    if (this.stopped) return;
    this.failed = reason === undefined ? 0 : this.failed + 1;
    if (reason !== undefined && this.failed >= this.options.failures) {
      this.stop();
      this.options.onDead(reason);
      return;
    }
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
