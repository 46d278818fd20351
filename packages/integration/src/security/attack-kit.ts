/**
 * Small tools the attack specs share: the outcome of a gRPC call as plain data, marker files and evil scripts
 * that a successful attack would leave behind, raw HTTP against the proxy, crafted tar archives.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Workbay } from './harness.js';

export const execFileAsync = promisify(execFile);

/** gRPC status codes by number (kept here so the suite needs no direct grpc-js dependency). */
export const grpcCodeNames = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;
export const UNKNOWN = 2;
export const INVALID_ARGUMENT = 3;
export const INTERNAL = 13;

/** What a gRPC call came back with, as plain data (assertion messages then show it whole). */
export interface CallOutcome {
  readonly ok: boolean;
  /** Numeric gRPC status (OK = 0). */
  readonly code: number;
  readonly codeName: string;
  readonly message: string;
  readonly field?: string;
  readonly value?: unknown;
}

/** Runs a call and captures its outcome instead of throwing. */
export async function outcome<T>(call: Promise<T>): Promise<CallOutcome> {
  try {
    const value = await call;
    return { ok: true, code: 0, codeName: 'OK', message: '', value };
  } catch (error) {
    const e = error as { message?: string; field?: string; cause?: { code?: unknown; details?: unknown } };
    const raw = typeof e.cause?.code === 'number' ? e.cause.code : -1;
    const details = typeof e.cause?.details === 'string' ? e.cause.details : (e.message ?? String(error));
    return {
      ok: false,
      code: raw,
      codeName: grpcCodeNames[raw] ?? 'CLIENT_SIDE',
      message: details,
      ...(e.field ? { field: e.field } : {}),
    };
  }
}

/** Short form for assertion messages. */
export const show = (o: CallOutcome): string =>
  o.ok ? 'OK' : `${o.codeName}${o.field ? ` [${o.field}]` : ''}: ${o.message.slice(0, 300)}`;

/** A refusal that names the problem: non-OK, a sensible code (never UNKNOWN/INTERNAL), a short non-empty message. */
export function isSensibleRefusal(o: CallOutcome): boolean {
  return (
    !o.ok &&
    o.code !== UNKNOWN &&
    o.code !== INTERNAL &&
    o.code > 0 &&
    o.message.trim().length > 0 &&
    o.message.length <= 1024
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Markers

/** Path of the marker a successful attack `name` would create (outside every content dir). */
export const markerPath = (wb: Workbay, name: string): string => path.join(wb.markers, name);

/**
 * Writes an executable script that creates the marker for `name` (and records who ran it); returns its path.
 * World-readable in a world-traversable directory, so it would run as any uid an attack gets.
 */
export async function evilScript(wb: Workbay, name: string): Promise<string> {
  const dir = path.join(wb.dir, 'evil');
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o755);
  const file = path.join(dir, `${name}.sh`);
  await writeFile(file, `#!/bin/sh\nid > '${markerPath(wb, name)}'\nexit 0\n`);
  await chmod(file, 0o755);
  return file;
}

/** A hooks directory whose every command-running hook creates the marker for `name`. */
export async function evilHooksDir(wb: Workbay, name: string): Promise<string> {
  const dir = path.join(wb.dir, 'evil', `${name}-hooks`);
  await mkdir(dir, { recursive: true });
  await chmod(path.join(wb.dir, 'evil'), 0o755);
  await chmod(dir, 0o755);
  const hooks = [
    'post-checkout',
    'post-merge',
    'post-rewrite',
    'reference-transaction',
    'pre-commit',
    'post-commit',
    'pre-auto-gc',
    'fsmonitor-watchman',
    'post-index-change',
    'pre-push',
    'push-to-checkout',
  ];
  for (const hook of hooks) {
    const file = path.join(dir, hook);
    await writeFile(file, `#!/bin/sh\nid > '${markerPath(wb, name)}'\nexit 0\n`);
    await chmod(file, 0o755);
  }
  return dir;
}

export const markerExists = (wb: Workbay, name: string): boolean => existsSync(markerPath(wb, name));

// ---------------------------------------------------------------------------------------------------------------
// Raw HTTP

export interface RawResponse {
  readonly status: number;
  readonly headers: string;
  readonly raw: string;
}

/** Sends raw bytes to host:port and collects what comes back until the peer closes (or `waitMs` of silence). */
export function rawHttp(address: string, request: string | Buffer, waitMs = 3000): Promise<RawResponse> {
  const [host, port] = splitAddress(address);
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    let data = '';
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      clearTimeout(timer);
      socket.destroy();
      const head = data.split('\r\n\r\n')[0] ?? '';
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, headers: head, raw: data });
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(finish, waitMs);
    };
    socket.on('connect', () => {
      socket.write(request);
      arm();
    });
    socket.on('data', (d: Buffer) => {
      data += d.toString('latin1');
      arm();
    });
    socket.on('error', finish);
    socket.on('close', finish);
  });
}

export function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(address.slice(i + 1))];
}

/** A fetch that never throws: status 0 when the connection failed. */
export async function tryFetch(url: string, init: RequestInit = {}): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(url, { redirect: 'manual', ...init, signal: AbortSignal.timeout(15_000) });
    return { status: res.status, body: await res.text() };
  } catch (error) {
    return { status: 0, body: String(error) };
  }
}

/** The manager's maintenance state as the ops endpoint reports it. */
export async function maintenanceState(wb: Workbay): Promise<string> {
  return (await tryFetch(`http://${wb.metricsAddress}/admin/maintenance`)).body;
}

// ---------------------------------------------------------------------------------------------------------------
// Archives

/** Runs GNU tar (as root: devices, owners and modes are kept as given). */
export async function tar(args: readonly string[], cwd?: string): Promise<void> {
  await execFileAsync('tar', [...args], { cwd, maxBuffer: 16 * 1024 * 1024 });
}

/** Every string that could carry `secret` in a text: itself, URI-encoded, base64, and base64 of `user:secret`. */
export function secretSpellings(secret: string): string[] {
  return [
    secret,
    encodeURIComponent(secret),
    Buffer.from(secret).toString('base64').replace(/=+$/, ''),
    Buffer.from(secret).toString('hex'),
  ];
}

/** Decodes percent-escapes repeatedly (tolerant of broken ones), for leak checks of every escaping. */
export function deepDecode(text: string): string {
  let current = text;
  for (let i = 0; i < 4; i++) {
    const next = current.replace(/(%[0-9a-fA-F]{2})+/g, (m) => {
      try {
        return decodeURIComponent(m);
      } catch {
        return m;
      }
    });
    if (next === current) break;
    current = next;
  }
  return current.replace(/\+/g, ' ');
}
