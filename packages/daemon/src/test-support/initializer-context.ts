/** TEST ONLY: an initializer context over a fresh content directory, as the network specs build it. */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import { Git } from '../git/git.js';
import type { DownloadPolicy } from '../initializer/address-policy.js';
import type { InitializerContext } from '../initializer/context.js';
import type { EgressRules } from '../initializer/upstream-proxy.js';

let made = 0;

/**
 * Makes `<scratch>/content<n>` and a context for it: git's egress rules `addresses`, the download policy `download`,
 * short retries (`maxElapsedMs`, default 2 s) so that a refused or failing remote ends a spec quickly.
 */
export async function initializerContext(
  scratch: string,
  options: {
    readonly addresses?: EgressRules;
    readonly download?: DownloadPolicy;
    readonly logger?: PluginLogger;
    readonly maxElapsedMs?: number;
  } = {},
): Promise<InitializerContext> {
  const n = ++made;
  const root = join(scratch, `content${n}`);
  await mkdir(root);
  return {
    root,
    git: new Git(join(scratch, 'tmp'), options.addresses ? { addresses: options.addresses } : {}),
    owner: 'o',
    workspaceId: `w${n}`,
    logger: options.logger ?? silentLogger,
    gitRetry: { initialDelayMs: 10, maxElapsedMs: options.maxElapsedMs ?? 2_000 },
    downloadTimeoutMs: 5_000,
    ...(options.download ? { download: options.download } : {}),
  };
}
