import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FailedPreconditionError } from '@workbay/api';
import { createLogger, redactText } from '../logger.js';
import { makeRecord } from '../test-support/records.js';
import { FileWorkspaceStore } from './file-store.js';
import { SealingWorkspaceStore, SecretBox, isSealed } from './secrets.js';

describe('SecretBox and SealingWorkspaceStore', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-secrets-unit-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a 0600 key once and seals with AES-256-GCM (tampering is detected)', async () => {
    const keyFile = join(dir, 'state', 'secrets.key');
    const box = await SecretBox.open(keyFile);
    expect(box.created).toBe(true);
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    expect((await readFile(keyFile)).length).toBe(32);
    const sealed = box.seal('p@ss');
    expect(isSealed(sealed)).toBe(true);
    expect(sealed).not.toContain('p@ss');
    const again = await SecretBox.open(keyFile);
    expect(again.created).toBe(false);
    expect(again.open(sealed)).toBe('p@ss');
    const tampered = `${sealed.slice(0, -4)}AAAA`;
    expect(() => again.open(tampered)).toThrow();
  });

  it('records are sealed on disk, plain in memory; old plain records are sealed on load; a wrong key fails loudly', async () => {
    const box = await SecretBox.open(join(dir, 'secrets.key'));
    const record = makeRecord({
      id: 'w1',
      statusVersion: 1,
      ownerToken: 'owner-token-123456',
      spec: {
        ...makeRecord().spec,
        initializer: 'aW5pdC13aXRoLXBhc3N3b3Jk',
        envvars: [{ name: 'TOKEN', value: 'env-secret' }],
      },
    });
    // A record from before sealing existed, written plain.
    const plain = new FileWorkspaceStore(join(dir, 'state'));
    await plain.load();
    await plain.save(makeRecord({ id: 'w0', statusVersion: 1, ownerToken: 'old-plain-token' }));
    await plain.close();

    const store = new SealingWorkspaceStore(new FileWorkspaceStore(join(dir, 'state')), box);
    const loaded = await store.load();
    expect(loaded.records.find((r) => r.id === 'w0')?.ownerToken).toBe('old-plain-token');
    await store.save(record);
    await store.flush();
    const onDisk = await readFile(join(dir, 'state', 'workspaces', 'w1.json'), 'utf8');
    for (const s of ['owner-token-123456', 'aW5pdC13aXRoLXBhc3N3b3Jk', 'env-secret']) expect(onDisk).not.toContain(s);
    expect(await readFile(join(dir, 'state', 'workspaces', 'w0.json'), 'utf8')).not.toContain('old-plain-token');
    await store.close();

    const reopened = new SealingWorkspaceStore(new FileWorkspaceStore(join(dir, 'state')), box);
    const back = (await reopened.load()).records.find((r) => r.id === 'w1')!;
    expect(back.ownerToken).toBe('owner-token-123456');
    expect(back.spec.initializer).toBe('aW5pdC13aXRoLXBhc3N3b3Jk');
    expect(back.spec.envvars[0]!.value).toBe('env-secret');
    await reopened.close();

    const otherKey = await SecretBox.open(join(dir, 'other.key'));
    const wrong = new SealingWorkspaceStore(new FileWorkspaceStore(join(dir, 'state')), otherKey);
    await expect(wrong.load()).rejects.toBeInstanceOf(FailedPreconditionError);
  });

  it('the logger scrubs credentials from messages, errors and bound values', async () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: 'debug',
      destination: new Writable({
        write(chunk: Buffer, _e, done) {
          lines.push(chunk.toString());
          done();
        },
      }),
    });
    logger.info(
      { url: 'https://user:hunter2@git.example/r.git', otsUrl: 'https://ots/abc' },
      'clone https://x:tok3n@h/r',
    );
    logger.error({ err: new Error('GET https://h/f?access_token=s3cret failed') }, 'download failed');
    logger.warn({ headers: { authorization: 'Bearer abcdefghijk' }, initializer: 'base64secret' }, 'request');
    logger.flush();
    const text = lines.join('');
    for (const s of ['hunter2', 'tok3n', 's3cret', 'abcdefghijk', 'https://ots/abc', 'base64secret']) {
      expect(text).not.toContain(s);
    }
    expect(text).toContain('git.example');
    expect(redactText('Authorization: Basic dXNlcjpwYXNzd29yZA==')).not.toContain('dXNlcjpwYXNzd29yZA');
  });
});
