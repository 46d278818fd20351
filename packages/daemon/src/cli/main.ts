#!/usr/bin/env node
/**
 * `workbay-daemon`: runs the daemon from a config file (YAML or JSON), or with defaults when none is given
 * (working area `~/.workbay/workspaces`, fs storage in `~/.workbay/storage`, gRPC on 127.0.0.1:7721,
 * metrics on 127.0.0.1:9500).
 */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { workingAreaPaths } from '../config.js';
import { createDaemon } from '../daemon.js';
import { errorMessage, isWorkbayError } from '../errors.js';
import { createHostOps } from '../host-ops/host-ops.js';
import { probeQuotaSupport } from '../quota/quotas.js';
import { DaemonConfigError, checkPlugins, resolveSourcedConfig } from './config-source.js';
import type { ConfigSourceOptions } from './config-source.js';

const version = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

function fail(error: unknown, supervised = false): never {
  process.stderr.write(`workbay-daemon: ${isWorkbayError(error) ? error.message : errorMessage(error)}\n`);
  if (supervised && error instanceof DaemonConfigError) {
    // For a supervisor (`workbay up`): which file and key, on stdout where it reads the `listening` event.
    process.stdout.write(
      `${JSON.stringify({ event: 'config-error', file: error.file, field: error.field, reason: error.problem })}\n`,
    );
  }
  process.exit(isWorkbayError(error, 'invalid-argument') ? 2 : 1);
}

const program = new Command()
  .name('workbay-daemon')
  .version(version, '-V, --version', 'print the version')
  .description('Workbay workspace daemon: serves wsdaemon.WorkspaceContentService')
  .option('-c, --config <file>', 'config file (YAML or JSON)')
  .option('--working-area <dir>', 'where workspace content lives')
  .option('--grpc-address <host:port>', 'gRPC listen address')
  .option('--http-address <host:port|off>', 'metrics/health listen address')
  .option('--storage-root <dir>', 'root directory of the fs storage backend')
  .option(
    '--manager-config <file>',
    "JSON {source, storage, plugins}: the storage and plugins of the manager's config (written by `workbay up`)",
  )
  .addOption(
    new Option('--log-level <level>', 'log level').choices([
      'fatal',
      'error',
      'warn',
      'info',
      'debug',
      'trace',
      'silent',
    ]),
  )
  .action(async (options: ConfigSourceOptions) => {
    // Plugins and the storage section are checked first: a config error is reported as one, naming file and key.
    const sourced = await resolveSourcedConfig(options).catch((error: unknown) => fail(error, true));
    await checkPlugins(sourced).catch((error: unknown) => fail(error, true));
    const config = sourced.config;
    const daemon = createDaemon(config);
    await daemon.start().catch(fail);
    // One line on stdout for supervisors and tests that need the bound addresses.
    process.stdout.write(
      `${JSON.stringify({ event: 'listening', grpc: daemon.address, http: daemon.httpAddress ?? null })}\n`,
    );
    let stopping = false;
    const shutdown = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`workbay-daemon: ${signal}, shutting down\n`);
      daemon.stop().then(
        () => process.exit(0),
        (error: unknown) => fail(error),
      );
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });

program
  .command('check-config')
  .description(
    'validate a config file (loading its plugins and checking the storage section with them) and print it with every default filled in',
  )
  .argument('[file]', 'config file (YAML or JSON); default: the --config given before the command')
  .action(async (file: string | undefined) => {
    const options = { ...program.opts<ConfigSourceOptions>(), ...(file ? { config: file } : {}) };
    const sourced = await resolveSourcedConfig(options).catch(fail);
    await checkPlugins(sourced).catch(fail);
    process.stdout.write(`${JSON.stringify(sourced.config, null, 2)}\n`);
  });

program
  .command('quota-support')
  .description('print which disk quota modes work on this host')
  .action(async () => {
    const { config } = await resolveSourcedConfig(program.opts<ConfigSourceOptions>()).catch(fail);
    const { mkdir } = await import('node:fs/promises');
    await mkdir(config.workingArea, { recursive: true });
    const support = await probeQuotaSupport(createHostOps(), config.workingArea);
    process.stdout.write(
      `${JSON.stringify({ workingArea: config.workingArea, images: workingAreaPaths(config).images, support }, null, 2)}\n`,
    );
  });

await program.parseAsync(process.argv);
