/**
 * The spawner: a small process, started by the local runtime, that forks every workspace wrapper for it (see
 * spawner.ts for why), and runs the system tools the manager's runtime needs (ip, nft, nsenter: nsinsider's
 * commands) to completion. It reads requests from its IPC channel, spawns, and reports each wrapper's pid and exit. The
 * gate of a wrapper spawned ahead of its start goes to the manager with the pid, and this process keeps no copy:
 * the manager alone can open it, and a manager that ends (even SIGKILLed) closes it, so that wrapper exits 125
 * before running anything.
 *
 * It lives only as long as its manager: when the channel closes, it exits. Running wrappers are in sessions of
 * their own and carry on; the next manager adopts them. It ignores the terminal's and the service manager's stop
 * signals for the same reason: the manager decides when it goes, by going itself.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import type { Socket } from 'node:net';
import { spawnCommand } from '@workbay/nsinsider/exec';
import type { RunRequest, SpawnerEvent, SpawnerRequest, SpawnRequest } from './spawner-protocol.js';

function send(event: SpawnerEvent, handle?: Socket): void {
  // Deliberate: a channel already closed means the manager is gone; the disconnect handler ends this process.
  if (process.connected) process.send?.(event, handle, {}, () => undefined);
  // Not kept here once sent (keepOpen is off): where the channel is gone, it closes now, and the gate with it.
  else handle?.destroy();
}

function spawnWrapper(request: SpawnRequest): void {
  let child: ChildProcess;
  let log: number | undefined;
  try {
    log = openSync(request.logFile, 'a', 0o600);
    child = spawn(request.file, [...request.args], {
      cwd: request.cwd,
      env: { ...request.env },
      detached: true,
      stdio: ['ignore', log, log, ...(request.gate ? (['pipe'] as const) : [])],
    });
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    send({ kind: 'failed', id: request.id, message: e.message, ...(e.code ? { code: e.code } : {}) });
    return;
  } finally {
    if (log !== undefined) closeSync(log);
  }
  const id = request.id;
  const gate = request.gate ? (child.stdio[3] as Socket) : undefined;
  let spawned = false;
  child.once('spawn', () => {
    spawned = true;
    send({ kind: 'spawned', id, pid: child.pid! }, gate);
  });
  child.once('error', (error: NodeJS.ErrnoException) => {
    if (spawned) return; // after the spawn only kill() errs, and this process never signals a wrapper
    gate?.destroy();
    send({ kind: 'failed', id, message: error.message, ...(error.code ? { code: error.code } : {}) });
  });
  child.once('exit', (code, signal) => send({ kind: 'exit', id, code, signal }));
}

function runCommand(request: RunRequest): void {
  void spawnCommand(request.file, request.args, request.options).then(({ spawnError, ...result }) =>
    send({
      kind: 'ran',
      id: request.id,
      result: {
        ...result,
        ...(spawnError
          ? { spawnError: { message: spawnError.message, ...(spawnError.code ? { code: spawnError.code } : {}) } }
          : {}),
      },
    }),
  );
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => undefined);
process.on('message', (message: SpawnerRequest) => {
  if (message.kind === 'run') runCommand(message);
  else spawnWrapper(message);
});
process.on('disconnect', () => process.exit(0));
