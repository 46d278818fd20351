/**
 * With isolation on (root), a workspace has its own address: every port number there is its own, including the
 * numbers the manager uses on the host. The proxy sends such a port to the workspace's address, never to the
 * host's loopback: the manager's admin endpoint stays out of reach.
 */
import { wsman } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, startRequest, testImages, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';
import { hostPort, parseRawResponse, sendRaw } from '../test-support/raw-http.js';

const isRoot = process.getuid?.() === 0;

/** Answers on PORT and ECHO_PORT on every address of its own network namespace, naming itself. */
const echoAnywhere = `
const http = require('node:http');
for (const [port, name] of [[process.env.PORT, 'ide'], [process.env.ECHO_PORT, 'echo']]) {
  if (!port) continue;
  http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end(JSON.stringify({ server: name, method: req.method, url: req.url })));
  }).listen(Number(port), '0.0.0.0');
}
process.on('SIGTERM', () => process.exit(0));
`;

describe.runIf(isRoot)('proxy on the isolated local runtime: the workspace’s own address only', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      config: {
        runtime: {
          kind: 'local',
          isolation: 'namespaces',
          readiness: { intervalMs: 50 },
          exitPollIntervalMs: 100,
          images: { ...testImages, 'test/echo-anywhere': { command: [process.execPath, '-e', echoAnywhere] } },
        },
      },
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  it("a port with the number of the manager's admin endpoint reaches the workspace, not the manager", async () => {
    const ops = hostPort(h.running.metricsAddress).port;
    const request = startRequest({
      image: 'test/echo-anywhere',
      spec: { envvars: [{ name: 'ECHO_PORT', value: String(ops) }] },
    });
    const { ownerToken } = await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');
    const host = h.running.core.getWorkspace(request.id)!.progress.runtimeHost!;
    expect(host).not.toMatch(/^127\./);
    // Its own address: ControlPort accepts the number.
    await h.client.controlPort({
      id: request.id,
      expose: true,
      spec: { port: ops, visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC, url: '', protocol: 0 },
    });
    const answer = await sendRaw(
      h.running.proxyAddress,
      `PUT /ws/${request.id}/port/${ops}/admin/maintenance HTTP/1.1\r\nhost: p\r\nx-workbay-owner-token: ${ownerToken}\r\ncontent-length: 16\r\n\r\n{"enabled":true}`,
    );
    const response = parseRawResponse(answer.raw);
    expect(response?.status).toBe(200);
    expect(JSON.parse(response!.rest)).toEqual({ server: 'echo', method: 'PUT', url: '/admin/maintenance' });
    expect(h.running.core.isMaintenanceEnabled()).toBe(false);
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    await waitForPhase(h.client, request.id, 'stopped');
  });
});
