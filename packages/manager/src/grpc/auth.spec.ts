import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FailedPreconditionError } from '@workbay/api';
import { resolveManagerConfig } from '../config.js';
import { TokenSet, checkControlPlaneExposure, isLoopbackAddress, loadTokens } from './auth.js';

describe('control plane access rules', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-auth-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('knows loopback addresses', () => {
    for (const a of ['127.0.0.1:7720', '127.1.2.3:1', 'localhost:7720', '[::1]:7720'])
      expect(isLoopbackAddress(a)).toBe(true);
    for (const a of ['0.0.0.0:7720', '10.0.0.1:7720', '[::]:7720', 'example.com:7720', '127.0.0.1.nip.io:1']) {
      expect(isLoopbackAddress(a)).toBe(false);
    }
  });

  it('accepts only a configured bearer token', () => {
    const tokens = new TokenSet(['a'.repeat(20), 'b'.repeat(20)]);
    expect(tokens.accepts(`Bearer ${'b'.repeat(20)}`)).toBe(true);
    expect(tokens.accepts(`bearer ${'a'.repeat(20)}`)).toBe(true);
    for (const bad of [
      undefined,
      '',
      'a'.repeat(20),
      `Bearer ${'a'.repeat(19)}`,
      `Basic ${'a'.repeat(20)}`,
      'Bearer ',
    ]) {
      expect(tokens.accepts(bad)).toBe(false);
    }
  });

  it('reads a token file only when others cannot read it', async () => {
    const file = join(dir, 'tokens');
    await writeFile(file, `${'c'.repeat(20)}\n\n`, { mode: 0o644 });
    const config = resolveManagerConfig({ auth: { tokenFile: file } });
    expect(() => loadTokens(config)).toThrow(/chmod 600/);
    await writeFile(join(dir, 'ok'), `${'c'.repeat(20)}\n`, { mode: 0o600 });
    expect(loadTokens(resolveManagerConfig({ auth: { tokenFile: join(dir, 'ok') } })).size).toBe(1);
  });

  it('names every missing setting of an open control plane', () => {
    const open = resolveManagerConfig({
      grpc: { address: '0.0.0.0:7720' },
      metrics: { address: '0.0.0.0:9501' },
      daemon: { address: '10.1.1.1:7721' },
    });
    const error = (() => {
      try {
        checkControlPlaneExposure(open, new TokenSet([]));
        return undefined;
      } catch (e) {
        return e as Error;
      }
    })();
    expect(error).toBeInstanceOf(FailedPreconditionError);
    expect(error?.message).toMatch(/grpc\.address .*grpc\.tls .*auth\.tokens/);
    expect(error?.message).toMatch(/metrics\.address/);
    expect(error?.message).toMatch(/daemon\.address .*daemon\.tls/);
    // Tokens cover gRPC and the ops server; the daemon still needs mutual TLS.
    expect(() => checkControlPlaneExposure(open, new TokenSet(['t'.repeat(20)]))).toThrow(/daemon\.tls/);
    expect(() => checkControlPlaneExposure(resolveManagerConfig({}), new TokenSet([]))).not.toThrow();
  });
});
