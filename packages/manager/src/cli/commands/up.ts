import type { Command } from 'commander';
import { Option } from 'commander';
import { isWorkbayError } from '@workbay/api';
import { CliError, ExitCode, exitCodeFor } from '../exit-codes.js';
import type { ActionWrapper } from '../program.js';

const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export function registerUpCommand(program: Command, wrap: ActionWrapper): void {
  program
    .command('up')
    .description('run manager, daemon and filesystem storage on this machine until Ctrl+C (the embedded default)')
    .option('--config <file>', 'config file (YAML or JSON; env WORKBAY_CONFIG); none needed for the defaults')
    .addOption(
      new Option('--log-level <level>', 'log level (logs go to stderr; default from the config)').choices(logLevels),
    )
    .action(
      wrap(async (ctx, flags) => {
        const f = flags as { config?: string; logLevel?: (typeof logLevels)[number] };
        // Loaded lazily: every other command starts fast without the whole manager.
        const [{ startEmbedded }, { loadManagerConfig }, { createLogger }] = await Promise.all([
          import('../../embedded.js'),
          import('../../config.js'),
          import('../../logger.js'),
        ]);
        const configPath = f.config ?? ctx.io.env['WORKBAY_CONFIG'];
        const overrides = f.logLevel ? { log: { level: f.logLevel } } : {};
        const config = await loadManagerConfig(configPath, overrides).catch(startupError);
        // Logs on stderr keep stdout for what `up` reports (and for --json).
        const logger = createLogger({ level: config.log.level, destination: process.stderr });
        const handle = await startEmbedded({ configPath, overrides, logger }).catch(startupError);
        // The manager's own TCP buffers get a cap of their own (local runtime, cgroup v1): the port proxy's
        // connections must not hold the node's TCP memory (manager-tcp.ts). Its daemon goes with it, as a daemon the
        // manager restarts later is born there (red team round 17b, M2).
        const runtime = handle.manager.runtime as {
          confineManagerTcp?: (
            alsoPids: readonly number[],
          ) => Promise<{ bytes: number; pressure?: () => Promise<number> } | undefined>;
        };
        const daemonPid = handle.daemonPid;
        const budget = await runtime.confineManagerTcp?.(daemonPid === undefined ? [] : [daemonPid]);
        // One budget for every proxied connection: transfers that hold it without using it are reset under pressure,
        // measured by the cap where the kernel enforces one, else by what the proxy's own connections hold.
        const pressure = budget?.pressure;
        if (budget) {
          handle.manager.proxy?.shedTransfers({ budgetBytes: budget.bytes, ...(pressure ? { pressure } : {}) });
        }
        const addresses = {
          managerAddress: handle.managerAddress,
          proxyAddress: handle.proxyAddress,
          metricsAddress: handle.metricsAddress,
          daemonAddress: handle.daemonAddress,
        };
        if (ctx.json) {
          ctx.printJson(addresses, false);
        } else {
          ctx.out(
            'Workbay is up.\n' +
              `  manager (gRPC)  ${handle.managerAddress}\n` +
              `  daemon (gRPC)   ${handle.daemonAddress}\n` +
              `  port proxy      ${handle.proxyAddress ? `http://${handle.proxyAddress}` : 'off'}\n` +
              `  metrics         ${handle.metricsAddress ? `http://${handle.metricsAddress}/metrics` : 'off'}\n` +
              isolationLine(handle.manager.runtime) +
              `Try: workbay${handle.managerAddress === '127.0.0.1:7720' ? '' : ` --address ${handle.managerAddress}`} start --wait\n` +
              'Press Ctrl+C to stop (running workspaces keep running and are re-adopted by the next `workbay up`).\n',
          );
        }
        const signal = ctx.io.signal;
        await new Promise<void>((resolve) => {
          if (!signal || signal.aborted) return resolve();
          signal.addEventListener('abort', () => resolve(), { once: true });
        });
        ctx.err('Stopping Workbay…\n');
        await handle.stop();
        logger.flush();
        ctx.err('Workbay stopped.\n');
      }),
    );
}

/**
 * What `up` failed with, said as what it is: a config error (its file and key; exit 1) or a start that failed.
 * Not "cannot reach the manager", which is what an unavailable error means for every other command.
 */
function startupError(error: unknown): never {
  if (isWorkbayError(error, 'invalid-argument')) {
    throw new CliError(`config error: ${error.message}`, ExitCode.usage, { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  throw new CliError(`cannot start Workbay: ${message}`, exitCodeFor(error), { cause: error });
}

/** How workspaces run, said plainly: isolated, or trusted processes of this user (the runtime's notice says why). */
function isolationLine(runtime: unknown): string {
  const isolation = (runtime as { isolation?: { namespaces?: boolean; notice?: string } }).isolation;
  if (!isolation) return '';
  if (isolation.namespaces)
    return '  workspaces      isolated (uid 33333 in own user, network, pid, mount, uts namespaces)\n';
  return `  workspaces      NOT ISOLATED: ${isolation.notice ?? 'workspaces run as trusted processes of this user'}\n`;
}
