import type { PluginLogger } from '@workbay/api';
import type { BackupStore } from '../backup/backup-store.js';
import type { Git } from '../git/git.js';
import { SafeTreeWriter } from '../archive/safe-writer.js';
import { InvalidArgumentError, isWorkbayError } from '../errors.js';
import { resolveInside } from '../util/paths.js';
import type { DownloadPolicy } from './address-policy.js';
import type { InitProgressSink } from './progress.js';

/** What an initializer gets to do its work. */
export interface InitializerContext {
  /** The workspace's content directory. */
  readonly root: string;
  readonly git: Git;
  /** Remote storage access; undefined when the workspace has remote storage disabled. */
  readonly backups?: BackupStore;
  /** Owner and workspace (meta) id: where this workspace's backups live. */
  readonly owner: string;
  readonly workspaceId: string;
  readonly logger: PluginLogger;
  readonly signal?: AbortSignal;
  readonly gitRetry: { readonly initialDelayMs: number; readonly maxElapsedMs: number };
  readonly downloadTimeoutMs: number;
  /**
   * Where downloads and one-time git secret fetches may connect, how large and how many redirects (the daemon's
   * `initializer.download` config). Undefined: the defaults, which refuse loopback, private and link-local
   * addresses.
   */
  readonly download?: DownloadPolicy;
  /** Where steps that retry report their attempts (the InitProgress RPC); undefined: nobody asks. */
  readonly progress?: InitProgressSink;
  /**
   * The workspace's host identity when the daemon runs as root (isolation contract): everything an initializer
   * writes must end up owned by it (git clones run as it, restores write as it). Undefined: not root, content
   * stays owned by the daemon's user.
   */
  readonly workspaceUser?: { readonly uid: number; readonly gid: number };
}

/**
 * Resolves a location inside the workspace for writing: no absolute paths or `..` (INVALID_ARGUMENT naming
 * `field`), and no symlinks on the way (an earlier initializer's content must not redirect writes outside).
 * Missing directories are created.
 */
export async function safeLocation(root: string, relative: string, field: string): Promise<string> {
  const absolute = resolveInside(root, relative, field);
  if (absolute === root) return root;
  const writer = new SafeTreeWriter(root);
  try {
    const { absolute: prepared } = await writer.prepare(`${relative.replace(/\/+$/, '')}/.probe`);
    return prepared.slice(0, -'/.probe'.length);
  } catch (error) {
    if (isWorkbayError(error, 'invalid-argument'))
      throw new InvalidArgumentError(field, error.message, { cause: error });
    throw error;
  }
}
