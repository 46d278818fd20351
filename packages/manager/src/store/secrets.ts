/**
 * Secrets at rest (issue 8, item 11). Workspace records must survive a restart (a resumed start still needs its
 * initializer), but the initializer carries git passwords, one-time-secret URLs and credentials in URLs, and the
 * owner token and environment values are credentials too. They are written to state files only encrypted:
 * AES-256-GCM with a key the operator owns, `<stateDir>/secrets.key` (32 random bytes, mode 0600, created on the
 * first start; `secrets.keyFile` in the config moves it).
 *
 * {@link SealingWorkspaceStore} wraps any {@link WorkspaceStore}: records are sealed on the way to the store and
 * opened on the way back, so the core keeps working with plain records in memory. A record that cannot be opened
 * (the key was lost or replaced) fails the start of the manager with a message that says what to restore; it is
 * never loaded with its secrets silently missing. Records written before sealing existed are sealed on load.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FailedPreconditionError } from '@workbay/api';
import type { EnvVar, WorkspaceRecord } from '../domain/types.js';
import type { StoreLoadResult, WorkspaceStore } from './file-store.js';

const prefix = 'wbsec1:';
const keyBytes = 32;
const ivBytes = 12;
const tagBytes = 16;

export function isSealed(value: string): boolean {
  return value.startsWith(prefix);
}

/** Encrypts and decrypts short strings with one AES-256-GCM key. */
export class SecretBox {
  private constructor(
    private readonly key: Buffer,
    /** Where the key lives (for messages). */
    readonly keyFile: string,
    /** Whether this start created the key (no sealed record can predate it). */
    readonly created: boolean,
  ) {}

  /** Reads the key file, or creates it (0600, exclusive) when it does not exist. */
  static async open(keyFile: string): Promise<SecretBox> {
    try {
      const key = await readFile(keyFile);
      if (key.length !== keyBytes) {
        throw new FailedPreconditionError(`the secrets key ${keyFile} must hold exactly ${keyBytes} bytes`);
      }
      return new SecretBox(key, keyFile, false);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    await mkdir(dirname(keyFile), { recursive: true, mode: 0o700 });
    const key = randomBytes(keyBytes);
    const handle = await open(keyFile, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600).catch(
      async (error: NodeJS.ErrnoException) => {
        // Another process created it in between: use theirs.
        if (error.code === 'EEXIST') return undefined;
        throw error;
      },
    );
    if (!handle) return SecretBox.open(keyFile);
    try {
      await handle.chmod(0o600);
      await handle.writeFile(key);
      await handle.sync();
    } finally {
      await handle.close();
    }
    return new SecretBox(key, keyFile, true);
  }

  /** A box with a given key (tests). */
  static fromKey(key: Buffer, keyFile = '(memory)'): SecretBox {
    return new SecretBox(key, keyFile, false);
  }

  seal(plain: string): string {
    const iv = randomBytes(ivBytes);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return `${prefix}${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
  }

  /** Opens a sealed value; plain values pass through. Throws when the value was sealed with another key. */
  open(value: string): string {
    if (!isSealed(value)) return value;
    const raw = Buffer.from(value.slice(prefix.length), 'base64');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, ivBytes));
    decipher.setAuthTag(raw.subarray(ivBytes, ivBytes + tagBytes));
    return Buffer.concat([decipher.update(raw.subarray(ivBytes + tagBytes)), decipher.final()]).toString('utf8');
  }
}

type Spec = WorkspaceRecord['spec'];

/** Seals the secret fields of records on save and opens them on load; see the module docs. */
export class SealingWorkspaceStore implements WorkspaceStore {
  // Specs are immutable and shared between successive records of a workspace: seal each one once.
  private readonly sealedSpecs = new WeakMap<Spec, Spec>();
  private readonly sealedTokens = new Map<string, { plain: string; sealed: string }>();

  constructor(
    private readonly inner: WorkspaceStore,
    private readonly box: SecretBox,
  ) {}

  private sealEnv(list: readonly EnvVar[]): EnvVar[] {
    return list.map((e) => ({ ...e, value: e.value === '' ? '' : this.box.seal(e.value) }));
  }

  private sealRecord(record: WorkspaceRecord): WorkspaceRecord {
    let spec = this.sealedSpecs.get(record.spec);
    if (!spec) {
      spec = {
        ...record.spec,
        initializer: record.spec.initializer === '' ? '' : this.box.seal(record.spec.initializer),
        envvars: this.sealEnv(record.spec.envvars),
        sysEnvvars: this.sealEnv(record.spec.sysEnvvars),
      };
      this.sealedSpecs.set(record.spec, spec);
    }
    let token = this.sealedTokens.get(record.id);
    if (token?.plain !== record.ownerToken) {
      token = { plain: record.ownerToken, sealed: record.ownerToken === '' ? '' : this.box.seal(record.ownerToken) };
      this.sealedTokens.set(record.id, token);
    }
    return { ...record, ownerToken: token.sealed, spec };
  }

  private openRecord(record: WorkspaceRecord): { record: WorkspaceRecord; wasPlain: boolean } {
    const s = record.spec;
    const values = [
      record.ownerToken,
      s.initializer,
      ...s.envvars.map((e) => e.value),
      ...s.sysEnvvars.map((e) => e.value),
    ];
    const wasPlain = values.some((v) => v !== '' && !isSealed(v));
    const openEnv = (list: readonly EnvVar[]): EnvVar[] => list.map((e) => ({ ...e, value: this.box.open(e.value) }));
    try {
      return {
        record: {
          ...record,
          ownerToken: this.box.open(record.ownerToken),
          spec: {
            ...s,
            initializer: this.box.open(s.initializer),
            envvars: openEnv(s.envvars),
            sysEnvvars: openEnv(s.sysEnvvars),
          },
        },
        wasPlain,
      };
    } catch (cause) {
      const what = this.box.created
        ? `the secrets key ${this.box.keyFile} did not exist and was created on this start`
        : `the secrets key ${this.box.keyFile} is not the one it was written with`;
      throw new FailedPreconditionError(
        `cannot open the secrets of workspace record ${record.id}: ${what}; restore the original key file ` +
          '(or remove the workspace records that were written with it)',
        { cause },
      );
    }
  }

  async load(): Promise<StoreLoadResult> {
    const loaded = await this.inner.load();
    const records: WorkspaceRecord[] = [];
    for (const stored of loaded.records) {
      const { record, wasPlain } = this.openRecord(stored);
      records.push(record);
      // Written before sealing existed: replace the plain file with a sealed one now.
      // Deliberate: a failed write is logged by the inner store's onError, and the plain file is replaced by the
      // next save of this workspace (every change is persisted); loading must not fail over a best-effort upgrade.
      if (wasPlain) void this.inner.save(this.sealRecord(record)).catch(() => undefined);
    }
    return { ...loaded, records };
  }

  save(record: WorkspaceRecord): Promise<void> {
    return this.inner.save(this.sealRecord(record));
  }

  remove(id: string): Promise<void> {
    this.sealedTokens.delete(id);
    return this.inner.remove(id);
  }

  reserveVersion(version: number): void {
    this.inner.reserveVersion(version);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
