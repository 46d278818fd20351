import { describe, expect, it } from 'vitest';
import { startNamespaceSandbox, createRecordingNamespaceOps } from './testing.js';

describe('test kit', () => {
  it('records calls on the fake and honours overrides', async () => {
    const { ops, calls } = createRecordingNamespaceOps({ resolveHostPid: async (r) => r.nsPid + 100 });
    await ops.mountProc({ pid: 3, target: '/proc' });
    expect(await ops.resolveHostPid({ nsPid: 1, anchorPid: 9 })).toBe(101);
    expect(await ops.setupPairVeths({ targetPid: 2, cidr: '198.18.0.0/30' })).toMatchObject({
      hostAddress: '198.18.0.1',
      peerAddress: '198.18.0.2',
    });
    expect(calls.map((c) => c.method)).toEqual(['mountProc', 'resolveHostPid', 'setupPairVeths']);
    expect(calls[0]!.request).toEqual({ pid: 3, target: '/proc' });
  });

  it('starts a sandbox in its own namespaces and stops it', async () => {
    const sb = await startNamespaceSandbox();
    try {
      expect((await sb.check(['sh', '-c', 'echo $$'], ['pid', 'mount'])).trim()).not.toBe('');
      expect((await sb.check(['hostname'], ['uts'])).trim()).not.toBe('');
      const links = await sb.check(['ip', '-o', 'link'], ['net']);
      expect(links.trim().split('\n')).toHaveLength(1);
    } finally {
      await sb.stop();
      await sb.stop();
    }
    const r = await sb.run(['true']);
    expect(r.exitCode).not.toBe(0);
  });
});
