/**
 * The local runtime's integration scenario (start, Subscribe, ports through the proxy, admission, snapshot, stop
 * with final backup, restart from backup), step by step the same, against the Kubernetes runtime: a real API
 * server with deploy/kubernetes applied, two manager replicas under the manager ServiceAccount, two simulated
 * nodes each with a real daemon. The steps talk to the leader (its proxy serves the workspaces it runs).
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentservice, workspaceConditionBool } from '@workbay/api';
import { snapshotInit, startRequest } from '../security/harness.js';
import { startKubernetesHarness } from './harness.js';
import type { KubernetesHarness, Replica } from './harness.js';
import { UpdateRecorder, expectPhase, isPhase, wsman } from './kit.js';

let h: KubernetesHarness;
let leader: Replica;
let recorder: UpdateRecorder;
const owner = 'scenario';
const id = 'sc-main';
const metaId = 'meta-sc-main';
const echoPort = 24_100;
let token = '';

beforeAll(async () => {
  h = await startKubernetesHarness({ replicas: 2, serveWorkspaces: true });
  leader = await h.waitForLeader();
  recorder = new UpdateRecorder(leader.client, { mustMatch: { owner, metaId: '', annotations: {} } });
}, 240_000);

afterAll(async () => {
  recorder?.close();
  await h?.close();
});

/** The nodes whose daemon holds content for the instance (its directory in the node's working area). */
const contentNodes = (instance: string): string[] =>
  h.daemons.filter((d) => existsSync(path.join(d.workingArea, instance))).map((d) => d.node);

/** The content directory of an instance on the node holding it. */
function contentDir(instance: string): string {
  const [node] = contentNodes(instance);
  if (!node) throw new Error(`no node holds the content of ${instance}`);
  return path.join(h.daemons.find((d) => d.node === node)!.workingArea, instance);
}

async function podOf(instance: string) {
  return (await h.workspacePods()).find((p) => p.metadata?.name === `ws-${instance}`);
}

const proxy = (urlPath: string, headers: Record<string, string> = {}) =>
  fetch(`http://${leader.proxyAddress}${urlPath}`, { headers, redirect: 'manual' });

describe('the integration scenario on Kubernetes (two nodes, real API server)', () => {
  it('starts a workspace to RUNNING with one pod; Subscribe streams its phases', async () => {
    const started = await leader.client.startWorkspace(
      startRequest({ id, owner, metaId, ports: [echoPort], env: { GREETING: 'hello' } }),
    );
    token = started.ownerToken;
    expect(token).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const running = await expectPhase(leader.client, id, 'running');
    expect(workspaceConditionBool.fromProto(running.conditions!.deployed)).toBe(true);
    const pod = await podOf(id);
    expect(pod?.status?.phase).toBe('Running');
    expect(h.kubelet.nodes).toContain(pod!.spec.nodeName);
    await recorder.waitFor(id, isPhase('running'));
    expect(recorder.phases(id)).toEqual(['pending', 'creating', 'initializing', 'running']);
  });

  it('initializes the content on the node the pod runs on', async () => {
    const pod = await podOf(id);
    expect(contentNodes(id)).toEqual([pod!.spec.nodeName]);
  });

  it('routes the workspace URL and its exposed port through the proxy, for the owner only', async () => {
    expect((await proxy(`/ws/${id}/hello`)).status).toBe(401);
    expect((await proxy(`/ws/${id}/hello`, { 'x-workbay-owner-token': 'nope' })).status).toBe(403);
    const ide = await proxy(`/ws/${id}/hello?x=1`, { 'x-workbay-owner-token': token });
    expect(ide.status).toBe(200);
    // The simulated kubelet answers on every container port of the pod with the pod's name.
    expect(await ide.text()).toContain(`ws-${id}`);
    const port = await proxy(`/ws/${id}/port/${echoPort}/x`, { 'x-workbay-owner-token': token });
    expect(port.status).toBe(200);
    expect(await port.text()).toContain(`ws-${id}`);
    expect((await proxy(`/ws/${id}/port/${echoPort + 1}/x`, { 'x-workbay-owner-token': token })).status).toBe(404);
    expect((await proxy(`/ws/${id}/port/${echoPort}/x`)).status).toBe(401);
  });

  it('admission: ADMIT_EVERYONE opens the workspace and its ports, ADMIT_OWNER_ONLY closes them again', async () => {
    await leader.client.controlAdmission({ id, level: wsman.AdmissionLevel.ADMIT_EVERYONE });
    expect((await proxy(`/ws/${id}/`)).status).toBe(200);
    expect((await proxy(`/ws/${id}/port/${echoPort}/`)).status).toBe(200);
    await leader.client.controlAdmission({ id, level: wsman.AdmissionLevel.ADMIT_OWNER_ONLY });
    expect((await proxy(`/ws/${id}/`)).status).toBe(401);
  });

  it('snapshot: a workspace started from it gets the files', async () => {
    await writeFile(path.join(contentDir(id), 'notes.txt'), 'snapshot me');
    const { url } = await leader.client.takeSnapshot({ id, returnImmediately: false });
    expect(url).toMatch(/@/);
    expect((await leader.client.describeWorkspace({ id })).status!.conditions!.snapshot).toBe(url);
    const fromSnapshot = 'sc-from-snapshot';
    await leader.client.startWorkspace(startRequest({ id: fromSnapshot, owner, initializer: snapshotInit(url) }));
    await expectPhase(leader.client, fromSnapshot, 'running');
    expect(await readFile(path.join(contentDir(fromSnapshot), 'notes.txt'), 'utf8')).toBe('snapshot me');
    await leader.client.stopWorkspace({ id: fromSnapshot, policy: wsman.StopWorkspacePolicy.ABORT });
    await expectPhase(leader.client, fromSnapshot, 'stopped');
  });

  it('stops NORMALLY with a final backup: pod gone, content released, Subscribe saw the whole way', async () => {
    await writeFile(path.join(contentDir(id), 'kept.txt'), 'backed up');
    await leader.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await expectPhase(leader.client, id, 'stopped');
    expect(stopped.conditions!.failed).toBe('');
    expect(workspaceConditionBool.fromProto(stopped.conditions!.finalBackupComplete)).toBe(true);
    expect(workspaceConditionBool.fromProto(stopped.conditions!.stoppedByRequest)).toBe(true);
    expect(await podOf(id)).toBeUndefined();
    expect(contentNodes(id)).toEqual([]);
    await recorder.waitFor(id, isPhase('stopped'));
    expect(recorder.phases(id)).toEqual(['pending', 'creating', 'initializing', 'running', 'stopping', 'stopped']);
    const versions = recorder.of(id).map((s) => s.statusVersion);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
  });

  it('restarts from the backup: a new instance of the same workspace gets its files back', async () => {
    const again = 'sc-main-2';
    const backup = contentservice.WorkspaceInitializer.fromPartial({
      spec: { $case: 'backup', value: { checkoutLocation: '', fromVolumeSnapshot: false } },
    });
    await leader.client.startWorkspace(startRequest({ id: again, owner, metaId, initializer: backup }));
    await expectPhase(leader.client, again, 'running');
    expect(await readFile(path.join(contentDir(again), 'kept.txt'), 'utf8')).toBe('backed up');
    expect(await readFile(path.join(contentDir(again), 'notes.txt'), 'utf8')).toBe('snapshot me');
    await leader.client.stopWorkspace({ id: again, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await expectPhase(leader.client, again, 'stopped');
    expect(workspaceConditionBool.fromProto(stopped.conditions!.finalBackupComplete)).toBe(true);
  });
});
