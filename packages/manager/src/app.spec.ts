import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FailedPreconditionError } from '@workbay/api';
import { createRuntimeFromConfig } from './app.js';
import { resolveManagerConfig } from './config.js';
import { createSilentLogger } from './logger.js';

describe('createRuntimeFromConfig', () => {
  it('creates the built-in local runtime with its state under the manager state dir', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wb-app-'));
    const config = resolveManagerConfig({
      stateDir: dir,
      runtime: { kind: 'local', isolation: 'none', cgroups: 'off' },
    });
    const { runtime } = await createRuntimeFromConfig(config, createSilentLogger());
    expect(runtime.kind).toBe('local');
    expect((runtime as unknown as { config: { stateDir: string } }).config.stateDir).toBe(join(dir, 'runtime-local'));
    await runtime.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('loads the kubernetes runtime when the config asks for it', async () => {
    // A minimal API server: no pods, and watches that stay open.
    const api = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      if (req.url?.includes('watch=true')) {
        res.write('');
        return;
      }
      res.end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: '1' }, items: [] }));
    });
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
    const { port } = api.address() as { port: number };
    const config = resolveManagerConfig({
      runtime: {
        kind: 'kubernetes',
        server: `http://127.0.0.1:${port}`,
        token: 't',
        skipTLSVerify: true,
        namespace: 'ws',
        // This fake keeps no NetworkPolicies (the runtime's are proven on a real API server).
        networkPolicies: { enabled: false },
      },
    });
    const { runtime } = await createRuntimeFromConfig(config, createSilentLogger());
    expect(runtime.kind).toBe('kubernetes');
    await runtime.close();
    api.closeAllConnections();
    await new Promise((resolve) => api.close(resolve));
  });

  it('names the missing plugin for an unknown runtime kind', async () => {
    const config = resolveManagerConfig({ runtime: { kind: 'nomad' } });
    await expect(createRuntimeFromConfig(config, createSilentLogger())).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(createRuntimeFromConfig(config, createSilentLogger())).rejects.toThrow(
      /no workspace runtime of kind 'nomad'/,
    );
  });
});
