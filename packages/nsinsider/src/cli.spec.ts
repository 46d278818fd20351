import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runCli } from './cli.js';
import type { CliResult } from './contract.js';

async function cli(...args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(['node', 'nsinsider', ...args], { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

function last(out: string[]): CliResult {
  return JSON.parse(out[out.length - 1]!) as CliResult;
}

describe('nsinsider CLI', () => {
  it('prints one JSON result line for a successful op', async () => {
    const r = await cli('dump-network-info');
    expect(r.code).toBe(0);
    const res = last(r.out);
    expect(res.ok).toBe(true);
    expect(res.ok && (res.result as { links: Array<{ name: string }> }).links.map((l) => l.name)).toContain('lo');
  });

  it('answers bad JSON and bad fields with exit 2 and the field name', async () => {
    let r = await cli('mount-proc', '--json-args', '{nope');
    expect(r.code).toBe(2);
    expect(last(r.out)).toMatchObject({ ok: false, error: { kind: 'invalid', field: 'json-args' } });
    r = await cli('mount-proc', '--json-args', JSON.stringify({ target: 'relative/path' }));
    expect(r.code).toBe(2);
    expect(last(r.out)).toMatchObject({ ok: false, op: 'mount-proc', error: { kind: 'invalid', field: 'target' } });
    r = await cli('unmount', '--json-args', JSON.stringify({ target: '/x', unknownKey: 1 }));
    expect(r.code).toBe(2);
    expect(last(r.out)).toMatchObject({ ok: false, error: { kind: 'invalid' } });
    r = await cli('mknod', '--json-args', JSON.stringify({ path: '/x', type: 'char', major: 1, minor: 'a' }));
    expect(last(r.out)).toMatchObject({ ok: false, error: { field: 'minor' } });
  });

  it('reports an operation failure with exit 1, an errno code and stderr', async () => {
    const r = await cli('unmount', '--json-args', JSON.stringify({ target: '/definitely/not/mounted/here' }));
    expect(r.code).toBe(1);
    const res = last(r.out);
    expect(res.ok).toBe(false);
    expect(!res.ok && res.error.kind).toBe('failed');
    expect(r.err.join('\n')).toMatch(/umount/);
  });

  it('rejects unknown commands with a usage exit code', async () => {
    const r = await cli('no-such-op');
    expect(r.code).toBe(2);
  });

  it('runs as a bin with --help', () => {
    const bin = fileURLToPath(new URL('../dist/bin.js', import.meta.url));
    const r = spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('setup-connection-limit');
    expect(r.stdout).toContain('mount-proc');
  });
});
