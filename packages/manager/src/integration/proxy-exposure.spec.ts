/**
 * The proxy reaches only a workspace's own ports, and open connections do not outlive their admission: attacks
 * against the real manager (real local runtime, real daemon) through ControlPort, StartWorkspace and raw HTTP.
 */
import { createServer } from 'node:net';
import { InvalidArgumentError, wsman } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';
import {
  firstResponseComplete,
  hostPort,
  openConnection,
  parseRawResponse,
  sendRaw,
} from '../test-support/raw-http.js';
import type { OpenConnection } from '../test-support/raw-http.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

const portSpec = (port: number, visibility = wsman.PortVisibility.PORT_VISIBILITY_PRIVATE): wsman.PortSpec => ({
  port,
  visibility,
  url: '',
  protocol: 0,
});

describe("proxy: only the workspace's own ports, and revocation closes open connections", () => {
  let h: Harness;
  const ws: Record<'a' | 'b', { id: string; token: string; echo: number }> = {} as never;

  async function startEcho(): Promise<{ id: string; token: string; echo: number }> {
    const echo = await freePort();
    const request = startRequest({
      image: 'test/echo',
      spec: { envvars: [{ name: 'ECHO_PORT', value: String(echo) }], ports: [portSpec(echo)] },
    });
    const { ownerToken } = await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');
    return { id: request.id, token: ownerToken, echo };
  }

  beforeAll(async () => {
    h = await startHarness({ config: { proxy: { address: '127.0.0.1:0', domain: 'ws.test' } } });
    ws.a = await startEcho();
    ws.b = await startEcho();
  });
  afterAll(async () => {
    await h?.close();
  });

  /** ControlPort must fail with INVALID_ARGUMENT naming spec.port and change nothing. */
  async function refused(id: string, port: number, reason: RegExp): Promise<void> {
    const before = h.running.core.statusVersion;
    const error = await h.client.controlPort({ id, expose: true, spec: portSpec(port) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error, `ControlPort ${port}`).toBeInstanceOf(InvalidArgumentError);
    expect((error as InvalidArgumentError).field).toBe('spec.port');
    expect((error as Error).message).toMatch(reason);
    expect(h.running.core.statusVersion).toBe(before);
  }

  const maintenanceEnabled = async (): Promise<boolean> => {
    const res = await fetch(`http://${h.running.metricsAddress}/admin/maintenance`);
    return ((await res.json()) as { enabled: boolean }).enabled;
  };

  it("ControlPort refuses the manager's and daemon's own ports, system ports and other workspaces' ports", async () => {
    const own = [h.running.grpcAddress, h.running.proxyAddress, h.running.metricsAddress, h.daemonProcess.address];
    for (const address of own) await refused(ws.a.id, hostPort(address).port, /manager's own endpoints/);
    await refused(ws.a.id, 22, /system port/);
    const b = h.running.core.getWorkspace(ws.b.id)!;
    const bIde = b.progress.portMap?.[String(b.progress.idePort)] ?? b.progress.idePort;
    await refused(ws.a.id, bIde, /IDE port range|another workspace/);
    await refused(ws.a.id, ws.b.echo, /belongs to another workspace/);
    for (const bad of [0, 70000]) {
      await expect(h.client.controlPort({ id: ws.a.id, expose: true, spec: portSpec(bad) })).rejects.toMatchObject({
        field: 'spec.port',
      });
    }
    // Its own ports stay exposable.
    await h.client.controlPort({ id: ws.a.id, expose: true, spec: portSpec(ws.a.echo) });
  });

  it('ControlPort bounds the number of exposed ports', async () => {
    const record = h.running.core.getWorkspace(ws.a.id)!;
    // Above the kernel's ephemeral range (32768-60999): no endpoint of the manager or a workspace, which all bind
    // port 0, can hold one of these (a CI run met the manager's own at 41051).
    const extra = Array.from({ length: 64 - record.spec.ports.length }, (_, i) => 61000 + i);
    for (const port of extra) await h.client.controlPort({ id: ws.a.id, expose: true, spec: portSpec(port) });
    await refused(ws.a.id, 61100, /already exposes 64 ports/);
    // Re-exposing one it has is still fine; then clean up.
    await h.client.controlPort({ id: ws.a.id, expose: true, spec: portSpec(extra[0]!) });
    for (const port of extra) await h.client.controlPort({ id: ws.a.id, expose: false, spec: portSpec(port) });
  });

  it('the proxy cannot be made to reach the admin endpoint or the gRPC port', async () => {
    const ops = hostPort(h.running.metricsAddress).port;
    const grpc = hostPort(h.running.grpcAddress).port;
    const proxy = h.running.proxyAddress;
    const put = (path: string, headers = '') =>
      sendRaw(
        proxy,
        `PUT ${path} HTTP/1.1\r\nhost: ${proxy}\r\n${headers}content-type: application/json\r\ncontent-length: 16\r\n\r\n{"enabled":true}`,
      ).then((r) => parseRawResponse(r.raw));

    // Ports that came in through StartWorkspace (not ControlPort) are checked by the proxy on every request.
    const sneaky = startRequest({
      image: 'test/echo',
      spec: { ports: [portSpec(ops, wsman.PortVisibility.PORT_VISIBILITY_PUBLIC), portSpec(grpc)] },
    });
    let sneakyToken = '';
    try {
      sneakyToken = (await h.client.startWorkspace(sneaky)).ownerToken;
      await waitForPhase(h.client, sneaky.id, 'running');
    } catch (error) {
      // Refusing them at StartWorkspace is as good.
      expect(error).toBeInstanceOf(InvalidArgumentError);
    }
    const auth = `x-workbay-owner-token: ${sneakyToken}\r\n`;
    const attempts = [
      await put(`/ws/${sneaky.id}/port/${ops}/admin/maintenance`),
      await put(`/ws/${sneaky.id}/port/${ops}/admin/maintenance`, auth),
      await put(`/ws/${sneaky.id}/port/${grpc}/`, auth),
      await put(`http://127.0.0.1:${ops}/admin/maintenance`),
      await put(`127.0.0.1:${ops}`),
      await put(`/ws/${ws.a.id}/port/${ops}/admin/maintenance`, `x-workbay-owner-token: ${ws.a.token}\r\n`),
      await put(`/ws/${ws.a.id}/..%2F..%2Fadmin/maintenance`, `x-workbay-owner-token: ${ws.a.token}\r\n`),
      await put(`/ws/%2e%2e/admin/maintenance`),
      await put(
        `/ws/${ws.a.id}/port/${ws.a.echo}/../../../admin/maintenance`,
        `x-workbay-owner-token: ${ws.a.token}\r\n`,
      ),
    ];
    const viaHost = await sendRaw(
      proxy,
      `PUT /admin/maintenance HTTP/1.1\r\nhost: ${ops}-${sneaky.id}.ws.ws.test\r\n${auth}content-length: 16\r\n\r\n{"enabled":true}`,
    );
    attempts.push(parseRawResponse(viaHost.raw));
    for (const answer of attempts) {
      expect(answer).toBeDefined();
      // Refused, or answered by a workspace's own echo server: never by the admin endpoint.
      if (answer!.status < 400) expect(answer!.rest).toMatch(/"server":"(ide|echo)"/);
      expect(answer!.rest).not.toMatch(/"enabled":true/);
    }
    expect(await maintenanceEnabled()).toBe(false);
    expect(h.running.core.isMaintenanceEnabled()).toBe(false);
  });

  /** Opens an upgraded tunnel through the proxy and proves it carries bytes. */
  async function tunnel(path: string, headers = ''): Promise<OpenConnection> {
    const c = await openConnection(h.running.proxyAddress);
    c.write(`GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n${headers}\r\n`);
    await c.until((t) => t.includes('\r\n\r\n'));
    expect(c.received()).toMatch(/^HTTP\/1.1 101/);
    c.write('ping');
    await c.until((t) => t.endsWith('ping'));
    return c;
  }

  /** A keep-alive connection that has had one answered request. */
  async function keepAlive(path: string, headers = ''): Promise<OpenConnection> {
    const c = await openConnection(h.running.proxyAddress);
    c.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n${headers}\r\n`);
    await c.until((t) => firstResponseComplete(t));
    expect(parseRawResponse(c.received())!.status).toBe(200);
    return c;
  }

  it('making a port private closes connections that came in without the token; the owner keeps his', async () => {
    const { id, echo, token } = ws.a;
    await h.client.controlPort({ id, expose: true, spec: portSpec(echo, wsman.PortVisibility.PORT_VISIBILITY_PUBLIC) });
    const stranger = await tunnel(`/ws/${id}/port/${echo}/socket`);
    const strangerHttp = await keepAlive(`/ws/${id}/port/${echo}/page`);
    const owner = await tunnel(`/ws/${id}/port/${echo}/socket`, `x-workbay-owner-token: ${token}\r\n`);
    await h.client.controlPort({ id, expose: true, spec: portSpec(echo) });
    await stranger.closed;
    await strangerHttp.closed;
    owner.write('still-open');
    await owner.until((t) => t.endsWith('still-open'));
    // Removing the port closes even the owner's tunnel.
    await h.client.controlPort({ id, expose: false, spec: portSpec(echo) });
    await owner.closed;
    await h.client.controlPort({ id, expose: true, spec: portSpec(echo) });
  });

  it('admission back to owner-only closes the strangers’ tunnels and keep-alive connections', async () => {
    const { id, token } = ws.a;
    await h.client.controlAdmission({ id, level: wsman.AdmissionLevel.ADMIT_EVERYONE });
    const stranger = await tunnel(`/ws/${id}/socket`);
    const strangerHttp = await keepAlive(`/ws/${id}/`);
    const owner = await tunnel(`/ws/${id}/socket`, `x-workbay-owner-token: ${token}\r\n`);
    await h.client.controlAdmission({ id, level: wsman.AdmissionLevel.ADMIT_OWNER_ONLY });
    await stranger.closed;
    await strangerHttp.closed;
    owner.write('owner-still');
    await owner.until((t) => t.endsWith('owner-still'));
    owner.socket.destroy();
    const again = await sendRaw(h.running.proxyAddress, `GET /ws/${id}/ HTTP/1.1\r\nhost: x\r\n\r\n`);
    expect(parseRawResponse(again.raw)!.status).toBe(401);
  });

  it('stopping the workspace closes its tunnels and keep-alive connections', async () => {
    const { id, token, echo } = ws.b;
    const auth = `x-workbay-owner-token: ${token}\r\n`;
    const ide = await tunnel(`/ws/${id}/socket`, auth);
    const port = await tunnel(`/ws/${id}/port/${echo}/socket`, auth);
    const http = await keepAlive(`/ws/${id}/`, auth);
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    await Promise.all([ide.closed, port.closed, http.closed]);
    await waitForPhase(h.client, id, 'stopped');
  });
});
