import { spawn } from 'node:child_process';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import { LogCap, rotatedLogFile } from './log-cap.js';

const kib = 1024;

/** Runs a command; resolves with its exit code. */
function run(command: string, args: readonly string[]): Promise<number | null> {
  return new Promise((resolve) => spawn(command, args, { stdio: 'ignore' }).once('close', resolve));
}

/** A logger that keeps the messages of its warnings. */
function recordingLogger(): PluginLogger & { readonly warnings: string[] } {
  const warnings: string[] = [];
  const logger = {
    ...silentLogger,
    warnings,
    warn: (_fields: object | string, msg?: string): void => void warnings.push(msg ?? ''),
    child: () => logger,
  };
  return logger;
}

describe('LogCap', () => {
  let dir: string;
  let cap: LogCap | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'workbay-log-cap-'));
  });
  afterEach(async () => {
    await cap?.close();
    cap = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps the newest half of the cap, from a line start, in .1 and empties the log for its writers', async () => {
    const logger = recordingLogger();
    cap = new LogCap({ maxBytes: 64 * kib, checkIntervalMs: 10_000, logger });
    const file = path.join(dir, 'a.log');
    await writeFile(file, '', { mode: 0o600 });
    await cap.watch('a', file);
    const writer = await open(file, 'a');
    const lines = Array.from({ length: 4000 }, (_, i) => `line ${i}\n`).join('');
    await writer.write(lines);
    // The last check runs on unwatch; a writer that goes on writes at the new end (O_APPEND).
    await cap.unwatch('a');
    await writer.write('after\n');
    await writer.close();
    const kept = await readFile(rotatedLogFile(file), 'utf8');
    expect(kept.length).toBeLessThanOrEqual(32 * kib);
    expect(kept).toMatch(/^line \d+\n/);
    expect(kept.endsWith('line 3999\n')).toBe(true);
    expect(await readFile(file, 'utf8')).toBe('after\n');
    expect((await stat(rotatedLogFile(file))).mode & 0o777).toBe(0o600);
    expect(cap.rotations).toBe(1);
    expect(logger.warnings).toEqual(['workspace log passed its cap and was rotated (older output dropped)']);
  });

  it('gives back blocks a workspace reserved beyond the end of its log (fallocate --keep-size)', async () => {
    cap = new LogCap({ maxBytes: 64 * kib, checkIntervalMs: 10_000, logger: recordingLogger() });
    const file = path.join(dir, 'r.log');
    await writeFile(file, '', { mode: 0o600 });
    // What the workspace can do with the descriptor it writes its output to: 8 MiB reserved, the size still 0 (done
    // before the watch starts, so that the check cannot give them back before they are seen here).
    const reserved = await run('fallocate', ['--keep-size', '--length', String(8 * 1024 * kib), file]);
    expect(reserved).toBe(0);
    expect((await stat(file)).blocks * 512).toBeGreaterThanOrEqual(8 * 1024 * kib);
    expect((await stat(file)).size).toBe(0);
    await cap.watch('r', file);
    await cap.unwatch('r');
    const after = await stat(file);
    expect(after.size).toBe(0);
    expect(after.blocks).toBe(0);
    expect(cap.rotations).toBe(1);
  });

  it('stops watching a log that is still being flooded (a runtime that closes does not wait for the workspace)', async () => {
    cap = new LogCap({ maxBytes: 64 * kib, checkIntervalMs: 10_000, logger: recordingLogger() });
    const file = path.join(dir, 'flood.log');
    await writeFile(file, '', { mode: 0o600 });
    await cap.watch('f', file);
    const writer = await open(file, 'a');
    const flood = spawn('yes', ['flood'], { stdio: ['ignore', writer.fd, 'ignore'] });
    try {
      while (cap.rotations < 3) await new Promise((r) => setTimeout(r, 10));
      await cap.unwatch('f');
      expect((await readFile(rotatedLogFile(file), 'utf8')).split('\n').at(-2)).toBe('flood');
    } finally {
      flood.kill('SIGKILL');
      await writer.close();
    }
  });

  it('leaves a sparse log alone: one that is large but takes little disk (a writer without O_APPEND)', async () => {
    cap = new LogCap({ maxBytes: 64 * kib, checkIntervalMs: 10_000, logger: recordingLogger() });
    const file = path.join(dir, 'b.log');
    const writer = await open(file, 'w', 0o600);
    await writer.write('far out\n', 0, 'utf8');
    await writer.write('far out\n', 512 * 1024 * 1024, 'utf8');
    await writer.close();
    await cap.watch('b', file);
    await cap.unwatch('b');
    expect(cap.rotations).toBe(0);
    expect((await stat(file)).size).toBeGreaterThan(512 * 1024 * 1024);
  });

  it('reports a log it cannot open instead of failing the start', async () => {
    const logger = recordingLogger();
    cap = new LogCap({ maxBytes: 64 * kib, checkIntervalMs: 10_000, logger });
    await cap.watch('c', path.join(dir, 'missing.log'));
    await cap.unwatch('c');
    expect(logger.warnings).toEqual(['cannot watch the workspace log']);
  });
});
