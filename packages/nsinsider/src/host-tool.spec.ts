import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { systemToolPath, tool } from './host-tool.js';

describe('tool', () => {
  it("runs the system's tool, never one planted earlier on the caller's PATH", async () => {
    // Red team round 19: root's PATH named eight directories (toolchains, shims) before /usr/bin.
    const planted = await mkdtemp(join(tmpdir(), 'nsinsider-path-'));
    const saved = process.env['PATH'];
    try {
      await writeFile(join(planted, 'ip'), '#!/bin/sh\necho planted\n');
      await chmod(join(planted, 'ip'), 0o755);
      process.env['PATH'] = `${planted}:${saved ?? ''}`;
      const r = await tool('spec', 'ip', ['-V']);
      expect(r.stdout).not.toMatch(/planted/);
      expect(r.stdout).toMatch(/iproute2/);
      expect(systemToolPath.split(':').every((dir) => dir.startsWith('/'))).toBe(true);
    } finally {
      process.env['PATH'] = saved;
      await rm(planted, { recursive: true, force: true });
    }
  });
});
