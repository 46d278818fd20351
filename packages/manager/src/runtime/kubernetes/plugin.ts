import { createPlugin } from '@workbay/api';
import type { RuntimeFactory } from '@workbay/api';
import { parseKubernetesRuntimeConfig } from './config.js';
import type { KubernetesRuntimeConfig } from './config.js';
import { KubernetesRuntime } from './kubernetes-runtime.js';

export const kubernetesRuntimeFactory: RuntimeFactory<KubernetesRuntimeConfig> = {
  kind: 'kubernetes',
  parseConfig: (raw) => parseKubernetesRuntimeConfig(raw),
  create: (config, context) => KubernetesRuntime.create({ config, logger: context.logger }),
};

/** Registers the `kubernetes` workspace runtime (one pod per workspace). */
export const kubernetesRuntimePlugin = createPlugin({
  id: 'runtime-kubernetes',
  register(registry) {
    registry.registerRuntime(kubernetesRuntimeFactory);
  },
});
