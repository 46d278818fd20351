#!/usr/bin/env node
/**
 * `workbay-daemon`: runs the daemon from a config file (YAML or JSON), or with defaults when none is given
 * (working area `~/.workbay/workspaces`, fs storage in `~/.workbay/storage`, gRPC on 127.0.0.1:7721,
 * metrics on 127.0.0.1:9500).
 */
import { Command, Option } from 'commander';
import type { DaemonConfig } from '../config.js';
import { loadDaemonConfig, parseDaemonConfig, workingAreaPaths } from '../config.js';
import { createDaemon } from '../daemon.js';
import { errorMessage, isWorkbayError } from '../errors.js';
import { createHostOps } from '../host-ops/host-ops.js';
import { probeQuotaSupport } from '../quota/quotas.js';

interface CliOptions {
  readonly config?: string;
  readonly workingArea?: string;
  readonly grpcAddress?: string;
  readonly httpAddress?: string;
  readonly storageRoot?: string;
  readonly logLevel?: string;
}

async function resolveConfig(options: CliOptions): Promise<DaemonConfig> {
  const base = options.config ? await loadDaemonConfig(options.config) : parseDaemonConfig({});
  const overrides: Record<string, unknown> = { ...base };
  if (options.workingArea) overrides['workingArea'] = options.workingArea;
  if (options.grpcAddress) overrides['grpc'] = { ...base.grpc, address: options.grpcAddress };
  if (options.httpAddress) overrides['http'] = { ...base.http, address: options.httpAddress };
  if (options.logLevel) overrides['log'] = { ...base.log, level: options.logLevel };
  if (options.storageRoot) {
    if (base.storage.kind !== 'fs')
      throw new Error(`--storage-root only applies to fs storage (configured: ${base.storage.kind})`);
    overrides['storage'] = { ...base.storage, root: options.storageRoot };
  }
  return parseDaemonConfig(overrides);
}

function fail(error: unknown): never {
  process.stderr.write(`workbay-daemon: ${isWorkbayError(error) ? error.message : errorMessage(error)}\n`);
  process.exit(isWorkbayError(error, 'invalid-argument') ? 2 : 1);
}

const program = new Command()
  .name('workbay-daemon')
  .description('Workbay workspace daemon: serves wsdaemon.WorkspaceContentService')
  .option('-c, --config <file>', 'config file (YAML or JSON)')
  .option('--working-area <dir>', 'where workspace content lives')
  .option('--grpc-address <host:port>', 'gRPC listen address')
  .option('--http-address <host:port|off>', 'metrics/health listen address')
  .option('--storage-root <dir>', 'root directory of the fs storage backend')
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
  .action(async (options: CliOptions) => {
    const config = await resolveConfig(options).catch(fail);
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
  .description('validate a config file and print it with every default filled in')
  .argument('<file>', 'config file (YAML or JSON)')
  .action(async (file: string) => {
    const config = await loadDaemonConfig(file).catch(fail);
    process.stdout.write(`${JSON.stringify(config, null, 2)}\n`);
  });

program
  .command('quota-support')
  .description('print which disk quota modes work on this host')
  .action(async () => {
    const config = await resolveConfig(program.opts<CliOptions>()).catch(fail);
    const { mkdir } = await import('node:fs/promises');
    await mkdir(config.workingArea, { recursive: true });
    const support = await probeQuotaSupport(createHostOps(), config.workingArea);
    process.stdout.write(
      `${JSON.stringify({ workingArea: config.workingArea, images: workingAreaPaths(config).images, support }, null, 2)}\n`,
    );
  });

await program.parseAsync(process.argv);
