import { NsinsiderError, NsinsiderValidationError } from './errors.js';
import type { CommandResult } from './exec.js';
import { runCommand } from './exec.js';

/**
 * Running the host's network tools (`ip`, `nft`) for the workspace-network and workspace-firewall modules: argument
 * checks before anything runs, and every failure turned into an {@link NsinsiderError} with an errno-like code.
 */

export const TOOL_TIMEOUT_MS = 20_000;

/**
 * Where the tools root runs are looked up: the system's directories, never the caller's PATH. A directory early in
 * root's PATH that someone else can write (a toolchain's `bin`, a shims directory) would have their `ip`, `nft` or `ss`
 * run as root (red team round 19 saw `ss` looked up through eight such directories before `/usr/bin`).
 */
export const systemToolPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The environment of a system tool: {@link systemToolPath}, and messages in English (failures are classified by them). */
export const systemToolEnv: Readonly<Record<string, string>> = { PATH: systemToolPath, LC_ALL: 'C' };

export function check(op: string, field: string, value: string, pattern: RegExp, what: string): void {
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new NsinsiderValidationError(op, field, `must be ${what}, got ${JSON.stringify(String(value).slice(0, 32))}`);
  }
}

/** Runs `file` with `args`; a tool that is missing, times out or exits non-zero fails with an NsinsiderError. */
export async function tool(op: string, file: string, args: readonly string[], input?: string): Promise<CommandResult> {
  const r = await runCommand(file, args, { timeoutMs: TOOL_TIMEOUT_MS, input, env: systemToolEnv });
  const stderr = r.stderr.trim();
  if (r.spawnError) {
    const missing = r.spawnError.code === 'ENOENT';
    throw new NsinsiderError(
      `${op}: cannot run ${file}${missing ? ` (is it installed?)` : ''}: ${r.spawnError.message}`,
      {
        op,
        kind: missing ? 'unsupported' : 'spawn',
        code: r.spawnError.code,
        cause: r.spawnError,
      },
    );
  }
  if (r.timedOut) {
    throw new NsinsiderError(`${op}: ${file} did not finish within ${TOOL_TIMEOUT_MS} ms`, {
      op,
      kind: 'timeout',
      code: 'ETIMEDOUT',
      stderr,
    });
  }
  if (r.exitCode !== 0) {
    throw new NsinsiderError(`${op}: ${file} ${args.join(' ')} failed (exit ${r.exitCode}): ${stderr.slice(0, 400)}`, {
      op,
      kind: 'failed',
      code: classify(stderr),
      exitCode: r.exitCode,
      stderr,
    });
  }
  return r;
}

/** An errno-like code for a tool's complaint, so that callers can tell "exists" and "missing" from the rest. */
export function classify(stderr: string): string {
  const s = stderr.toLowerCase();
  if (s.includes('file exists') || s.includes('already exists')) return 'EEXIST';
  if (s.includes('no such file') || s.includes('does not exist') || s.includes('cannot find device')) return 'ENOENT';
  if (s.includes('permission denied') || s.includes('operation not permitted')) return 'EPERM';
  if (s.includes('busy')) return 'EBUSY';
  return 'EFAILED';
}

export const isCode = (e: unknown, code: string): boolean => e instanceof NsinsiderError && e.code === code;
