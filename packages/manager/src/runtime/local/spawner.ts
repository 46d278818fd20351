/**
 * Workspace wrappers, and the system tools of the workspaces' networks (nsinsider's `ip`, `nft`, `nsenter`, routed
 * here while the runtime is open: about eight per isolated start), are forked by a small helper process
 * (spawner-main.ts), not by the manager.
 *
 * Node's `spawn()` forks the calling process, synchronously: the time grows with the caller's memory (the kernel
 * copies its page tables and write-protects every page). Measured here: 2.2 ms from a 43 MB process, 31 ms from
 * 245 MB and 83 ms from 851 MB (`/bin/true`, p50 of 15). A manager holds every workspace's record, status stream and
 * proxied connection, so its event loop, and every RPC and proxied request with it, stood still that long at each
 * workspace start, longer as the node filled. The helper stays at the size of a bare Node process: its fork costs
 * the same whatever the manager holds, and the manager only sends it a message.
 *
 * The helper is started with the runtime, and again at the next spawn after it died. While it runs it is the wrappers' parent and
 * reports their exits; a helper that dies leaves its wrappers running (each is in a session of its own), and the
 * runtime then watches them as it watches wrappers adopted after a manager restart ({@link SpawnedWrapper}'s
 * `detached`). The gate of a wrapper spawned ahead of its start is the manager's alone (the helper hands it over
 * with the pid), as it was when the manager forked: opening it costs no message, and a manager that ends closes
 * it.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import { FailedPreconditionError } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import { builtScript } from './built-scripts.js';
import { isSpawnerEvent } from './spawner-protocol.js';
import type { RanResult, SpawnerEvent, SpawnerRequest } from './spawner-protocol.js';
import type { CommandOptions, CommandResult } from '@workbay/nsinsider';
import type { WrapperInvocation } from './wrapper.js';

/**
 * A wrapper the spawner runs, as the runtime sees it: `exit` (code, signal) once when it ends, or `detached` once
 * when the spawner died first (no exit will be reported; the runtime polls the process instead).
 */
export class SpawnedWrapper extends EventEmitter<{
  exit: [code: number | null, signal: NodeJS.Signals | null];
  detached: [];
}> {
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  /** The spawner is gone: whatever happens to the process is no longer reported. */
  detached = false;
  private gateUsed = false;

  /** `gate`: this process's end of the wrapper's gate (wrapper.ts), for a wrapper spawned with one. */
  constructor(
    readonly pid: number,
    private readonly gate: Socket | undefined,
  ) {
    super();
    if (gate) {
      // Nothing keeps the manager running for a wrapper that waits: a manager that ends closes the gate.
      gate.unref();
      // Deliberate: a gate that fails (the wrapper died) is seen as not waiting; the start spawns anew.
      gate.on('error', () => undefined);
    }
  }

  /** Whether the wrapper still waits at its gate: not opened or closed yet, and known not to have exited. */
  get waiting(): boolean {
    return (
      this.gate !== undefined &&
      !this.gateUsed &&
      !this.gate.destroyed &&
      this.exitCode === null &&
      this.signalCode === null
    );
  }

  /** Lets a gated wrapper run (`go`); false when it no longer {@link waiting waits}. */
  openGate(): boolean {
    if (!this.waiting) return false;
    this.gateUsed = true;
    this.gate!.end('go\n');
    return true;
  }

  /** Closes a gate unopened: the wrapper exits 125 without running anything. */
  closeGate(): void {
    if (!this.waiting) return;
    this.gateUsed = true;
    this.gate!.destroy();
  }

  /** @internal From the spawner. */
  exited(code: number | null, signal: string | null): void {
    if (this.detached || this.exitCode !== null || this.signalCode !== null) return;
    this.exitCode = code;
    this.signalCode = signal as NodeJS.Signals | null;
    this.gate?.destroy();
    this.emit('exit', this.exitCode, this.signalCode);
  }

  /** @internal The spawner died while the wrapper ran (or waited: its gate is this process's, and still works). */
  lost(): void {
    if (this.detached || this.exitCode !== null || this.signalCode !== null) return;
    this.detached = true;
    this.emit('detached');
  }
}

interface PendingSpawn {
  readonly kind: 'spawn';
  readonly gated: boolean;
  readonly resolve: (wrapper: SpawnedWrapper) => void;
  readonly reject: (error: Error) => void;
}

interface PendingRun {
  readonly kind: 'run';
  readonly resolve: (result: CommandResult) => void;
}

/** What a command whose spawner went away (or could not be asked) reports: it was not seen to finish. */
function unanswered(message: string): CommandResult {
  const spawnError = Object.assign(new Error(message), { code: 'ECHILD' }) as NodeJS.ErrnoException;
  return { stdout: '', stderr: '', exitCode: null, signal: null, timedOut: false, spawnError };
}

export class WrapperSpawner {
  private helper: ChildProcess | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, PendingSpawn | PendingRun>();
  private readonly running = new Map<number, SpawnedWrapper>();
  private closed = false;

  constructor(private readonly logger: PluginLogger) {}

  /**
   * Spawns a wrapper in its own session, its output appended to `logFile`, in `cwd`; with `gate`, it waits at its
   * gate (wrapper.ts) until {@link SpawnedWrapper.openGate}. Resolves once the process exists.
   */
  spawn(
    invocation: WrapperInvocation,
    options: { readonly cwd: string; readonly logFile: string; readonly gate?: boolean },
  ): Promise<SpawnedWrapper> {
    if (this.closed) return Promise.reject(new FailedPreconditionError('the local runtime is closed'));
    const gate = options.gate === true;
    return new Promise<SpawnedWrapper>((resolve, reject) =>
      this.ask({ kind: 'spawn', gated: gate, resolve, reject }, (id) => ({
        kind: 'spawn',
        id,
        file: invocation.file,
        args: invocation.args,
        env: invocation.env,
        cwd: options.cwd,
        logFile: options.logFile,
        gate,
      })),
    );
  }

  /** Runs a system tool to completion in the helper (nsinsider's commands are routed here); never rejects. */
  run(file: string, args: readonly string[], options: CommandOptions): Promise<CommandResult> {
    if (this.closed) return Promise.resolve(unanswered('the local runtime is closed'));
    return new Promise<CommandResult>((resolve) => {
      try {
        this.ask({ kind: 'run', resolve }, (id) => ({ kind: 'run', id, file, args, options }));
      } catch (error) {
        // The helper could not even be forked (out of processes or descriptors): a command that did not start.
        resolve(unanswered(`the spawner could not be started: ${String(error)}`));
      }
    });
  }

  /** Sends the request `make` builds under a new id, its answer going to `pending`. */
  private ask(pending: PendingSpawn | PendingRun, make: (id: number) => SpawnerRequest): void {
    const helper = this.ensureHelper();
    const id = this.nextId++;
    this.pending.set(id, pending);
    this.refresh();
    this.post(helper, make(id));
  }

  /**
   * Starts the helper now rather than at the first spawn: its fork of the manager and its Node start-up (about
   * 50 ms) then come before any workspace's start, while the manager is still small.
   */
  warm(): void {
    if (!this.closed) this.ensureHelper();
  }

  /** Ends the helper; the wrappers carry on (gates still shut are the runtime's to open or close). */
  close(): void {
    this.closed = true;
    this.helper?.disconnect();
  }

  /** Starts the helper (again, after it died). */
  private ensureHelper(): ChildProcess {
    if (this.helper) return this.helper;
    const helper = spawn(process.execPath, [builtScript('spawner-main.js')], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.helper = helper;
    helper.unref();
    helper.on('message', (message, handle) => this.onEvent(message, handle));
    // The reasons a helper goes away all end in 'exit' or 'error' (it could not be started): one cleanup.
    helper.once('error', (error) => this.onHelperGone(helper, { err: error }));
    helper.once('exit', (code, signal) => this.onHelperGone(helper, { code, signal }));
    return helper;
  }

  private post(helper: ChildProcess, request: SpawnerRequest): void {
    // Deliberate: a send that fails means the helper is gone, which its 'exit' handles for every request.
    if (helper.connected) helper.send(request, undefined, {}, () => undefined);
  }

  /** Keeps the manager's event loop alive only while a spawn waits for its answer. */
  private refresh(): void {
    const channel = this.helper?.channel;
    if (!channel) return;
    if (this.pending.size > 0) channel.ref();
    else channel.unref();
  }

  private onEvent(message: unknown, handle: unknown): void {
    const gate = handle instanceof Socket ? handle : undefined;
    if (!isSpawnerEvent(message)) {
      gate?.destroy();
      this.logger.error({ message: JSON.stringify(message)?.slice(0, 200) }, 'the spawner sent an unknown message');
      return;
    }
    const event: SpawnerEvent = message;
    if (event.kind === 'exit') {
      const wrapper = this.running.get(event.id);
      this.running.delete(event.id);
      wrapper?.exited(event.code, event.signal);
      return;
    }
    const pending = this.pending.get(event.id);
    if (!pending) {
      gate?.destroy();
      return;
    }
    this.pending.delete(event.id);
    this.refresh();
    if (pending.kind === 'run') {
      gate?.destroy();
      if (event.kind !== 'ran') pending.resolve(unanswered(`the spawner answered a command with '${event.kind}'`));
      else pending.resolve(commandResult(event.result));
      return;
    }
    if (event.kind === 'ran') {
      gate?.destroy();
      pending.reject(new Error('the spawner answered a spawn with a command result'));
      return;
    }
    if (event.kind === 'failed') {
      pending.reject(Object.assign(new Error(event.message), event.code ? { code: event.code } : {}));
      return;
    }
    if (pending.gated && !gate) {
      // Its gate never reached this process: the wrapper already saw it close, and exits without running anything.
      pending.reject(new Error(`the gate of wrapper ${event.pid} did not arrive from the spawner`));
      return;
    }
    if (!pending.gated) gate?.destroy();
    const wrapper = new SpawnedWrapper(event.pid, pending.gated ? gate : undefined);
    this.running.set(event.id, wrapper);
    pending.resolve(wrapper);
  }

  private onHelperGone(helper: ChildProcess, why: Record<string, unknown>): void {
    if (this.helper !== helper) return;
    this.helper = undefined;
    if (!this.closed) this.logger.error(why, 'the wrapper spawner is gone; the next start starts it again');
    for (const pending of this.pending.values()) {
      if (pending.kind === 'run') pending.resolve(unanswered('the spawner exited before the command ended'));
      else pending.reject(new Error('the wrapper spawner exited'));
    }
    this.pending.clear();
    for (const wrapper of this.running.values()) wrapper.lost();
    this.running.clear();
  }
}

/** A command's result as the channel carried it, its spawn error an Error again. */
function commandResult(ran: RanResult): CommandResult {
  const { spawnError, ...result } = ran;
  if (!spawnError) return result;
  const error = Object.assign(new Error(spawnError.message), spawnError.code ? { code: spawnError.code } : {});
  return { ...result, spawnError: error as NodeJS.ErrnoException };
}
