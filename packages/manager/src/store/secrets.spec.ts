import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
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

  it('stores all secrets of a record as one value naming the key, and opens them only when used', async () => {
    const box = await SecretBox.open(join(dir, 'secrets.key'));
    const store = new SealingWorkspaceStore(new FileWorkspaceStore(join(dir, 'state')), box);
    await store.load();
    const record = makeRecord({
      id: 'w1',
      statusVersion: 1,
      ownerToken: 'owner-token-lazy',
      spec: {
        ...makeRecord().spec,
        initializer: 'aW5pdGlhbGl6ZXItbGF6eQ==',
        envvars: [{ name: 'API_KEY', value: 'env-lazy-secret' }],
        sysEnvvars: [{ name: 'SYS', value: 'sys-lazy-secret' }],
      },
    });
    await store.save(record);
    await store.close();
    const file = join(dir, 'state', 'workspaces', 'w1.json');
    const onDisk = JSON.parse(await readFile(file, 'utf8')) as { record: Record<string, unknown> };
    expect(onDisk.record['ownerToken']).toBeUndefined();
    expect(Object.keys(onDisk.record).at(-1)).toBe('secrets');
    expect(onDisk.record['secrets']).toMatch(/^wbsec2:[A-Za-z0-9_-]{11}:/);
    for (const s of ['owner-token-lazy', 'aW5pdGlhbGl6ZXItbGF6eQ==', 'env-lazy-secret', 'sys-lazy-secret', 'API_KEY']) {
      expect(JSON.stringify(onDisk)).not.toContain(s);
    }

    const reopened = new SealingWorkspaceStore(new FileWorkspaceStore(join(dir, 'state')), box);
    const [back] = (await reopened.load()).records;
    // Plain to every reader, and to copies (which hold plain values).
    expect(back).toEqual(record);
    const copy = { ...back!, phase: 'running' as const };
    expect(Object.getOwnPropertyDescriptor(copy, 'ownerToken')?.value).toBe('owner-token-lazy');
    expect(copy.spec.envvars).toEqual([{ name: 'API_KEY', value: 'env-lazy-secret' }]);
    // A changed copy is sealed anew; the unchanged loaded record keeps the exact sealed value (nothing re-encrypted).
    await reopened.save(copy);
    await reopened.flush();
    const resealed = (JSON.parse(await readFile(file, 'utf8')) as { record: { secrets: string } }).record.secrets;
    expect(resealed).not.toBe(onDisk.record['secrets']);
    await reopened.close();
  });

  it('a sealed value changed on disk loads (nothing is decrypted at load) but fails loudly when used', async () => {
    const box = await SecretBox.open(join(dir, 'secrets.key'));
    const store = new SealingWorkspaceStore(new FileWorkspaceStore(join(dir, 'state')), box);
    await store.load();
    await store.save(makeRecord({ id: 'w2', statusVersion: 1, ownerToken: 'owner-token-tamper' }));
    await store.close();
    const file = join(dir, 'state', 'workspaces', 'w2.json');
    const text = await readFile(file, 'utf8');
    const sealed = (JSON.parse(text) as { record: { secrets: string } }).record.secrets;
    const flipped = `${sealed.slice(0, -6)}${sealed.slice(-6, -5) === 'A' ? 'B' : 'A'}${sealed.slice(-5)}`;
    await writeFile(file, text.replace(sealed, flipped));
    const reopened = new SealingWorkspaceStore(new FileWorkspaceStore(join(dir, 'state')), box);
    const [record] = (await reopened.load()).records;
    expect(() => record!.ownerToken).toThrow(/workspace record w2: the sealed value is damaged/);
    expect(() => record!.spec.initializer).toThrow(FailedPreconditionError);
    await reopened.close();
  });

  it('records sealed one field at a time (wbsec1) are opened and rewritten as one value', async () => {
    const box = await SecretBox.open(join(dir, 'secrets.key'));
    const legacy = makeRecord({
      id: 'w3',
      statusVersion: 1,
      ownerToken: box.seal('owner-token-v1'),
      spec: { ...makeRecord().spec, envvars: [{ name: 'A', value: box.seal('env-v1') }] },
    });
    const plain = new FileWorkspaceStore(join(dir, 'state'));
    await plain.load();
    await plain.save(legacy);
    await plain.close();
    const store = new SealingWorkspaceStore(new FileWorkspaceStore(join(dir, 'state')), box);
    const [record] = (await store.load()).records;
    expect([record!.ownerToken, record!.spec.envvars[0]!.value]).toEqual(['owner-token-v1', 'env-v1']);
    await store.flush();
    const onDisk = await readFile(join(dir, 'state', 'workspaces', 'w3.json'), 'utf8');
    expect(onDisk).toContain('wbsec2:');
    expect(onDisk).not.toContain('wbsec1:');
    await store.close();
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
