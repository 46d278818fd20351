import http from 'node:http';
import net from 'node:net';
import type { ReadinessConfig } from './config.js';

/** One readiness probe against host:port; resolves true when the workspace answers. Never rejects. */
export function probeOnce(readiness: ReadinessConfig, host: string, port: number): Promise<boolean> {
  if (readiness.kind === 'none') return Promise.resolve(true);
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(ok);
    };
    const timer = setTimeout(() => {
      cleanup();
      done(false);
    }, readiness.probeTimeoutMs);
    let cleanup: () => void;
    if (readiness.kind === 'tcp') {
      const socket = net.connect({ host, port });
      cleanup = () => socket.destroy();
      socket.once('connect', () => {
        socket.destroy();
        done(true);
      });
      socket.once('error', () => done(false));
    } else {
      const req = http.get({ host, port, path: readiness.path, agent: false }, (res) => {
        res.resume();
        done((res.statusCode ?? 500) < 500);
      });
      cleanup = () => req.destroy();
      req.once('error', () => done(false));
    }
  });
}

/**
 * Probes until the workspace answers or `signal` aborts (the process exited or the runtime closed).
 * Resolves true when ready, false when aborted.
 */
export async function waitReady(
  readiness: ReadinessConfig,
  host: string,
  port: number,
  signal: AbortSignal,
): Promise<boolean> {
  // `none`: ready once the process has survived one interval, so that a command that cannot even be executed
  // (exit 126/127 within milliseconds) is reported as a failed start, not as a workspace that ran and died.
  if (readiness.kind === 'none') {
    await pause(readiness.intervalMs, signal);
    return !signal.aborted;
  }
  const pauses = probePauses(readiness.intervalMs);
  while (!signal.aborted) {
    if (await probeOnce(readiness, host, port)) return !signal.aborted;
    await pause(pauses.next().value, signal);
  }
  return false;
}

/**
 * The pauses between readiness probes: 5 ms, then doubling up to `intervalMs`, then `intervalMs` for good. Most
 * workspaces answer within a few hundred ms of their launch, and with a flat 100 ms a process up at 60 ms was seen at
 * 100 ms. A refused connect on the host costs microseconds, so the few extra probes are free; a slow IDE is still
 * probed every intervalMs.
 */
export function* probePauses(intervalMs: number): Generator<number, never> {
  let pauseMs = Math.min(5, intervalMs);
  for (;;) {
    yield pauseMs;
    pauseMs = Math.min(pauseMs * 2, intervalMs);
  }
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}
