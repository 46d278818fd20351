/**
 * TEST ONLY: every workspace pod that ever existed, from a list-and-watch of the API server (re-listed whenever the
 * watch ends, so an API server restart loses nothing that still exists): which uids each pod name had, and whether
 * each reached Running. "None duplicated" means one uid per name; "none lost" means every name is there.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubernetesObject, KubernetesTestCluster, KubernetesWatch } from '@workbay/testing';

interface Pod extends KubernetesObject {
  status?: { phase?: string };
}

export interface PodLedger {
  /** The uids pod `name` had, in the order they appeared. */
  uids(name: string): string[];
  /** Whether the pod with this uid was ever seen Running. */
  ranAt(uid: string): boolean;
  /** Date.now() when this process first saw pod `name` Running (the bench's reference for Subscribe delays). */
  runningSeenAt(name: string): number | undefined;
  stop(): Promise<void>;
}

const workspaceSelector = 'app.kubernetes.io/managed-by=workbay,app.kubernetes.io/component=workspace';

export function startPodLedger(cluster: KubernetesTestCluster, namespace: string): PodLedger {
  const uidsByName = new Map<string, string[]>();
  const running = new Set<string>();
  const runningSeen = new Map<string, number>();
  const podsPath = `/api/v1/namespaces/${namespace}/pods`;
  let stopped = false;
  let watch: KubernetesWatch | undefined;
  const note = (pod: Pod): void => {
    const name = pod.metadata?.name ?? '';
    const uid = pod.metadata?.uid ?? '';
    const uids = uidsByName.get(name) ?? [];
    if (!uids.includes(uid)) uids.push(uid);
    uidsByName.set(name, uids);
    if (pod.status?.phase === 'Running') {
      running.add(uid);
      if (!runningSeen.has(name)) runningSeen.set(name, Date.now());
    }
  };
  const loop = (async () => {
    while (!stopped) {
      try {
        const listed = await cluster.request<{ items: Pod[]; metadata: { resourceVersion: string } }>(
          'GET',
          `${podsPath}?labelSelector=${encodeURIComponent(workspaceSelector)}`,
        );
        if (listed.status !== 200) throw new Error(`listing pods: ${listed.status}`);
        for (const pod of listed.body.items) note(pod);
        watch = cluster.watch<Pod>(
          podsPath,
          (event) => event.type !== 'BOOKMARK' && event.type !== 'ERROR' && note(event.object),
          {
            resourceVersion: listed.body.metadata.resourceVersion,
            labelSelector: workspaceSelector,
          },
        );
        if (stopped) watch.stop();
        await watch.done;
      } catch {
        // Deliberate: a broken watch or a restarting API server: list again after a pause.
      }
      if (!stopped) await sleep(200);
    }
  })();
  return {
    uids: (name) => [...(uidsByName.get(name) ?? [])],
    ranAt: (uid) => running.has(uid),
    runningSeenAt: (name) => runningSeen.get(name),
    stop: async () => {
      stopped = true;
      watch?.stop();
      await loop;
    },
  };
}
