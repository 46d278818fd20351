import type { Command } from 'commander';
import { CliError, ExitCode } from '../exit-codes.js';
import type { ActionWrapper } from '../program.js';

/** What `startEmbedded()` (src/embedded.ts) hands back. */
export interface EmbeddedHandle {
  readonly managerAddress: string;
  readonly proxyAddress: string;
  readonly metricsAddress: string;
  stop(): Promise<void>;
}

export type StartEmbedded = (options: { configPath?: string }) => Promise<EmbeddedHandle>;

/** Loads the embedded entry point lazily, so that every other command starts fast and works without it. */
async function loadStartEmbedded(): Promise<StartEmbedded> {
  // dist/cli/commands/up.js → dist/embedded.js
  const specifier = '../../embedded.js';
  const module = (await import(specifier)) as { startEmbedded?: StartEmbedded };
  if (typeof module.startEmbedded !== 'function') {
    throw new CliError(
      'this build of @workbay/manager has no embedded mode (startEmbedded is missing)',
      ExitCode.other,
    );
  }
  return module.startEmbedded;
}

export function registerUpCommand(program: Command, wrap: ActionWrapper): void {
  program
    .command('up')
    .description('run manager, daemon and filesystem storage on this machine until Ctrl+C (the embedded default)')
    .option('--config <file>', 'config file (YAML or JSON; env WORKBAY_CONFIG); none needed for the defaults')
    .action(
      wrap(async (ctx, flags) => {
        const { config } = flags as { config?: string };
        const startEmbedded = await loadStartEmbedded();
        const handle = await startEmbedded({ configPath: config ?? ctx.io.env['WORKBAY_CONFIG'] });
        if (ctx.json) {
          ctx.printJson(
            {
              managerAddress: handle.managerAddress,
              proxyAddress: handle.proxyAddress,
              metricsAddress: handle.metricsAddress,
            },
            false,
          );
        } else {
          ctx.out(
            'Workbay is up.\n' +
              `  manager (gRPC)  ${handle.managerAddress}\n` +
              `  port proxy      ${handle.proxyAddress}\n` +
              `  metrics         ${handle.metricsAddress}\n` +
              `Try: workbay --address ${handle.managerAddress} start --wait\n` +
              'Press Ctrl+C to stop.\n',
          );
        }
        const signal = ctx.io.signal;
        await new Promise<void>((resolve) => {
          if (!signal || signal.aborted) return resolve();
          signal.addEventListener('abort', () => resolve(), { once: true });
        });
        ctx.err('Stopping Workbay…\n');
        await handle.stop();
        ctx.err('Workbay stopped.\n');
      }),
    );
}
