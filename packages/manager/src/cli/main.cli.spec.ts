// The built `workbay` binary's own process: what it does when its reader goes away.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const mainJs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/main.js');

describe('workbay with a reader that went away', () => {
  it('`workbay --help | head` ends normally, without an EPIPE stack trace (red team round 15, G5)', async () => {
    const child = spawn(process.execPath, [mainJs, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    // The read end is closed before the help is written: every write of it fails with EPIPE.
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    expect(stderr).not.toContain('EPIPE');
    expect(code).toBe(0);
  });
});
