/**
 * The NetworkPolicies that isolate workspace pods, kept by the runtime in its namespace:
 * - `workbay-workspace-ingress`: workspace pods accept connections only from the proxy's pods (the manager's by
 *   default), never from another workspace or anything else in the cluster.
 * - `workbay-workspace-egress`: workspace pods reach DNS (kube-dns, UDP/TCP 53) and addresses outside private,
 *   shared, link-local (the cloud metadata service), loopback and unique-local space, plus `allowedNetworks`.
 *   Nothing else: not the API server, the daemons, the manager, other workspaces or cluster services.
 *
 * They select workspace pods by the labels every workspace pod carries, so they hold for pods created before
 * them too. Enforcement is the CNI's: a cluster whose CNI ignores NetworkPolicy stores them and enforces nothing.
 *
 * @module
 */
import type { NetworkingV1Api, V1NetworkPolicy, V1NetworkPolicyPeer } from '@kubernetes/client-node';
import type { PluginLogger } from '@workbay/api';
import { nonPublicNetworks } from '@workbay/nsinsider';
import { parseCidr } from '../cidr.js';
import { apiError } from './client.js';
import type { KubernetesRuntimeConfig } from './config.js';
import { labels as podLabels } from './pods.js';

/** Selects the NetworkPolicies this runtime owns (and deletes when they are no longer wanted). */
export const networkPolicyLabels: Readonly<Record<string, string>> = {
  'app.kubernetes.io/managed-by': 'workbay',
  'app.kubernetes.io/component': 'workspace-network-policy',
};
export const networkPolicySelector = Object.entries(networkPolicyLabels)
  .map(([k, v]) => `${k}=${v}`)
  .join(',');

export const networkPolicyNames = { ingress: 'workbay-workspace-ingress', egress: 'workbay-workspace-egress' } as const;

/**
 * What the internet rule leaves out, per family: the special-purpose space the local runtime's firewall and the
 * daemon's outbound requests refuse too (`nonPublicNetworks`: private, CGNAT, link-local with the cloud metadata
 * service, loopback, documentation and benchmarking, multicast, reserved; NAT64 forms of them). IPv4-mapped IPv6
 * (`::ffff:0:0/96`) is left out: the API server refuses it in an ipBlock, and a connection to such an address leaves
 * the pod as IPv4, where the IPv4 list applies.
 */
export const blockedByDefault = {
  ipv4: nonPublicNetworks.ipv4,
  ipv6: nonPublicNetworks.ipv6.filter((network) => network !== '::ffff:0:0/96'),
};

const workspaceSelector = (): { matchLabels: Record<string, string> } => ({
  matchLabels: { [podLabels.managedBy]: 'workbay', [podLabels.component]: 'workspace' },
});

const ipBlock = (cidr: string): V1NetworkPolicyPeer => ({ ipBlock: { cidr } });

/** The NetworkPolicies the config asks for (none when `networkPolicies.enabled` is false). */
export function workspaceNetworkPolicies(config: KubernetesRuntimeConfig): V1NetworkPolicy[] {
  const settings = config.networkPolicies;
  if (!settings.enabled) return [];
  const metadata = (name: string) => ({ name, namespace: config.namespace, labels: { ...networkPolicyLabels } });
  const from = settings.ingressFrom;
  const ingress: V1NetworkPolicy = {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: metadata(networkPolicyNames.ingress),
    spec: {
      podSelector: workspaceSelector(),
      policyTypes: ['Ingress'],
      ingress: [
        {
          _from: [
            {
              podSelector: { matchLabels: { ...from.podLabels } },
              ...(from.namespaceLabels ? { namespaceSelector: { matchLabels: { ...from.namespaceLabels } } } : {}),
            },
          ],
          ...(settings.ingressPorts.length
            ? {
                ports: settings.ingressPorts.map((p) => ({
                  protocol: 'TCP',
                  port: p.port,
                  ...(p.endPort !== undefined && p.endPort !== p.port ? { endPort: p.endPort } : {}),
                })),
              }
            : {}),
        },
      ],
    },
  };
  const extraBlocked = { 4: [] as string[], 6: [] as string[] };
  for (const cidr of settings.blockedNetworks) extraBlocked[parseCidr(cidr)!.family].push(cidr);
  const dns = settings.dns;
  const egress: V1NetworkPolicy = {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: metadata(networkPolicyNames.egress),
    spec: {
      podSelector: workspaceSelector(),
      policyTypes: ['Egress'],
      egress: [
        {
          to: [
            {
              namespaceSelector: { matchLabels: { ...dns.namespaceLabels } },
              podSelector: { matchLabels: { ...dns.podLabels } },
            },
            ...dns.networks.map(ipBlock),
          ],
          ports: [
            { protocol: 'UDP', port: 53 },
            { protocol: 'TCP', port: 53 },
          ],
        },
        {
          to: [
            { ipBlock: { cidr: '0.0.0.0/0', except: unique([...blockedByDefault.ipv4, ...extraBlocked[4]]) } },
            { ipBlock: { cidr: '::/0', except: unique([...blockedByDefault.ipv6, ...extraBlocked[6]]) } },
          ],
        },
        ...(settings.allowedNetworks.length ? [{ to: settings.allowedNetworks.map(ipBlock) }] : []),
      ],
    },
  };
  return [ingress, egress];
}

const unique = (items: readonly string[]): string[] => [...new Set(items)];

/** What {@link ensureNetworkPolicies} did, by policy name. */
export interface NetworkPolicyChanges {
  readonly created: string[];
  readonly updated: string[];
  readonly deleted: string[];
  readonly unchanged: string[];
}

/**
 * Makes the namespace's Workbay NetworkPolicies what the config asks for: creates missing ones, replaces ones that
 * differ (an operator's edit included), deletes ones no longer wanted (all of them when disabled). Idempotent, and
 * safe when several replicas start at once (a lost create or a stale replace is read again and retried).
 */
export async function ensureNetworkPolicies(
  api: NetworkingV1Api,
  config: KubernetesRuntimeConfig,
  logger: PluginLogger,
): Promise<NetworkPolicyChanges> {
  const namespace = config.namespace;
  const changes: NetworkPolicyChanges = { created: [], updated: [], deleted: [], unchanged: [] };
  // The key in every failure: an operator whose cluster cannot take the policies learns where to switch them off.
  const failure = (error: unknown, what: string): Error =>
    apiError(error, `${what} (workspace isolation)`, 'runtime.kubernetes.networkPolicies');
  const call = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      throw failure(error, what);
    }
  };
  const existing = async (): Promise<Map<string, V1NetworkPolicy>> => {
    const list = await call('listing network policies', () =>
      api.listNamespacedNetworkPolicy({ namespace, labelSelector: networkPolicySelector }),
    );
    return new Map(list.items.map((p) => [p.metadata?.name ?? '', p]));
  };
  const desired = workspaceNetworkPolicies(config);
  let current = await existing();
  for (const policy of desired) {
    const name = policy.metadata!.name!;
    // Three attempts: a replica starting at the same time may create or replace it between our read and write.
    for (let attempt = 0; ; attempt++) {
      const found = current.get(name);
      if (found && sameContent(found, policy)) {
        changes.unchanged.push(name);
        break;
      }
      try {
        if (found) {
          const body = {
            ...policy,
            metadata: { ...policy.metadata, resourceVersion: found.metadata?.resourceVersion },
          };
          await api.replaceNamespacedNetworkPolicy({ name, namespace, body });
          changes.updated.push(name);
        } else {
          await api.createNamespacedNetworkPolicy({ namespace, body: policy });
          changes.created.push(name);
        }
        break;
      } catch (error) {
        // 409: created or replaced meanwhile; 404: deleted meanwhile. Read again and decide again.
        const status = statusOf(error);
        if ((status !== 409 && status !== 404) || attempt >= 2) {
          throw failure(error, `${found ? 'updating' : 'creating'} network policy ${name}`);
        }
        current = await existing();
      }
    }
  }
  const wanted = new Set(desired.map((p) => p.metadata!.name!));
  for (const name of current.keys()) {
    if (wanted.has(name)) continue;
    try {
      await api.deleteNamespacedNetworkPolicy({ name, namespace });
      changes.deleted.push(name);
    } catch (error) {
      if (statusOf(error) !== 404) throw failure(error, `deleting network policy ${name}`);
    }
  }
  if (changes.created.length || changes.updated.length || changes.deleted.length) {
    logger.info({ namespace, ...changes }, 'workspace network policies updated');
  }
  return changes;
}

function statusOf(error: unknown): number | undefined {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'number' ? code : undefined;
}

/** Spec and labels as the API server stores them, compared key-order-blind. */
function sameContent(stored: V1NetworkPolicy, wanted: V1NetworkPolicy): boolean {
  return (
    canonical(stored.spec) === canonical(wanted.spec) &&
    Object.entries(wanted.metadata?.labels ?? {}).every(([k, v]) => stored.metadata?.labels?.[k] === v)
  );
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>)
            .filter(([, x]) => x !== undefined)
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : v,
  );
}
