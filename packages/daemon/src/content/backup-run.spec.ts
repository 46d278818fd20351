import { describe, expect, it } from 'vitest';
import { keptBackupWorkspaceId } from './backup-run.js';

describe('keptBackupWorkspaceId', () => {
  it('names the pair readably where it can, and never gives two pairs one name (red team round 12, K2b)', () => {
    expect(keptBackupWorkspaceId('cproj', 'c7')).toBe('cproj.kept-c7');
    const pairs: Array<[string, string]> = [
      ['p', 'x.kept-y'],
      ['p.kept-x', 'y'],
      ['p', 'x'],
      ['p.kept-x.kept-y', 'z'],
      ['a'.repeat(120), 'instance-1'],
      ['a'.repeat(120), 'instance-2'],
    ];
    const names = pairs.map(([workspaceId, instanceId]) => keptBackupWorkspaceId(workspaceId, instanceId));
    expect(new Set(names).size).toBe(pairs.length);
    for (const name of names) expect(name).toMatch(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/);
  });
});
