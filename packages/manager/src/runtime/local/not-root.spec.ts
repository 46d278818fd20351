import { spawn } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// A runtime whose manager is not root cannot isolate: it runs workspaces as trusted processes of its user and says
// so. Proven as a real unprivileged user (nobody), through the built runtime (root is needed to switch to it).
const isRoot = process.getuid?.() === 0;

describe.runIf(isRoot)('LocalRuntime without root', () => {
  it('runs workspaces as trusted processes of the user and says so in the runtime and every state', async () => {
    const dist = fileURLToPath(new URL('../../../dist/runtime/local/index.js', import.meta.url));
    const dir = await mkdtemp(path.join(os.tmpdir(), 'workbay-not-root-'));
    await chown(dir, 65534, 65534);
    const script = `
      const { LocalRuntime } = await import(${JSON.stringify(dist)});
      const dir = ${JSON.stringify(dir)};
      const images = { sh: { command: ['/bin/sh', '-c', 'id -u > uid.txt; exec sleep 60'], readiness: { kind: 'none' } } };
      const rt = await LocalRuntime.create({ config: { stateDir: dir + '/state', images } });
      const st = await rt.start({ instanceId: 'n1', workspaceId: 'n1', owner: 'o', image: 'sh', url: '', headless: false,
        type: 'regular', contentDir: dir, env: {}, ports: [0], className: 'c', resources: {} });
      const fs = await import('node:fs/promises');
      let uid;
      for (let i = 0; i < 200 && !uid; i++) { uid = await fs.readFile(dir + '/uid.txt', 'utf8').catch(() => undefined); await new Promise((r) => setTimeout(r, 25)); }
      await rt.stop('n1', { gracePeriodMs: 0 });
      await rt.close();
      console.log(JSON.stringify({ namespaces: rt.isolation.namespaces, runtimeNotice: rt.isolation.notice, notice: st.notice, uid: uid.trim() }));
    `;
    try {
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn(
          'setpriv',
          [
            '--reuid=65534',
            '--regid=65534',
            '--clear-groups',
            '--',
            process.execPath,
            '--input-type=module',
            '-e',
            script,
          ],
          { cwd: dir, env: { PATH: process.env['PATH'], HOME: dir }, stdio: ['ignore', 'pipe', 'pipe'] },
        );
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`exit ${code}: ${stderr}`))));
      });
      const result = JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
      expect(result).toMatchObject({ namespaces: false, uid: '65534' });
      expect(result.runtimeNotice).toMatch(
        /does not run as root, so workspaces run as trusted processes of user '.+' without isolation/,
      );
      expect(result.notice).toBe(result.runtimeNotice);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
