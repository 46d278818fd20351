/**
 * The stored form of a workspace record's secrets, and records that open them only when they are used.
 *
 * Stored, a record has no `ownerToken` and its spec no `initializer`, `envvars` or `sysEnvvars`: the four travel
 * together, sealed as one value, in the record's last field `secrets` (`wbsec2:<key id>:<AES-256-GCM>`).
 *
 * Loaded, the record is the object the store parsed, with the four fields added back as enumerable getters that
 * open the sealed value on first use (and keep the result). A manager holding 10,000 stopped records thus decrypts
 * nothing at start-up: sealing had made loading them 34% slower and their memory 20% larger (issue 9), all of it
 * decryption work and its garbage. Getters added as new properties keep the objects in V8's fast mode with one
 * shared shape, and copies (`{ ...record }`) hold plain values, so the core sees plain records.
 *
 * @module
 */
import { FailedPreconditionError } from '@workbay/api';
import type { EnvVar, WorkspaceRecord } from '../domain/types.js';

/** The secrets of one record, plain. */
export interface RecordSecrets {
  readonly ownerToken: string;
  readonly initializer: string;
  readonly envvars: readonly EnvVar[];
  readonly sysEnvvars: readonly EnvVar[];
}

/** What opens a sealed bundle (the store's SecretBox); `bundlePrefix` starts every bundle it sealed. */
export interface BundleOpener {
  readonly bundlePrefix: string;
  openBundle(sealed: string): string;
}

/** The sealed form, compact (the sealed value stays in memory until used): token, initializer, env pairs. */
type Bundle = [ownerToken: string, initializer: string, envvars: [string, string][], sysEnvvars: [string, string][]];

/**
 * Where a loaded record and its spec keep the sealed value (non-enumerable: copies do not take it along). Nothing
 * else is kept per record until it is opened: the opened secrets go to {@link opened}, the opener is found by the
 * key id the value names.
 */
const sealedKey = Symbol('workbay.sealedSecrets');
const opened = new WeakMap<object, RecordSecrets>();
const openers = new Map<string, BundleOpener>();

/** A record as stored: see the module docs. */
export type StoredRecord = Omit<WorkspaceRecord, 'ownerToken' | 'spec'> & {
  readonly spec: Omit<WorkspaceRecord['spec'], 'initializer' | 'envvars' | 'sysEnvvars'>;
  readonly secrets: string;
};

/** The stored form of a plain record, its secrets sealed by `seal`. */
export function storedForm(record: WorkspaceRecord, seal: (bundle: string) => string): StoredRecord {
  // A loaded record that nobody changed or read keeps its sealed value: nothing to decrypt and seal again. The
  // secret fields are not read for it (reading them would open it).
  const sealed =
    unopenedSealedOf(record) ||
    seal(
      JSON.stringify([
        record.ownerToken,
        record.spec.initializer,
        record.spec.envvars.map((e): [string, string] => [e.name, e.value]),
        record.spec.sysEnvvars.map((e): [string, string] => [e.name, e.value]),
      ] satisfies Bundle),
    );
  return {
    ...without(record, recordSecretKeys),
    spec: without(record.spec, specSecretKeys),
    secrets: sealed,
  } as StoredRecord;
}

const recordSecretKeys: ReadonlySet<string> = new Set(['ownerToken', 'spec']);
const specSecretKeys: ReadonlySet<string> = new Set(['initializer', 'envvars', 'sysEnvvars']);

/** A copy of the object's own enumerable fields but `keys`, which are not read (a spread would read them). */
function without<T extends object>(object: T, keys: ReadonlySet<string>): Partial<T> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(object)) if (!keys.has(key)) out[key] = (object as Record<string, unknown>)[key];
  return out as Partial<T>;
}

/** The loaded record's sealed value when the record object is the loaded one itself and was never opened. */
function unopenedSealedOf(record: WorkspaceRecord): string | undefined {
  const sealed = sealedOf(record);
  return sealed !== undefined && sealed === sealedOf(record.spec) && !opened.has(record) && !opened.has(record.spec)
    ? sealed
    : undefined;
}

function sealedOf(target: object): string | undefined {
  return (target as Record<symbol, string | undefined>)[sealedKey];
}

/** The secrets of a loaded record (or of its spec), opened on the first call. */
function secretsOf(target: object, recordSpec?: object): RecordSecrets {
  const known = opened.get(target) ?? (recordSpec && opened.get(recordSpec));
  if (known) return known;
  const secrets = openBundle(sealedOf(target)!, (target as { id?: unknown }).id);
  opened.set(target, secrets);
  if (recordSpec && sealedOf(recordSpec) === sealedOf(target)) opened.set(recordSpec, secrets);
  return secrets;
}

function openBundle(sealed: string, id: unknown): RecordSecrets {
  const which = typeof id === 'string' ? `workspace record ${id}` : 'a workspace record';
  const opener = openers.get(sealed.slice(0, sealed.indexOf(':', sealed.indexOf(':') + 1) + 1));
  let value: unknown;
  try {
    if (!opener) throw new Error('no key for the sealed value');
    value = JSON.parse(opener.openBundle(sealed));
  } catch (cause) {
    throw new FailedPreconditionError(
      `cannot open the secrets of ${which}: the sealed value is damaged; restore the record file from a backup or ` +
        'remove it',
      { cause },
    );
  }
  if (!isBundle(value)) throw new FailedPreconditionError(`the sealed secrets of ${which} are not well-formed`);
  const env = (pairs: [string, string][]): EnvVar[] => pairs.map(([name, v]) => ({ name, value: v }));
  return { ownerToken: value[0], initializer: value[1], envvars: env(value[2]), sysEnvvars: env(value[3]) };
}

function isBundle(value: unknown): value is Bundle {
  const pairs = (list: unknown): boolean =>
    Array.isArray(list) &&
    list.every((p) => Array.isArray(p) && p.length === 2 && typeof p[0] === 'string' && typeof p[1] === 'string');
  return (
    Array.isArray(value) &&
    value.length === 4 &&
    typeof value[0] === 'string' &&
    typeof value[1] === 'string' &&
    pairs(value[2]) &&
    pairs(value[3])
  );
}

// One getter function each, shared by every record: no closure per record.
function ownerTokenGetter(this: WorkspaceRecord): string {
  return secretsOf(this, this.spec).ownerToken;
}
function initializerGetter(this: object): string {
  return secretsOf(this).initializer;
}
function envvarsGetter(this: object): readonly EnvVar[] {
  return secretsOf(this).envvars;
}
function sysEnvvarsGetter(this: object): readonly EnvVar[] {
  return secretsOf(this).sysEnvvars;
}

const lazy = (get: () => unknown): PropertyDescriptor => ({ get, enumerable: true, configurable: true });
// Made once: a load of 10,000 records defines these on every one of them.
const ownerTokenDescriptor = lazy(ownerTokenGetter);
const specDescriptors: PropertyDescriptorMap = {
  initializer: lazy(initializerGetter),
  envvars: lazy(envvarsGetter),
  sysEnvvars: lazy(sysEnvvarsGetter),
};

/**
 * Turns a parsed stored record (in place: the store hands its fresh objects over) into a record whose secrets
 * open on first use with `box`.
 */
export function lazyRecord(stored: StoredRecord, box: BundleOpener): WorkspaceRecord {
  openers.set(box.bundlePrefix, box);
  const sealed = stored.secrets;
  const record = stored as { secrets?: string };
  // `secrets` is the last property of a stored record: deleting it keeps the object's fast shape.
  delete record.secrets;
  Object.defineProperty(record, sealedKey, { value: sealed });
  Object.defineProperty(record, 'ownerToken', ownerTokenDescriptor);
  Object.defineProperty(stored.spec, sealedKey, { value: sealed });
  Object.defineProperties(stored.spec, specDescriptors);
  return record as unknown as WorkspaceRecord;
}
