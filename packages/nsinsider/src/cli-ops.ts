import { fileURLToPath } from 'node:url';
import type { CliResult, OpArgs, OpName } from './contract.js';
import type { NsinsiderFailureKind } from './errors.js';
import { NsinsiderError, NsinsiderValidationError } from './errors.js';
import { runCommand } from './exec.js';
import type { NsinsiderOpsOptions } from './nsinsider-ops.js';
import { processAlive, nsenterFlags } from './proc.js';
import type { NamespaceKind } from './types.js';

/**
 * The CLI mode of {@link createNsinsiderOps} (`cliPath`/`nodePath` set): each operation is one
 * `nsenter --target <pid> --mount|--net|--pid -- node <cli> <op> --json-args <json>`, whose last stdout line is
 * the JSON result. One Node start-up per operation; kept for callers that run their own build of the CLI.
 * @internal
 */

export type CliInvoker = <O extends OpName>(
  op: O,
  args: OpArgs<O>,
  target: { pid: number; namespaces: readonly NamespaceKind[] } | undefined,
) => Promise<unknown>;

export function cliInvoker(
  options: NsinsiderOpsOptions,
  settings: { nsenterPath: string; timeoutMs: number; procRoot: string; env: NodeJS.ProcessEnv },
): CliInvoker {
  const cliPath = options.cliPath ?? fileURLToPath(new URL('./bin.js', import.meta.url));
  const nodePath = options.nodePath ?? process.execPath;
  const { nsenterPath, timeoutMs, procRoot, env } = settings;

  return async (op, args, target) => {
    const cliArgs = [cliPath, op, '--json-args', JSON.stringify(args)];
    let file: string;
    let argv: string[];
    if (target) {
      file = nsenterPath;
      argv = [
        '--target',
        String(target.pid),
        ...target.namespaces.map((n) => nsenterFlags[n]),
        '--',
        nodePath,
        ...cliArgs,
      ];
    } else {
      file = nodePath;
      argv = cliArgs;
    }
    options.onSpawn?.({ op, pid: target?.pid, namespaces: target?.namespaces ?? [], args: argv });
    const r = await runCommand(file, argv, { timeoutMs, killGroup: true, env });
    const stderr = r.stderr.trim();
    if (r.spawnError) {
      throw new NsinsiderError(`${op}: cannot start ${file}: ${r.spawnError.message}`, {
        op,
        kind: 'spawn',
        code: r.spawnError.code,
        stderr,
        cause: r.spawnError,
      });
    }
    if (r.timedOut) {
      throw new NsinsiderError(`${op}: no result within ${timeoutMs} ms; the helper was killed`, {
        op,
        kind: 'timeout',
        code: 'ETIMEDOUT',
        exitCode: r.exitCode,
        stderr,
      });
    }
    const line = r.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .pop();
    let parsed: CliResult | undefined;
    try {
      parsed = line ? (JSON.parse(line) as CliResult) : undefined;
    } catch {
      // Deliberate: no result line is a failure, reported just below.
      parsed = undefined;
    }
    if (!parsed || typeof parsed !== 'object' || typeof parsed.ok !== 'boolean') {
      // nsenter itself failed (no result line): most often the target process is gone.
      const gone =
        target !== undefined &&
        (/\/proc\/\d+\/ns\/\w+.*No such (file|process)/i.test(stderr) || !(await processAlive(procRoot, target.pid)));
      throw new NsinsiderError(
        gone
          ? `${op}: process ${target.pid} does not exist (its namespaces cannot be entered)`
          : `${op}: helper exited ${r.exitCode ?? r.signal} without a result: ${stderr || '(no stderr)'}`,
        { op, kind: gone ? 'not-found' : 'protocol', code: gone ? 'ESRCH' : undefined, exitCode: r.exitCode, stderr },
      );
    }
    if (parsed.ok) {
      return parsed.result;
    }
    const err = parsed.error;
    if (err.kind === 'invalid') {
      throw new NsinsiderValidationError(op, err.field ?? 'args', err.message);
    }
    throw new NsinsiderError(`${op}: ${err.message}`, {
      op,
      kind: err.kind as NsinsiderFailureKind,
      code: err.code,
      exitCode: r.exitCode,
      stderr,
    });
  };
}
