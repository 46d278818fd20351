/**
 * The leader's sweep of workspace Secrets that no Workspace object names: each start creates its own Secret before
 * its object (see workspace-objects.ts), so a replica that dies between the two, or a start whose object lost to a
 * concurrent start of the same id and whose own delete failed, leaves one behind. It holds an owner token and
 * credentials, so it must not stay. A start's Secret is nameless for as long as its object create takes (seconds
 * at worst), far below the grace a Secret gets before it counts as left behind.
 *
 * @module
 */
import type { V1Secret } from '@kubernetes/client-node';
import type { Logger } from '../../logger.js';
import { instanceIdOf, objectNameOf, secretNameFor } from './workspace-objects.js';
import type { WorkspaceObject } from './workspace-objects.js';

export interface SecretSweeperOptions {
  /** The workspace Secrets the informer holds. */
  readonly secrets: () => readonly V1Secret[];
  /** The Workspace object of that name, from the informer. */
  readonly object: (name: string) => WorkspaceObject | undefined;
  readonly deleteSecret: (name: string) => void;
  /** How old a Secret no object names must be before it is deleted. */
  readonly graceMs: number;
  readonly intervalMs: number;
  readonly logger: Logger;
  readonly now?: () => number;
}

export class SecretSweeper {
  private timer?: NodeJS.Timeout;

  constructor(private readonly options: SecretSweeperOptions) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.sweep(), this.options.intervalMs);
    // The sweep is housekeeping: it must not keep a stopping process alive.
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Deletes the Secrets left behind; returns their names. */
  sweep(): string[] {
    const now = (this.options.now ?? Date.now)();
    const swept: string[] = [];
    for (const secret of this.options.secrets()) {
      const name = secret.metadata?.name;
      const created = new Date(secret.metadata?.creationTimestamp ?? now).getTime();
      if (!name || !(now - created >= this.options.graceMs)) continue;
      const id = instanceIdOf(secret.metadata ?? {});
      const object = id ? this.options.object(objectNameOf(id)) : undefined;
      if (object && secretNameFor(object) === name) continue;
      this.options.logger.warn(
        { secret: name, workspace: id },
        'deleting a workspace Secret no Workspace object names',
      );
      this.options.deleteSecret(name);
      swept.push(name);
    }
    return swept;
  }
}
