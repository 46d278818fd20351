import { readFileSync } from 'node:fs';
import os from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { errorMetadataKeys, isWorkbayError } from '@workbay/api';
import { CliContext, defaultAddress } from './context.js';
import type { CliIo, GlobalOptions } from './context.js';
import { CliError, ExitCode, errorJson, exitCodeFor } from './exit-codes.js';
import { registerControlCommands } from './commands/control.js';
import { registerUpCommand } from './commands/up.js';
import { registerWorkspaceCommands } from './commands/workspaces.js';
import { printable } from './printable.js';

/** Runs one command with a context; what it returns (or throws) becomes the exit code. */
export type Action = (ctx: CliContext, ...args: unknown[]) => Promise<number | void>;

/** Hands commander an action that gets a {@link CliContext} and records the exit code. */
export type ActionWrapper = (action: Action) => (...args: unknown[]) => Promise<void>;

export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** This package's version (`workbay --version`). */
export const version = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/** Whether `--json` is among the global options (before any `--`): errors are then JSON too. */
function wantsJson(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).includes('--json');
}

/** Builds the `workbay` program, writing to `io`. */
export function buildProgram(io: CliIo, setExitCode: (code: number) => void, json = false): Command {
  const program = new Command('workbay')
    .description('Drive a Workbay workspace manager: start, watch and stop workspaces.')
    .version(version, '-V, --version', 'print the version')
    .addOption(
      new Option('--address <host:port>', `manager gRPC address (env WORKBAY_ADDRESS; default ${defaultAddress})`),
    )
    .option('--json', 'print machine-readable JSON instead of tables', false)
    .option('--timeout <duration>', 'give up after this long, as a Go duration (default: 30s per call, 10m for --wait)')
    .option('--tls-ca <file>', 'PEM CA bundle to verify the manager with (enables TLS)')
    .option('--tls-cert <file>', 'PEM client certificate for mutual TLS')
    .option('--tls-key <file>', 'PEM client key for mutual TLS')
    .option('--tls-server-name <name>', 'name to verify the manager certificate against')
    .showHelpAfterError(json ? false : '(run with --help for usage)')
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      // Under --json, runCli prints commander's errors as JSON instead.
      outputError: (s, write) => (json ? undefined : write(s)),
    })
    .exitOverride();
  program.addHelpText(
    'after',
    `
A manager with auth.tokens wants one of them in the environment: WORKBAY_TOKEN=<token>.
Exit codes: 0 ok, 1 usage or invalid argument, 2 not found, 3 precondition (already exists, wrong phase,
maintenance), 4 manager unavailable, 5 timed out, 6 workspace failed, 10 other errors, 130 interrupted.`,
  );

  const wrap: ActionWrapper =
    (action) =>
    async (...args) => {
      const command = args.at(-1) as Command;
      const raw = command.optsWithGlobals<Partial<GlobalOptions>>();
      const globals: GlobalOptions = {
        ...raw,
        address: raw.address ?? io.env['WORKBAY_ADDRESS'] ?? defaultAddress,
        json: raw.json ?? false,
        token: io.env['WORKBAY_TOKEN'] || undefined,
      };
      const ctx = new CliContext(io, globals);
      try {
        const code = await action(ctx, ...args);
        setExitCode(code ?? ExitCode.ok);
      } catch (error) {
        if (isWorkbayError(error, 'unavailable') && answeredByManager(error)) {
          // The manager is there and said so itself (a backup whose storage failed, a daemon it cannot reach).
          throw new CliError(`${error.message} (the manager answered; try again later)`, ExitCode.unavailable, {
            cause: error,
          });
        }
        if (isWorkbayError(error, 'unavailable')) {
          throw new CliError(
            `cannot reach the manager at ${globals.address}: ${error.message}\n` +
              `  (is it running? start one with 'workbay up'; choose another with --address or WORKBAY_ADDRESS)`,
            ExitCode.unavailable,
            { cause: error },
          );
        }
        throw error;
      } finally {
        ctx.close();
      }
    };

  registerUpCommand(program, wrap);
  registerWorkspaceCommands(program, wrap);
  registerControlCommands(program, wrap);
  return program;
}

/**
 * Runs the CLI with `args` (without `node` and the script) and resolves to the exit code. Errors are printed
 * to stderr as one `workbay: …` line; see {@link ExitCode} for what the codes mean.
 */
export async function runCli(args: readonly string[], io: CliIo): Promise<number> {
  let exitCode: number = ExitCode.ok;
  const json = wantsJson(args);
  const program = buildProgram(io, (code) => (exitCode = code), json);
  try {
    await program.parseAsync([...args], { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version end with code 0; usage errors were already printed by commander (unless --json).
      if (error.exitCode === 0) return ExitCode.ok;
      if (json) io.stderr.write(`${JSON.stringify(errorJson(error, ExitCode.usage))}\n`);
      return ExitCode.usage;
    }
    const code = exitCodeFor(error);
    if (json) io.stderr.write(`${JSON.stringify(errorJson(error, code))}\n`);
    else io.stderr.write(`workbay: ${printable(error instanceof Error ? error.message : String(error))}\n`);
    return code;
  }
}

/** The owner `start` uses when --owner is not given. */
export function defaultOwner(env: Readonly<Record<string, string | undefined>>): string {
  const fromEnv = env['WORKBAY_OWNER'];
  if (fromEnv) return fromEnv;
  try {
    return os.userInfo().username.replace(/[^A-Za-z0-9_-]/g, '-') || 'local';
  } catch {
    // Deliberate: a uid without a passwd entry (containers) has no user name; 'local' stands in.
    return 'local';
  }
}

/**
 * Whether an error came from the manager (its server edge sends the Workbay code as metadata) rather than from the
 * connection: a backup that failed UNAVAILABLE was reported as "cannot reach the manager" (red team round 11 L1).
 */
function answeredByManager(error: Error): boolean {
  const metadata = (error.cause as { metadata?: { get(key: string): unknown[] } } | undefined)?.metadata;
  return (metadata?.get(errorMetadataKeys.code).length ?? 0) > 0;
}
