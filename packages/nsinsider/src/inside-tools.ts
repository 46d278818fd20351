import { OpFailure } from './errors.js';
import type { CommandResult } from './exec.js';
import { runCommand } from './exec.js';

// How every inside operation runs its tools: the runner seam (nsenter for the library, the current namespaces for
// the CLI) and the one place a tool's exit and stderr become an OpFailure, so the operations stay argv and parsing.

export const TOOL_TIMEOUT_MS = 20_000;

/**
 * Runs one tool in the namespaces of the operation. Resolves with the tool's result whatever its exit code;
 * rejects with an {@link OpFailure} only when the tool could not run there at all (not installed, the target's
 * namespaces are gone, the time is up).
 * @internal
 */
export interface ToolRunner {
  run(file: string, args: readonly string[], input?: string): Promise<CommandResult>;
}

/** Runs tools in the current namespaces (the CLI: nsenter already put it where it acts). @internal */
export function directRunner(timeoutMs = TOOL_TIMEOUT_MS): ToolRunner {
  return {
    async run(file, args, input) {
      // Messages in English: failures are classified by what the tools print.
      const r = await runCommand(file, args, { timeoutMs, input, env: { ...process.env, LC_ALL: 'C' } });
      if (r.spawnError) {
        const code = r.spawnError.code ?? 'ESPAWN';
        throw new OpFailure(
          code,
          `cannot run ${file}: ${r.spawnError.message}${code === 'ENOENT' ? ` (is ${file} installed?)` : ''}`,
          code === 'ENOENT' ? 'unsupported' : 'failed',
        );
      }
      if (r.timedOut) {
        throw new OpFailure('ETIMEDOUT', `${file} ${args.join(' ')} did not finish within ${timeoutMs} ms`, 'timeout');
      }
      return r;
    },
  };
}

/** Runs a tool and turns a non-zero exit into an {@link OpFailure} carrying its stderr and exit code. */
export async function tool(
  t: ToolRunner,
  file: string,
  args: readonly string[],
  input?: string,
): Promise<CommandResult> {
  const r = await t.run(file, args, input);
  if (r.exitCode !== 0) {
    const stderr = r.stderr.trim();
    throw new OpFailure(
      classifyToolError(stderr),
      `${file} ${args.join(' ')} failed (exit ${r.exitCode}): ${stderr.slice(0, 400)}`,
      'failed',
      { exitCode: r.exitCode, stderr },
    );
  }
  return r;
}

export function classifyToolError(stderr: string): string {
  const s = stderr.toLowerCase();
  if (s.includes('not mounted')) return 'ENOTMOUNTED';
  if (s.includes('file exists') || s.includes('already exists')) return 'EEXIST';
  if (s.includes('no such file') || s.includes('does not exist') || s.includes('cannot find device')) return 'ENOENT';
  if (s.includes('permission denied') || s.includes('operation not permitted')) return 'EPERM';
  if (s.includes('busy')) return 'EBUSY';
  return 'EFAILED';
}
