import { Command, CommanderError } from 'commander';
import type { CliResult, OpName } from './contract.js';
import { EXIT_FAILED, EXIT_USAGE, opNames, parseOpArgs } from './contract.js';
import { isNsinsiderValidationError, OpFailure } from './errors.js';
import type { ToolRunner } from './inside-tools.js';
import { directRunner } from './inside-tools.js';
import { insideHandlers } from './inside.js';

const descriptions: Record<OpName, string> = {
  'mount-proc': 'mount proc at {target} (masked like a container runtime does unless mask=false)',
  'mount-sysfs': 'mount sysfs at {target} (read-only unless readOnly=false)',
  unmount: 'unmount {target} (recursive unless recursive=false; lazy=true detaches)',
  'make-shared': 'make the mount at {target} shared',
  mknod: 'create a device node {path, type: char|block, major, minor, mode?, uid?, gid?}',
  'prepare-dev': 'create {devDir}/net/tun, {devDir}/fuse (0666, owned by uid:gid) and {devDir}/kmsg',
  'setup-pair-veths': "create a veth pair, move the peer into {targetPid}'s netns, address and up the host end",
  'setup-peer-veth': "address {ifName}, bring it and lo up, default route via the pair's first address",
  'enable-ip-forward': 'set net.ipv4.ip_forward to {enabled} (default true)',
  'disable-ipv6': 'set net.ipv6.conf.{all,default}.disable_ipv6=1',
  'setup-connection-limit': 'nftables rate limit of new connections {limitPerMinute, bucketSize, enforce}',
  'remove-connection-limit': 'remove the connection limit table',
  'connection-limit-stats': 'print the counter of connections over the limit',
  'dump-network-info': 'print links, addresses and routes',
};

function print(out: (line: string) => void, result: CliResult): void {
  out(JSON.stringify(result));
}

/**
 * Runs one nsinsider operation in the current namespaces and prints one JSON result line. Returns the
 * exit code: 0 ok, 1 the operation failed, 2 bad arguments.
 */
export async function runCli(
  argv: readonly string[],
  io: { out: (line: string) => void; err: (line: string) => void } = {
    out: (l) => process.stdout.write(`${l}\n`),
    err: (l) => process.stderr.write(`${l}\n`),
  },
): Promise<number> {
  let exitCode = 0;
  const program = new Command('nsinsider')
    .description('Operations inside Linux namespaces (run it under nsenter; requires root).')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });

  for (const op of opNames) {
    program
      .command(op)
      .description(descriptions[op])
      .option('--json-args <json>', "the operation's arguments as a JSON object", '{}')
      .action(async (opts: { jsonArgs: string }) => {
        exitCode = await runOp(op, opts.jsonArgs, io);
      });
  }

  try {
    await program.parseAsync([...argv], { from: 'node' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end here with code 0.
      return e.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    throw e;
  }
  return exitCode;
}

async function runOp(
  op: OpName,
  json: string,
  io: { out: (line: string) => void; err: (line: string) => void },
): Promise<number> {
  let input: unknown;
  try {
    input = JSON.parse(json);
  } catch (e) {
    print(io.out, {
      ok: false,
      op,
      error: { kind: 'invalid', code: 'EINVAL', field: 'json-args', message: `not JSON: ${(e as Error).message}` },
    });
    return EXIT_USAGE;
  }
  try {
    const args = parseOpArgs(op, input);
    const handler = insideHandlers[op] as (a: typeof args, tools: ToolRunner) => Promise<unknown>;
    // The tools run in the namespaces this process runs in (its caller put it there with nsenter).
    const result = await handler(args, directRunner());
    print(io.out, { ok: true, op, result: result ?? null });
    return 0;
  } catch (e) {
    if (isNsinsiderValidationError(e)) {
      print(io.out, { ok: false, op, error: { kind: 'invalid', code: 'EINVAL', field: e.field, message: e.message } });
      return EXIT_USAGE;
    }
    if (e instanceof OpFailure) {
      io.err(e.message);
      print(io.out, { ok: false, op, error: { kind: e.kind, code: e.code, message: e.message } });
      return EXIT_FAILED;
    }
    const message = e instanceof Error ? e.message : String(e);
    io.err(message);
    print(io.out, { ok: false, op, error: { kind: 'failed', code: 'EFAILED', message } });
    return EXIT_FAILED;
  }
}
