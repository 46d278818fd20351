import { spawn } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Test helpers that act as a workspace would: processes running as a workspace's host uid, in their own
 * namespaces, with the in-workspace service directory bind-mounted as the runtime does. The probe is a tiny
 * CommonJS gRPC client (raw bytes in, raw bytes out) that a non-root uid can run.
 */

const probeSource = (grpcPath: string): string => `'use strict';
const grpc = require(${JSON.stringify(grpcPath)});
const net = require('node:net');
const [, , socket, what] = process.argv;
if (what === 'connect') {
  const s = net.connect(socket);
  s.on('connect', () => { console.log(JSON.stringify({ connected: true })); s.destroy(); });
  s.on('error', (e) => console.log(JSON.stringify({ connected: false, error: e.code })));
} else {
  const calls = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
  const client = new grpc.Client('unix:' + socket, grpc.credentials.createInsecure());
  (async () => {
    const out = [];
    for (const c of calls) {
      out.push(await new Promise((resolve) => client.makeUnaryRequest(c.path, (b) => b, (b) => b,
        Buffer.from(c.hex, 'hex'), { deadline: Date.now() + 30000 },
        (err, res) => resolve(err ? { code: err.code, details: err.details } : { hex: res.toString('hex') }))));
    }
    client.close();
    console.log(JSON.stringify(out));
  })();
}
`;

/** Writes the probe into `dir` (made readable for every uid) and returns its path. */
export async function writeProbe(dir: string): Promise<string> {
  const grpcPath = createRequire(import.meta.url).resolve('@grpc/grpc-js');
  const path = join(dir, 'iws-probe.cjs');
  await writeFile(path, probeSource(grpcPath));
  await chmod(dir, 0o755);
  await chmod(path, 0o644);
  return path;
}

export interface ProbeCall {
  readonly path: string;
  readonly request: Buffer;
}

export type ProbeResult = { readonly hex: string } | { readonly code: number; readonly details: string };

export interface AsUser {
  readonly uid: number;
  readonly gid: number;
  /** Run inside this process's mount namespace (a workspace's, which has its iws directory mounted). */
  readonly mountNsOf?: number;
  /** Run in a new mount namespace with `source` bind-mounted at `target` (as the runtime mounts /.workbay). */
  readonly bind?: { readonly source: string; readonly target: string };
}

function run(
  file: string,
  args: readonly string[],
  input = '',
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    // A child that never reads (or fails early) must not turn into an EPIPE of the test process.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** argv that runs `command` as `user` (optionally inside a workspace's mount namespace). */
export function asUser(user: AsUser, command: readonly string[]): [string, string[]] {
  const drop = ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--', ...command];
  if (user.bind) {
    const script = 'dst=$1; shift; mount --bind "$0" "$dst" && exec "$@"';
    return [
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        '--',
        '/bin/sh',
        '-c',
        script,
        user.bind.source,
        user.bind.target,
        ...drop,
      ],
    ];
  }
  if (user.mountNsOf === undefined) return [drop[0]!, drop.slice(1)];
  return ['nsenter', ['--target', String(user.mountNsOf), '--mount', '--', ...drop]];
}

async function probe(probePath: string, user: AsUser, socket: string, what: string, input = ''): Promise<unknown> {
  const [file, args] = asUser(user, [process.execPath, probePath, socket, what]);
  const r = await run(file, args, input);
  if (r.code !== 0 || !r.stdout.trim()) throw new Error(`probe failed (${r.code}): ${r.stderr.slice(0, 500)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** Calls unary methods on `socket` as `user`, one after the other. */
export async function probeCalls(
  probePath: string,
  user: AsUser,
  socket: string,
  calls: readonly ProbeCall[],
): Promise<ProbeResult[]> {
  const encoded = JSON.stringify(calls.map((c) => ({ path: c.path, hex: c.request.toString('hex') })));
  return (await probe(probePath, user, socket, 'calls', encoded)) as ProbeResult[];
}

/** Opens a plain connection to `socket` as `user`: `{ connected }` or the errno code. */
export async function probeConnect(
  probePath: string,
  user: AsUser,
  socket: string,
): Promise<{ connected: boolean; error?: string }> {
  return (await probe(probePath, user, socket, 'connect')) as { connected: boolean; error?: string };
}

/** Runs a shell command as `user`; resolves with its exit code. */
export async function shellAs(user: AsUser, script: string): Promise<{ code: number | null; stderr: string }> {
  const [file, args] = asUser(user, ['/bin/sh', '-c', script]);
  return run(file, args);
}

async function uidOf(pid: number): Promise<number | undefined> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /^Uid:\s+(\d+)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

export interface WorkspaceProcess {
  /** Host pid of the workspace's init (pid 1 of its pid namespace, running as the workspace's uid). */
  readonly pid: number;
  kill(): void;
}

/**
 * Starts what the local runtime starts, reduced to what the in-workspace service sees: a process in new pid
 * and mount namespaces with `iwsDir` bind-mounted at `mountPoint`, running as `uid`/`gid`. With
 * `isolated: false` it stays in the host's namespaces (a workspace the machine could not isolate).
 */
export async function startWorkspaceProcess(options: {
  readonly uid: number;
  readonly gid: number;
  readonly iwsDir?: string;
  readonly mountPoint?: string;
  readonly isolated?: boolean;
}): Promise<WorkspaceProcess> {
  const drop = ['setpriv', `--reuid=${options.uid}`, `--regid=${options.gid}`, '--clear-groups', 'sleep', '600'];
  const child =
    options.isolated === false
      ? spawn(drop[0]!, drop.slice(1), { stdio: 'ignore' })
      : spawn(
          'unshare',
          [
            '--pid',
            '--fork',
            '--mount',
            '--propagation',
            'private',
            '--',
            '/bin/sh',
            '-c',
            'dst=$1; shift; mount --bind "$0" "$dst" && exec "$@"',
            options.iwsDir ?? '/nonexistent',
            options.mountPoint ?? '/nonexistent',
            ...drop,
          ],
          { stdio: 'ignore' },
        );
  const kill = (): void => void child.kill('SIGKILL');
  // Wait until the process runs as the workspace's uid (after the mount and setpriv's exec).
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the workspace process exited with ${child.exitCode}`);
    const candidates =
      options.isolated === false
        ? [child.pid!]
        : (await readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').catch(() => ''))
            .trim()
            .split(/\s+/)
            .filter(Boolean)
            .map(Number);
    for (const pid of candidates) {
      if ((await uidOf(pid)) === options.uid) {
        return {
          pid,
          kill: () => {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // already gone
            }
            kill();
          },
        };
      }
    }
    await sleep(20);
  }
}
