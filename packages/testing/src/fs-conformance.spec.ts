import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PluginHost } from '@workbay/api';
// eslint-disable-next-line @nx/enforce-module-boundaries -- a spec, never shipped: the kit itself loads the daemon lazily
import { fsStoragePlugin } from '@workbay/daemon';
import { runStorageConformance } from './conformance.js';

// The daemon's built-in `fs` backend, created the way a host does it: through its plugin and config.
runStorageConformance('fs (daemon built-in)', async () => {
  const root = mkdtempSync(join(tmpdir(), 'workbay-fs-conformance-'));
  const storage = await new PluginHost().use(fsStoragePlugin).createStorage('fs', { kind: 'fs', root });
  return {
    storage,
    cleanup: async () => {
      rmSync(root, { recursive: true, force: true });
    },
  };
});
