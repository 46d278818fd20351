/**
 * The API calls behind the Workspace-object repository: Workspace objects (spec, status subresource, finalizer) and
 * their Secrets in one namespace. Failures are mapped to Workbay errors here (see `apiError`).
 *
 * @module
 */
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesListObject, V1Secret, V1SecretList } from '@kubernetes/client-node';
import { isWorkbayError } from '@workbay/api';
import type { WorkspaceRecord } from '../../domain/types.js';
import type { Logger } from '../../logger.js';
import { apiError } from './client.js';
import {
  managedSelector,
  newWorkspaceObject,
  objectNameOf,
  secretObject,
  workspaceResource,
} from './workspace-objects.js';
import type { WorkspaceObject } from './workspace-objects.js';

export class WorkspaceObjectsApi {
  private readonly objects: CustomObjectsApi;
  private readonly core: CoreV1Api;
  /** The collection paths, for watches. */
  readonly objectsPath: string;
  readonly secretsPath: string;

  constructor(
    kubeConfig: KubeConfig,
    private readonly namespace: string,
    private readonly logger: Logger,
  ) {
    this.objects = kubeConfig.makeApiClient(CustomObjectsApi);
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    const { group, version, plural } = workspaceResource;
    const ns = encodeURIComponent(namespace);
    this.objectsPath = `/apis/${group}/${version}/namespaces/${ns}/${plural}`;
    this.secretsPath = `/api/v1/namespaces/${ns}/secrets`;
  }

  listObjects(): Promise<KubernetesListObject<WorkspaceObject>> {
    return this.objects.listNamespacedCustomObject({
      ...this.target(),
      labelSelector: managedSelector,
    }) as Promise<KubernetesListObject<WorkspaceObject>>;
  }

  listSecrets(): Promise<V1SecretList> {
    return this.core.listNamespacedSecret({ namespace: this.namespace, labelSelector: managedSelector });
  }

  /** Creates the Secret `name` of one start of the workspace (see newSecretName). */
  async createSecret(record: WorkspaceRecord, name: string): Promise<void> {
    const namespace = this.namespace;
    try {
      await this.core.createNamespacedSecret({ namespace, body: secretObject(record, namespace, name) as V1Secret });
    } catch (error) {
      throw apiError(error, `creating the secrets of workspace ${record.id}`);
    }
  }

  async createObject(record: WorkspaceRecord, secretName: string): Promise<WorkspaceObject> {
    try {
      return (await this.objects.createNamespacedCustomObject({
        ...this.target(),
        body: newWorkspaceObject(record, this.namespace, secretName),
      })) as WorkspaceObject;
    } catch (error) {
      throw apiError(error, `creating workspace object ${objectNameOf(record.id)}`);
    }
  }

  async read(id: string): Promise<WorkspaceObject | undefined> {
    try {
      return (await this.objects.getNamespacedCustomObject({
        ...this.target(),
        name: objectNameOf(id),
      })) as WorkspaceObject;
    } catch (error) {
      const mapped = apiError(error, `reading workspace ${id}`);
      if (isWorkbayError(mapped, 'not-found')) return undefined;
      throw mapped;
    }
  }

  /**
   * Replaces the status against `known`'s resourceVersion; on 409 Conflict (someone changed the object, e.g. a
   * follower's stop request) re-reads it and writes against the newest one. Resolves to the object as written.
   */
  async writeStatus(
    id: string,
    status: NonNullable<WorkspaceObject['status']>,
    known: WorkspaceObject | undefined,
  ): Promise<WorkspaceObject> {
    const name = objectNameOf(id);
    let base = known ?? (await this.read(id));
    for (let attempt = 0; ; attempt += 1) {
      if (!base) throw apiError({ code: 404 }, `writing the status of ${name}`);
      try {
        return (await this.objects.replaceNamespacedCustomObjectStatus({
          ...this.target(),
          name,
          body: { ...base, status },
        })) as WorkspaceObject;
      } catch (error) {
        const mapped = apiError(error, `writing the status of ${name}`);
        if (!isWorkbayError(mapped, 'already-exists') || attempt >= 5) throw mapped;
        base = await this.read(id);
      }
    }
  }

  /** Merges `spec` into the object's spec (desired state a follower records). */
  async patchSpec(id: string, spec: Record<string, unknown>, what: string): Promise<void> {
    try {
      await this.objects.patchNamespacedCustomObject(
        { ...this.target(), name: objectNameOf(id), body: { spec } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    } catch (error) {
      throw apiError(error, `${what} for workspace ${id}`);
    }
  }

  /**
   * Releases the finalizer and deletes the object and its Secret (failures are logged; a Secret left behind is
   * swept by the leader).
   */
  async deleteObject(id: string, secretName: string | undefined): Promise<void> {
    const target = { ...this.target(), name: objectNameOf(id) };
    try {
      await this.objects.patchNamespacedCustomObject(
        { ...target, body: { metadata: { finalizers: null } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      await this.objects.deleteNamespacedCustomObject(target);
    } catch (error) {
      const mapped = apiError(error, `deleting workspace object ${target.name}`);
      // Deliberate: already gone is the goal; anything else is logged and the object stays for a later forget.
      if (!isWorkbayError(mapped, 'not-found')) {
        this.logger.error({ err: mapped, workspace: id }, 'cannot delete a workspace object');
      }
    }
    if (secretName) this.deleteSecret(secretName);
  }

  deleteSecret(name: string): void {
    this.core.deleteNamespacedSecret({ name, namespace: this.namespace }).catch((error: unknown) => {
      const mapped = apiError(error, `deleting Secret ${name}`);
      // Deliberate: a Secret already gone is fine; others are logged (the leader's sweep deletes it later).
      if (!isWorkbayError(mapped, 'not-found')) {
        this.logger.error({ err: mapped, secret: name }, 'cannot delete the secrets of a workspace');
      }
    });
  }

  private target(): { group: string; version: string; plural: string; namespace: string } {
    const { group, version, plural } = workspaceResource;
    return { group, version, plural, namespace: this.namespace };
  }
}
