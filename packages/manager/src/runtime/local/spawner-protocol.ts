import type { CommandOptions, CommandResult } from '@workbay/nsinsider/exec';

/**
 * The messages between the manager and its spawner (spawner.ts, spawner-main.ts), over the helper's IPC channel.
 * Every workspace wrapper the local runtime runs is forked by that small helper process, not by the manager.
 */

/** Manager → spawner: spawn a wrapper (`id` names it in every later message). */
export interface SpawnRequest {
  readonly kind: 'spawn';
  readonly id: number;
  readonly file: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly cwd: string;
  /** Opened (appended, created 0600) for the wrapper's stdout and stderr. */
  readonly logFile: string;
  /** Gives the wrapper descriptor 3, a socket to its gate (wrapper.ts): sent to the manager with `spawned`. */
  readonly gate: boolean;
}

/** Manager → spawner: run a command to completion (nsinsider's `spawnCommand`) and answer with its result. */
export interface RunRequest {
  readonly kind: 'run';
  readonly id: number;
  readonly file: string;
  readonly args: readonly string[];
  readonly options: CommandOptions;
}

export type SpawnerRequest = SpawnRequest | RunRequest;

/** A command's result as it crosses the channel: an Error's fields are not enumerable, so they are copied. */
export type RanResult = Omit<CommandResult, 'spawnError'> & {
  readonly spawnError?: { readonly message: string; readonly code?: string };
};

/** Spawner → manager: the answer to a spawn (with the gate's socket as the message's handle), then its exit. */
export type SpawnerEvent =
  | { readonly kind: 'ran'; readonly id: number; readonly result: RanResult }
  | { readonly kind: 'spawned'; readonly id: number; readonly pid: number }
  | { readonly kind: 'failed'; readonly id: number; readonly message: string; readonly code?: string }
  | { readonly kind: 'exit'; readonly id: number; readonly code: number | null; readonly signal: string | null };

/** Bounds what the manager believes of a message from its helper (a helper that misbehaves is restarted). */
export function isSpawnerEvent(message: unknown): message is SpawnerEvent {
  if (typeof message !== 'object' || message === null) return false;
  const m = message as Record<string, unknown>;
  if (typeof m['id'] !== 'number') return false;
  switch (m['kind']) {
    case 'spawned':
      return typeof m['pid'] === 'number' && m['pid'] > 0;
    case 'failed':
      return typeof m['message'] === 'string';
    case 'ran':
      return typeof m['result'] === 'object' && m['result'] !== null;
    case 'exit':
      return (
        (m['code'] === null || typeof m['code'] === 'number') &&
        (m['signal'] === null || typeof m['signal'] === 'string')
      );
    default:
      return false;
  }
}
