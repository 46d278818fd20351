import { createPlugin } from '@workbay/api';
import type { RuntimeFactory } from '@workbay/api';
import { parseLocalRuntimeConfig } from './config.js';
import type { LocalRuntimeConfig } from './config.js';
import { LocalRuntime } from './local-runtime.js';

/** Creates `local` runtimes from the `runtime.local` config section. */
export const localRuntimeFactory: RuntimeFactory<LocalRuntimeConfig> = {
  kind: 'local',
  parseConfig: (raw) => parseLocalRuntimeConfig(raw),
  create: (config, context) => LocalRuntime.create({ config, logger: context.logger }),
};

/** Registers the `local` workspace runtime (processes on this machine). */
export const localRuntimePlugin = createPlugin({
  id: 'runtime-local',
  register(registry) {
    registry.registerRuntime(localRuntimeFactory);
  },
});
