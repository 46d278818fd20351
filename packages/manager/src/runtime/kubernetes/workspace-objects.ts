/**
 * How a workspace record is kept in the cluster: one `Workspace` object (`workspaces.workbay.dev`, see
 * deploy/kubernetes/crd-workspaces.yaml) plus one Secret for its credentials.
 * - `spec`: what StartWorkspace asked for, written once when the workspace is accepted (by any replica), plus the
 *   desired state other replicas may write later (`stopRequested`). The structured fields are for `kubectl`;
 *   `spec.record` holds the accepted record without its secrets.
 * - `status`: written by the leader only, through the status subresource: phase, `statusVersion`, conditions for
 *   `kubectl`, and `status.record`, the record as the lifecycle last committed it (secrets stripped). When the
 *   leader's writes fall behind, one write carries several changes: `status.transitions` holds the visible ones
 *   before `status.record`, oldest first, so that followers still publish every transition.
 * - Records are JSON text, not nested objects: the API server tracks the owner of every field of a custom object
 *   (managedFields) on every write, and a record has dozens of fields. Measured on kube-apiserver v1.37.2 with 32
 *   writers: 510 status writes/s with the record as one string against 295/s nested, and twice the creates/s.
 * - The owner token, the initializer (it carries git credentials) and environment values live in the Secret
 *   named by `spec.secretRef`, never in the object. Each start creates its own Secret, `ws-<name>-secrets-<claim>`
 *   with a random claim: two replicas starting the same id at once never touch each other's Secret (the one whose
 *   object create loses deletes its own), and a replica that dies between its Secret and its object leaves a
 *   Secret no object names, which the leader sweeps (see KubernetesWorkspaceRepository).
 *
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import type { WorkbayErrorCode } from '@workbay/api';
import type { RecordRequest } from '../../core/repository.js';
import type { EnvVar, StopPolicy, WorkspaceRecord } from '../../domain/types.js';

export const workspaceResource = { group: 'workbay.dev', version: 'v1alpha1', plural: 'workspaces' } as const;
export const workspaceApiVersion = `${workspaceResource.group}/${workspaceResource.version}`;

/** Selects the objects and Secrets Workbay owns. */
export const managedLabel = 'app.kubernetes.io/managed-by';
export const managedSelector = `${managedLabel}=workbay`;
/** The instance id exactly (object names are restricted to lower-case DNS names). */
export const instanceIdAnnotation = 'workbay.dev/instance-id';
/** Holds the object until its workspace is stopped and its final backup recorded. */
export const finalBackupFinalizer = 'workbay.dev/final-backup';

export interface ObjectMeta {
  readonly name?: string;
  readonly namespace?: string;
  readonly resourceVersion?: string;
  readonly deletionTimestamp?: Date;
  readonly finalizers?: string[];
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}

/** A record without its secrets (what the object may hold). */
export type StoredRecord = Omit<WorkspaceRecord, 'ownerToken'>;

export interface WorkspaceObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec: {
    readonly ownership: { owner: string; workspaceId: string; team?: string; project?: string };
    readonly type: string;
    readonly class: string;
    readonly image: { workspace: string; ide?: string };
    readonly secretRef: { name: string };
    /** The accepted record, JSON ({@link encodeRecord}). */
    readonly record: string;
    /** Desired state: any replica may ask for a stop; the leader acts on it. */
    readonly stopRequested?: { policy: StopPolicy; at: string };
    /** Record changes followers asked for, the newest per kind; the leader answers in `status.acks`. */
    readonly requests?: Partial<Record<RecordRequest['kind'], { id: string; request: RecordRequest }>>;
  };
  status?: {
    phase?: string;
    statusVersion?: number;
    url?: string;
    runtime?: { nodeName?: string; podName?: string };
    conditions?: { type: string; status: 'True' | 'False' | 'Unknown'; reason?: string; message?: string }[];
    /** The committed record, JSON ({@link encodeRecord}). */
    record?: string;
    /** Visible changes committed before `record` that this write carries too (oldest first), JSON. */
    transitions?: string[];
    acks?: RequestAcks;
  };
}

/** The leader's answers to follower requests, per kind: the request id, and the error when it was refused. */
export type RequestAcks = Partial<
  Record<
    RecordRequest['kind'],
    { id: string; result?: string; error?: { code: WorkbayErrorCode; message: string; field?: string } }
  >
>;

/** What the Secret of a workspace holds (string data). */
export interface WorkspaceSecrets {
  readonly ownerToken: string;
  readonly initializer: string;
  readonly envvars: readonly EnvVar[];
  readonly sysEnvvars: readonly EnvVar[];
}

const dnsName = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/**
 * The object name of an instance id: the id itself when it is a lower-case DNS name not starting with the digests'
 * `wb-`, else a digest (ids may hold upper case and '_'); the exact id is in an annotation either way. One name per
 * id: the id `wb-<digest of Alice_ws1>` named Alice_ws1's object (red team round 12, N2).
 */
export function objectNameOf(id: string): string {
  if (id.length <= 200 && dnsName.test(id) && !id.startsWith('wb-')) return id;
  return `wb-${createHash('sha256').update(id).digest('hex').slice(0, 40)}`;
}

/** The Secret of one start of workspace `id`: its name carries a fresh random claim (see the module docs). */
export function newSecretName(id: string): string {
  return `${secretPrefixOf(id)}${randomBytes(6).toString('hex')}`;
}

function secretPrefixOf(id: string): string {
  return `ws-${objectNameOf(id)}-secrets-`;
}

/**
 * The Secret an object names, when it is one of this workspace's (an object naming another workspace's Secret is
 * not believed: anyone with write access to the objects could point it at a Secret of somebody else's workspace).
 */
export function secretNameFor(object: WorkspaceObject): string | undefined {
  const id = instanceIdOf(object.metadata);
  const name = object.spec?.secretRef?.name;
  if (!id || typeof name !== 'string') return undefined;
  const prefix = secretPrefixOf(id);
  return name.startsWith(prefix) && /^[0-9a-f]{12}$/.test(name.slice(prefix.length)) ? name : undefined;
}

const noValues = (list: readonly EnvVar[]): EnvVar[] => list.map((e) => ({ name: e.name, value: '' }));

/** The record without anything secret: no owner token, no initializer, no environment values. */
export function storedRecordOf(record: WorkspaceRecord): StoredRecord {
  const { ownerToken: _token, ...rest } = record;
  return {
    ...rest,
    spec: {
      ...record.spec,
      initializer: '',
      envvars: noValues(record.spec.envvars),
      sysEnvvars: noValues(record.spec.sysEnvvars),
    },
  };
}

export function secretsOf(record: WorkspaceRecord): WorkspaceSecrets {
  return {
    ownerToken: record.ownerToken,
    initializer: record.spec.initializer,
    envvars: record.spec.envvars,
    sysEnvvars: record.spec.sysEnvvars,
  };
}

/** The record as the lifecycle sees it: the object's latest record with the Secret's values put back. */
export function recordOf(stored: StoredRecord, secrets: WorkspaceSecrets | undefined): WorkspaceRecord {
  if (!secrets) return { ...stored, ownerToken: '' };
  return {
    ...stored,
    ownerToken: secrets.ownerToken,
    spec: {
      ...stored.spec,
      initializer: secrets.initializer,
      envvars: secrets.envvars,
      sysEnvvars: secrets.sysEnvvars,
    },
  };
}

export function encodeRecord(record: WorkspaceRecord): string {
  return JSON.stringify(storedRecordOf(record));
}

/**
 * A record read back from an object, or undefined when the text is not one (anyone with write access to the
 * objects can put anything there: such an object is skipped, with a log line, never taken for a record).
 */
export function decodeRecord(text: unknown): StoredRecord | undefined {
  if (typeof text !== 'string') return undefined;
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null) return undefined;
    const record = value as Partial<StoredRecord>;
    const wellFormed =
      typeof record.id === 'string' &&
      typeof record.phase === 'string' &&
      typeof record.statusVersion === 'number' &&
      typeof record.spec === 'object' &&
      record.spec !== null &&
      typeof record.conditions === 'object' &&
      record.conditions !== null &&
      typeof record.progress === 'object' &&
      record.progress !== null;
    return wellFormed ? (record as StoredRecord) : undefined;
  } catch {
    return undefined;
  }
}

/** The newest record an object holds: the leader's status once written, the accepted spec before. */
export function storedRecordFrom(object: WorkspaceObject): StoredRecord | undefined {
  return decodeRecord(object.status?.record ?? object.spec.record);
}

/**
 * The transitions an object's status carries that are newer than `seen` (oldest first, at most `max`): in order,
 * below the record they precede, of this workspace; anything else is not the leader's and is passed over.
 */
export function transitionsFrom(
  object: WorkspaceObject,
  id: string,
  seen: number | undefined,
  max: number,
): StoredRecord[] {
  const texts = object.status?.transitions;
  if (!Array.isArray(texts) || texts.length === 0) return [];
  const persisted = object.status?.statusVersion ?? 0;
  const records: StoredRecord[] = [];
  let last = seen ?? -Infinity;
  for (const text of texts.slice(0, max)) {
    const stored = decodeRecord(text);
    if (!stored || stored.id !== id || stored.statusVersion <= last || stored.statusVersion >= persisted) continue;
    last = stored.statusVersion;
    records.push(stored);
  }
  return records;
}

export function newWorkspaceObject(record: WorkspaceRecord, namespace: string, secretName: string): WorkspaceObject {
  const name = objectNameOf(record.id);
  return {
    apiVersion: workspaceApiVersion,
    kind: 'Workspace',
    metadata: {
      name,
      namespace,
      labels: { [managedLabel]: 'workbay' },
      annotations: { [instanceIdAnnotation]: record.id },
      finalizers: [finalBackupFinalizer],
    },
    spec: {
      ownership: { owner: record.owner, workspaceId: record.metaId, team: record.team, project: record.project },
      type: record.type,
      class: record.spec.className,
      image: { workspace: record.spec.image, ide: record.spec.ideImage.webRef || undefined },
      secretRef: { name: secretName },
      record: encodeRecord(record),
    },
  };
}

/**
 * The status subresource for a committed record (kubectl-friendly fields beside the full record), carrying the
 * visible changes committed before it that were not written yet (`earlier`, oldest first).
 */
export function statusOf(
  record: WorkspaceRecord,
  earlier: readonly WorkspaceRecord[] = [],
): NonNullable<WorkspaceObject['status']> {
  const c = record.conditions;
  type Condition = { type: string; status: 'True' | 'False'; message?: string };
  const condition = (type: string, on: boolean, message = ''): Condition =>
    message
      ? { type, status: on ? 'True' : 'False', message: message.slice(0, 1024) }
      : { type, status: on ? 'True' : 'False' };
  return {
    phase: record.phase,
    statusVersion: record.statusVersion,
    url: record.url,
    runtime: { nodeName: record.progress.nodeName },
    conditions: [
      condition('Failed', c.failed !== '', c.failed),
      condition('Timeout', c.timeout !== '', c.timeout),
      condition('Deployed', c.deployed),
      condition('StoppedByRequest', c.stoppedByRequest),
      condition('Aborted', c.aborted),
      condition('BackupComplete', c.finalBackupComplete),
    ],
    record: encodeRecord(record),
    ...(earlier.length > 0 ? { transitions: earlier.map(encodeRecord) } : {}),
  };
}

export function secretObject(record: WorkspaceRecord, namespace: string, name: string): object {
  const secrets = secretsOf(record);
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: {
      name,
      namespace,
      labels: { [managedLabel]: 'workbay' },
      annotations: { [instanceIdAnnotation]: record.id },
    },
    stringData: {
      ownerToken: secrets.ownerToken,
      initializer: secrets.initializer,
      envvars: JSON.stringify(secrets.envvars),
      sysEnvvars: JSON.stringify(secrets.sysEnvvars),
    },
  };
}

/** Reads a Secret's data (base64 values, as the API serves them). */
export function secretsFromData(data: Record<string, string> | undefined): WorkspaceSecrets | undefined {
  if (!data) return undefined;
  const text = (key: string): string => (data[key] ? Buffer.from(data[key], 'base64').toString('utf8') : '');
  const list = (key: string): EnvVar[] => {
    const raw = text(key);
    return raw ? (JSON.parse(raw) as EnvVar[]) : [];
  };
  return {
    ownerToken: text('ownerToken'),
    initializer: text('initializer'),
    envvars: list('envvars'),
    sysEnvvars: list('sysEnvvars'),
  };
}

export function instanceIdOf(meta: ObjectMeta): string | undefined {
  return meta.annotations?.[instanceIdAnnotation];
}
