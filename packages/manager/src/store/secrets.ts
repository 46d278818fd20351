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
 * never loaded with its secrets silently missing. Records written before sealing existed, or with one sealed value
 * per field (`wbsec1:`), are rewritten in the current form on load.
 *
 * The current form seals all secrets of a record together (see `./sealed-record.ts`), and a loaded record opens
 * them on first use; the key is checked at load by its id in each sealed value, without decrypting anything.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FailedPreconditionError } from '@workbay/api';
import type { WorkspaceRecord } from '../domain/types.js';
import type { StoreLoadResult, WorkspaceStore } from './file-store.js';
import type { StoredRecord } from './sealed-record.js';
import { lazyRecord, storedForm } from './sealed-record.js';

/** One value sealed on its own (records before issue 9 sealed each secret field so). */
const prefix = 'wbsec1:';
/** A record's secrets sealed together: `wbsec2:<key id>:<base64 of iv, tag, ciphertext>`. */
const bundlePrefix = 'wbsec2:';
const keyBytes = 32;
const ivBytes = 12;
const tagBytes = 16;

export function isSealed(value: string): boolean {
  return value.startsWith(prefix);
}

/** Encrypts and decrypts short strings with one AES-256-GCM key. */
export class SecretBox {
  /** One key object for every cipher: creating one from the raw bytes per value cost more than the decryption. */
  private readonly keyObject: KeyObject;
  /** Names the key in every sealed bundle, so that a load finds a wrong key without decrypting anything. */
  private readonly keyId: string;

  private constructor(
    key: Buffer,
    /** Where the key lives (for messages). */
    readonly keyFile: string,
    /** Whether this start created the key (no sealed record can predate it). */
    readonly created: boolean,
  ) {
    this.keyObject = createSecretKey(key);
    // A MAC of a constant says nothing about the key but tells keys apart.
    this.keyId = createHmac('sha256', key).update('workbay secrets key id').digest('base64url').slice(0, 11);
  }
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
    return `${prefix}${this.encrypt(plain)}`;
  }

  /** Opens a sealed value; plain values pass through. Throws when the value was sealed with another key. */
  open(value: string): string {
    return isSealed(value) ? this.decrypt(value.slice(prefix.length)) : value;
  }

  /** Seals a record's secrets bundle, naming this key. */
  sealBundle(plain: string): string {
    return `${bundlePrefix}${this.keyId}:${this.encrypt(plain)}`;
  }

  /** The start of every bundle this key sealed. */
  get bundlePrefix(): string {
    return `${bundlePrefix}${this.keyId}:`;
  }

  /** Whether a bundle was sealed with this key (by its key id; decrypting would also check its integrity). */
  isBundleOfThisKey(sealed: string): boolean {
    return sealed.startsWith(`${bundlePrefix}${this.keyId}:`);
  }

  /** Opens a bundle sealed with this key; throws when it was not, or when it was changed. */
  openBundle(sealed: string): string {
    if (!this.isBundleOfThisKey(sealed)) throw new Error('the bundle was sealed with another key');
    return this.decrypt(sealed.slice(bundlePrefix.length + this.keyId.length + 1));
  }

  private encrypt(plain: string): string {
    const iv = randomBytes(ivBytes);
    const cipher = createCipheriv('aes-256-gcm', this.keyObject, iv);
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
  }

  private decrypt(base64: string): string {
    const raw = Buffer.from(base64, 'base64');
    const decipher = createDecipheriv('aes-256-gcm', this.keyObject, raw.subarray(0, ivBytes));
    decipher.setAuthTag(raw.subarray(ivBytes, ivBytes + tagBytes));
    return decipher.update(raw.subarray(ivBytes + tagBytes), undefined, 'utf8') + decipher.final('utf8');
  }
}

/** Seals the secret fields of records on save and opens them (on first use) after load; see the module docs. */
export class SealingWorkspaceStore implements WorkspaceStore {
  constructor(
    private readonly inner: WorkspaceStore,
    private readonly box: SecretBox,
  ) {}

  /**
   * The stored form. Sealed on every save, not cached: one encryption is nothing next to the synced write that
   * follows, and a cache would keep a sealed copy of every record's secrets in memory beside the plain ones.
   */
  private sealRecord(record: WorkspaceRecord): WorkspaceRecord {
    // The inner store writes what it is given; the stored form is a record only in name.
    return storedForm(record, (bundle) => this.box.sealBundle(bundle)) as unknown as WorkspaceRecord;
  }

  private failure(id: string, cause?: unknown): FailedPreconditionError {
    const what = this.box.created
      ? `the secrets key ${this.box.keyFile} did not exist and was created on this start`
      : `the secrets key ${this.box.keyFile} is not the one it was written with`;
    return new FailedPreconditionError(
      `cannot open the secrets of workspace record ${id}: ${what}; restore the original key file ` +
        '(or remove the workspace records that were written with it)',
      cause === undefined ? undefined : { cause },
    );
  }

  /**
   * A loaded record, ready for the core (in place: the inner store hands its fresh objects over), and whether it
   * was stored in an older form and must be written again.
   */
  private openRecord(loaded: WorkspaceRecord): { record: WorkspaceRecord; older: boolean } {
    const stored = loaded as unknown as StoredRecord;
    if (typeof stored.secrets === 'string') {
      if (!this.box.isBundleOfThisKey(stored.secrets)) throw this.failure(stored.id);
      return { record: lazyRecord(stored, this.box), older: false };
    }
    // Written before sealing (plain) or with one sealed value per field (`wbsec1:`): opened now, rewritten.
    const s = loaded.spec;
    try {
      (loaded as { ownerToken: string }).ownerToken = this.box.open(loaded.ownerToken);
      (s as { initializer: string }).initializer = this.box.open(s.initializer);
      for (const e of [...s.envvars, ...s.sysEnvvars]) (e as { value: string }).value = this.box.open(e.value);
    } catch (cause) {
      throw this.failure(loaded.id, cause);
    }
    return { record: loaded, older: true };
  }

  async load(): Promise<StoreLoadResult> {
    const loaded = await this.inner.load();
    const records: WorkspaceRecord[] = [];
    for (const stored of loaded.records) {
      const { record, older } = this.openRecord(stored);
      records.push(record);
      // Deliberate: a failed write is logged by the inner store's onError, and the old file is replaced by the
      // next save of this workspace (every change is persisted); loading must not fail over a best-effort upgrade.
      if (older) void this.inner.save(this.sealRecord(record)).catch(() => undefined);
    }
    return { ...loaded, records };
  }

  save(record: WorkspaceRecord): Promise<void> {
    return this.inner.save(this.sealRecord(record));
  }

  remove(id: string): Promise<void> {
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
