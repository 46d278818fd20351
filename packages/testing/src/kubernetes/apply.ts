import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import YAML from 'yaml';
import { KubernetesApiError } from './client.js';
import type { KubernetesHttpClient, KubernetesObject } from './client.js';

/** Options of `KubernetesTestCluster.apply`. */
export interface KubernetesApplyOptions {
  /** Bearer token to apply with; default the admin token (pass a ServiceAccount token to test RBAC). */
  readonly token?: string;
  /** Namespace for namespaced objects without `metadata.namespace`; default `default`. */
  readonly namespace?: string;
  /** How long to wait for a CustomResourceDefinition to be Established; default 30 s. */
  readonly establishTimeoutMs?: number;
}

/** Parses a multi-document YAML string into objects (empty documents, e.g. comment-only ones, are dropped). */
export function parseManifests(yaml: string): KubernetesObject[] {
  const objects: KubernetesObject[] = [];
  for (const doc of YAML.parseAllDocuments(yaml)) {
    if (doc.errors.length > 0) throw new Error(`invalid YAML: ${doc.errors[0]!.message.slice(0, 200)}`);
    const value = doc.toJSON() as unknown;
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) throw new Error('a YAML document is not an object');
    objects.push(value as KubernetesObject);
  }
  return objects;
}

/**
 * Reads a kustomize directory the way `kubectl apply -k` would for the parts this repo uses: the files of
 * `resources` in order, `namespace` set on every namespaced-looking object that has none, and `images`
 * (newName/newTag) substituted in pod templates. Anything fancier (patches, generators, remote bases) is refused.
 */
export async function loadKustomization(dir: string): Promise<KubernetesObject[]> {
  const kustomization = parseManifests(await readFile(join(dir, 'kustomization.yaml'), 'utf8'))[0] as
    | {
        namespace?: string;
        resources?: string[];
        images?: { name: string; newName?: string; newTag?: string }[];
        [key: string]: unknown;
      }
    | undefined;
  if (!kustomization) throw new Error(`${dir}/kustomization.yaml is empty`);
  const unsupported = Object.keys(kustomization).filter(
    (key) => !['apiVersion', 'kind', 'namespace', 'resources', 'images'].includes(key),
  );
  if (unsupported.length) throw new Error(`kustomization fields not supported by the test kit: ${unsupported.join()}`);
  const objects: KubernetesObject[] = [];
  for (const file of kustomization.resources ?? []) {
    objects.push(...parseManifests(await readFile(join(dir, file), 'utf8')));
  }
  for (const object of objects) {
    if (kustomization.namespace && !clusterScopedKinds.has(object.kind ?? '')) {
      object.metadata = { ...object.metadata, namespace: kustomization.namespace };
    }
    const containers = podTemplateContainers(object);
    for (const container of containers) {
      const image = kustomization.images?.find((i) => i.name === container.image);
      if (image) container.image = `${image.newName ?? image.name}${image.newTag ? `:${image.newTag}` : ''}`;
    }
  }
  return objects;
}

// The kinds kustomize (and this kit, before discovery knows a kind) treat as cluster-scoped.
const clusterScopedKinds = new Set([
  'Namespace',
  'CustomResourceDefinition',
  'ClusterRole',
  'ClusterRoleBinding',
  'Node',
  'PersistentVolume',
  'StorageClass',
  'PriorityClass',
  'ValidatingWebhookConfiguration',
  'MutatingWebhookConfiguration',
]);

function podTemplateContainers(object: KubernetesObject): { image?: string }[] {
  const spec = object['spec'] as { template?: { spec?: PodSpecLike } } & PodSpecLike;
  const podSpec = object.kind === 'Pod' ? spec : spec?.template?.spec;
  return [...(podSpec?.containers ?? []), ...(podSpec?.initContainers ?? [])];
}
interface PodSpecLike {
  containers?: { image?: string }[];
  initContainers?: { image?: string }[];
}

interface ResourceInfo {
  readonly name: string;
  readonly namespaced: boolean;
}

/** Resolves kinds to resource paths through the API server's discovery, as kubectl does. */
export class ResourceResolver {
  private readonly groups = new Map<string, Map<string, ResourceInfo>>();

  constructor(private readonly client: KubernetesHttpClient) {}

  /** The collection path of an object's kind in its namespace, e.g. `/apis/apps/v1/namespaces/ns/daemonsets`. */
  async collectionPath(
    object: KubernetesObject,
    defaultNamespace: string,
    waitMs = 0,
  ): Promise<{ path: string; namespaced: boolean }> {
    const apiVersion = object.apiVersion ?? '';
    const kind = object.kind ?? '';
    if (!apiVersion || !kind) throw new Error('a manifest has no apiVersion or kind');
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    const deadline = Date.now() + waitMs;
    for (;;) {
      const info = (await this.discover(apiVersion, base)).get(kind);
      if (info) {
        if (!info.namespaced) return { path: `${base}/${info.name}`, namespaced: false };
        const namespace = object.metadata?.namespace ?? defaultNamespace;
        return { path: `${base}/namespaces/${encodeURIComponent(namespace)}/${info.name}`, namespaced: true };
      }
      // A freshly established CRD reaches discovery a moment later.
      this.groups.delete(apiVersion);
      if (Date.now() >= deadline) throw new Error(`the API server serves no kind ${kind} in ${apiVersion}`);
      await sleep(100);
    }
  }

  private async discover(apiVersion: string, base: string): Promise<Map<string, ResourceInfo>> {
    const known = this.groups.get(apiVersion);
    if (known) return known;
    const res = await this.client.request<{ resources?: { name: string; kind: string; namespaced: boolean }[] }>(
      'GET',
      base,
    );
    const resources = new Map<string, ResourceInfo>();
    if (res.status === 200) {
      for (const r of res.body.resources ?? []) {
        if (!r.name.includes('/')) resources.set(r.kind, { name: r.name, namespaced: r.namespaced });
      }
    } else if (res.status !== 404) {
      throw new KubernetesApiError('GET', base, res.status, res.body);
    }
    this.groups.set(apiVersion, resources);
    return resources;
  }
}

/**
 * Creates every object, or replaces it (PUT with the current resourceVersion) when it exists; waits for a
 * CustomResourceDefinition to be Established before going on, so a later custom object in the same list applies.
 */
export async function applyObjects(
  client: KubernetesHttpClient,
  resolver: ResourceResolver,
  manifests: readonly KubernetesObject[] | string,
  options: KubernetesApplyOptions = {},
): Promise<KubernetesObject[]> {
  const objects = typeof manifests === 'string' ? parseManifests(manifests) : manifests;
  const requestOptions = { token: options.token };
  const applied: KubernetesObject[] = [];
  for (let object of objects) {
    const name = object.metadata?.name;
    if (!name) throw new Error(`a ${object.kind ?? 'manifest'} has no metadata.name`);
    // Custom objects may follow their CRD in the same list: give discovery a few seconds to catch up.
    const resolved = await resolver.collectionPath(object, options.namespace ?? 'default', 10_000);
    const collection = resolved.path;
    // A cluster-scoped object must not name a namespace (kustomize's `namespace:` may have set one).
    if (!resolved.namespaced && object.metadata?.namespace) {
      const { namespace: _ignored, ...metadata } = object.metadata;
      object = { ...object, metadata };
    }
    const itemPath = `${collection}/${encodeURIComponent(name)}`;
    let result: KubernetesObject | undefined;
    for (let attempt = 0; !result; attempt++) {
      const created = await client.request<KubernetesObject>('POST', collection, object, requestOptions);
      if (created.status >= 200 && created.status < 300) {
        result = created.body;
        break;
      }
      if (created.status !== 409) throw new KubernetesApiError('POST', collection, created.status, created.body);
      const current = await client.must<KubernetesObject>('GET', itemPath, undefined, requestOptions);
      const replacement = {
        ...object,
        metadata: { ...object.metadata, resourceVersion: current.metadata?.resourceVersion },
      };
      const replaced = await client.request<KubernetesObject>('PUT', itemPath, replacement, requestOptions);
      if (replaced.status >= 200 && replaced.status < 300) result = replaced.body;
      // 409 again: someone wrote in between (or it was deleted): start over, a few times.
      else if (replaced.status !== 409 && replaced.status !== 404) {
        throw new KubernetesApiError('PUT', itemPath, replaced.status, replaced.body);
      } else if (attempt >= 5) throw new KubernetesApiError('PUT', itemPath, replaced.status, replaced.body);
    }
    if (object.kind === 'CustomResourceDefinition') {
      await waitEstablished(client, itemPath, options.establishTimeoutMs ?? 30_000, options.token);
    }
    applied.push(result);
  }
  return applied;
}

async function waitEstablished(
  client: KubernetesHttpClient,
  path: string,
  timeoutMs: number,
  token: string | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let conditions: { type: string; status: string; message?: string }[] = [];
  while (Date.now() < deadline) {
    const crd = await client.must<{ status?: { conditions?: typeof conditions } }>('GET', path, undefined, { token });
    conditions = crd.status?.conditions ?? [];
    if (conditions.some((c) => c.type === 'Established' && c.status === 'True')) return;
    await sleep(50);
  }
  throw new Error(`${path} not Established after ${timeoutMs} ms; conditions: ${JSON.stringify(conditions)}`);
}
