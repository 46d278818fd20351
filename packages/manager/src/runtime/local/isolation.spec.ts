import { chmod, chown, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { firstValueFrom, filter, take, timeout } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RuntimeEvent, RuntimeWorkspaceSpec } from '@workbay/api';
import {
  createNetns,
  createWorkspaceVeth,
  deleteNetns,
  listLinks,
  listNetns,
  readWorkspaceFirewall,
  WORKSPACE_FIREWALL_TABLE,
} from '@workbay/nsinsider';
import { LocalRuntime } from './local-runtime.js';
import type { LocalWorkspaceState } from './local-runtime.js';
import type { LocalRuntimeConfigInput } from './config.js';
import { WorkspaceNetworks } from './network.js';

// Attacks from inside an isolated workspace against the host and its neighbours, on the real LocalRuntime with
// real namespaces, veths and nftables (root only). Each attack is made for real by a probe running as the
// workspace; the test fails if any of them gets through.

const isRoot = process.getuid?.() === 0;

/**
 * The probe: runs as the workspace. Tries every target in PROBES (TCP connect), the host files in READS, writes
 * into /workspace and /tmp, looks at /proc, then records it all in /workspace/result.json and serves HTTP on PORT.
 */
const probeScript = `
const fs = require('node:fs');
const net = require('node:net');
const http = require('node:http');
const connect = (host, port) => new Promise((resolve) => {
  const s = net.connect({ host, port });
  const done = (r) => { clearTimeout(t); s.destroy(); resolve(r); };
  const t = setTimeout(() => done('timeout'), 1500);
  s.once('connect', () => done('connected'));
  s.once('error', (e) => done(e.code || 'error'));
});
const read = (p) => { try { return 'read:' + fs.readFileSync(p, 'utf8').slice(0, 20); } catch (e) { return e.code; } };
(async () => {
  const server = http.createServer((req, res) => res.end('ide of ' + process.env.WORKBAY_INSTANCE_ID));
  await new Promise((r) => server.listen(Number(process.env.PORT), '0.0.0.0', r));
  const result = { uid: process.getuid(), gid: process.getgid(), cwd: process.cwd(), connects: {}, reads: {},
    iwsSocket: process.env.WORKBAY_IWS_SOCKET, home: process.env.HOME };
  const probes = JSON.parse(process.env.PROBES || '{}');
  // Its own gateway (the host end of its veth, a host address) from the routing table, little-endian hex.
  const gw = fs.readFileSync('/proc/net/route', 'utf8').split('\\n').map((l) => l.split('\\t')).find((f) => f[1] === '00000000');
  if (gw) probes.ownGateway = { host: gw[2].match(/../g).reverse().map((h) => parseInt(h, 16)).join('.'), port: Number(process.env.HOST_PORT) };
  result.gateway = probes.ownGateway && probes.ownGateway.host;
  for (const [name, t] of Object.entries(probes)) result.connects[name] = await connect(t.host, t.port);
  for (const [name, p] of Object.entries(JSON.parse(process.env.READS || '{}'))) result.reads[name] = read(p);
  result.procEntries = fs.readdirSync('/proc').filter((n) => /^\\d+$/.test(n)).length;
  result.hostPidVisible = fs.existsSync('/proc/' + process.env.HOST_PID + '/cmdline');
  fs.writeFileSync('/workspace/created-by-workspace.txt', 'mine\\n');
  fs.writeFileSync('/tmp/private-' + process.env.WORKBAY_INSTANCE_ID, 'private\\n');
  result.hostTmpVisible = fs.existsSync(process.env.HOST_TMP_FILE);
  fs.writeFileSync('/workspace/result.json.tmp', JSON.stringify(result));
  fs.renameSync('/workspace/result.json.tmp', '/workspace/result.json');
})();
`;

interface ProbeResult {
  gateway?: string;
  iwsSocket?: string;
  home?: string;
  uid: number;
  gid: number;
  cwd: string;
  connects: Record<string, string>;
  reads: Record<string, string>;
  procEntries: number;
  hostPidVisible: boolean;
  hostTmpVisible: boolean;
}

let base: string;
let stateDir: string;
let secretFile: string;
let hostTmpFile: string;
let hostServer: net.Server;
let hostPort: number;
let counter = 0;
const runtimes: LocalRuntime[] = [];

beforeAll(async () => {
  if (!isRoot) return;
  // Not under /tmp: the workspace's private /tmp would hide the content directories anyway, and the point is to
  // prove that the runtime hides its neighbours' content (readable 0755 directories) by itself.
  base = await mkdtemp('/var/lib/workbay-isolation-test-');
  await chmod(base, 0o755);
  stateDir = path.join(base, 'state');
  secretFile = path.join('/etc', `workbay-test-secret-${process.pid}`);
  await writeFile(secretFile, 'root secret\n', { mode: 0o600 });
  hostTmpFile = path.join(os.tmpdir(), `workbay-host-visible-${process.pid}`);
  await writeFile(hostTmpFile, 'host tmp\n');
  // Stands in for the manager, the daemon, metrics: bound to every host address, loopback included.
  hostServer = net.createServer((s) => s.end('host service\n'));
  await new Promise<void>((resolve) => hostServer.listen(0, '0.0.0.0', resolve));
  hostPort = (hostServer.address() as net.AddressInfo).port;
});

afterAll(async () => {
  if (!isRoot) return;
  hostServer.close();
  await rm(secretFile, { force: true });
  await rm(hostTmpFile, { force: true });
  await rm(base, { recursive: true, force: true });
});

afterEach(async () => {
  for (const runtime of runtimes.splice(0)) {
    for (const state of await runtime.list()) await runtime.stop(state.instanceId, { gracePeriodMs: 0 });
    await runtime.close();
  }
});

async function newRuntime(config: LocalRuntimeConfigInput = {}): Promise<LocalRuntime> {
  const runtime = await LocalRuntime.create({
    config: {
      stateDir,
      readiness: { intervalMs: 20 },
      images: { probe: { command: [process.execPath, '-e', probeScript] } },
      ...config,
    },
  });
  runtimes.push(runtime);
  return runtime;
}

/** A content directory as the daemon makes it: owned by the workspace's own uid, world-readable. */
async function contentDir(uid: number): Promise<string> {
  const dir = path.join(base, 'area', `inst-${++counter}`);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await writeFile(path.join(dir, 'README.md'), `content of ${counter}\n`, { mode: 0o644 });
  await chown(dir, uid, uid);
  return dir;
}

function spec(contentDir: string, image: string, env: Record<string, string> = {}): RuntimeWorkspaceSpec {
  const n = ++counter;
  return {
    instanceId: `iso-${n}`,
    workspaceId: `ws-iso-${n}`,
    owner: 'owner-1',
    image,
    url: '',
    headless: false,
    type: 'regular',
    contentDir,
    env: { WORKBAY_INSTANCE_ID: `iso-${n}`, ...env },
    ports: [23000],
    className: 'default',
    resources: { memoryBytes: 512 * 1024 * 1024, pids: 256 },
  };
}

function nextEvent(runtime: LocalRuntime, type: RuntimeEvent['type'], instanceId: string): Promise<RuntimeEvent> {
  return firstValueFrom(
    runtime.events$.pipe(
      filter((e) => e.type === type && e.instanceId === instanceId),
      take(1),
      timeout(30_000),
    ),
  );
}

async function startReady(runtime: LocalRuntime, s: RuntimeWorkspaceSpec): Promise<LocalWorkspaceState> {
  const ready = nextEvent(runtime, 'ready', s.instanceId);
  const began = performance.now();
  await runtime.start(s);
  const event = await ready;
  console.log(
    `isolated workspace ${s.instanceId} (${s.image}): start() to ready in ${Math.round(performance.now() - began)} ms`,
  );
  return event.state as LocalWorkspaceState;
}

async function waitForJson<T>(file: string): Promise<T> {
  for (let i = 0; i < 600; i++) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text) return JSON.parse(text) as T;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ${file}`);
}

function runCommandText(file: string, args: string[]): Promise<{ stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('close', (code) => (code === 0 ? resolve({ stdout }) : reject(new Error(`${file} exited ${code}`))));
  });
}

function hostAddress(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? [])
      if (a.family === 'IPv4' && !a.internal && !a.address.startsWith('10.88.')) return a.address;
  }
  return '127.0.0.1';
}

describe.runIf(isRoot)('LocalRuntime isolation: attacks from inside a workspace have no effect', () => {
  it('runs as 33333 mapped to the content owner and reaches nothing of the host or its neighbour', async () => {
    const runtime = await newRuntime();
    expect(runtime.isolation.namespaces).toBe(true);
    const neighbourDir = await contentDir(200_201);
    const neighbour = await startReady(runtime, spec(neighbourDir, 'workbay/default'));

    const dir = await contentDir(200_202);
    const s = spec(dir, 'probe');
    // The daemon's per-workspace service dirs, as it lays them out: both the prober's and its neighbour's.
    const iwsOf = (content: string): string => path.join(path.dirname(content), '.iws', path.basename(content));
    for (const [content, uid] of [
      [dir, 200_202],
      [neighbourDir, 200_201],
    ] as const) {
      await mkdir(iwsOf(content), { recursive: true, mode: 0o700 });
      await writeFile(path.join(iwsOf(content), 'marker'), `iws of ${path.basename(content)}\n`);
      await chown(iwsOf(content), uid, uid);
      await chown(path.join(iwsOf(content), 'marker'), uid, uid);
    }
    const own = { host: '127.0.0.1', port: 23000 };
    const probes = {
      ownLoopback: own, // control: the probe itself works
      hostLoopback: { host: '127.0.0.1', port: hostPort },
      hostAddress: { host: hostAddress(), port: hostPort },
      neighbourIde: { host: neighbour.host, port: neighbour.idePort },
      neighbourGateway: { host: neighbour.net!.hostAddress, port: hostPort },
    };
    const reads = {
      rootSecret: secretFile,
      neighbourContent: path.join(neighbourDir, 'README.md'),
      ownContent: '/workspace/README.md',
      ownIws: '/.workbay/marker',
      neighbourIws: path.join(iwsOf(neighbourDir), 'marker'),
      neighbourLog: path.join(stateDir, 'logs', `${neighbour.instanceId}.log`),
      runtimeRecord: path.join(stateDir, 'instances', `${neighbour.instanceId}.json`),
    };
    // The gateway (host end of its own veth) is only known once the network is up: probe it through the env too.
    const started = runtime.start({
      ...s,
      env: {
        ...s.env,
        PROBES: JSON.stringify(probes),
        READS: JSON.stringify(reads),
        HOST_PID: String(process.pid),
        HOST_PORT: String(hostPort),
        HOST_TMP_FILE: hostTmpFile,
      },
    });
    const state = await started;
    const result = await waitForJson<ProbeResult>(path.join(dir, 'result.json'));

    console.log('probe result', JSON.stringify(result));
    expect(result.uid).toBe(33333);
    expect(result.gid).toBe(33333);
    expect(result.cwd).toBe('/workspace');
    expect(result.connects.ownLoopback).toBe('connected');
    expect(result.gateway).toBe(state.net!.hostAddress);
    for (const name of ['hostLoopback', 'hostAddress', 'ownGateway', 'neighbourIde', 'neighbourGateway']) {
      expect({ name, outcome: result.connects[name] }).not.toEqual({ name, outcome: 'connected' });
    }
    expect(result.reads.ownContent).toBe(`read:content of ${path.basename(dir).slice(5)}\n`);
    expect(result.reads.rootSecret).toBe('EACCES');
    expect(result.reads.ownIws).toBe(`read:iws of ${path.basename(dir)}\n`);
    expect(result.iwsSocket).toBe('/.workbay/daemon.sock');
    expect(result.home).toBe('/workspace');
    expect(result.reads.neighbourIws).not.toMatch(/^read:/);
    expect(result.reads.neighbourLog).not.toMatch(/^read:/);
    expect(result.reads.runtimeRecord).not.toMatch(/^read:/);
    // The neighbour's log is there on the host (so the refusal above is the sandbox's doing).
    expect((await stat(path.join(stateDir, 'logs', `${neighbour.instanceId}.log`))).isFile()).toBe(true);
    expect(result.reads.neighbourContent).not.toMatch(/^read:/);
    expect(result.hostPidVisible).toBe(false);
    expect(result.procEntries).toBeLessThan(10);
    expect(result.hostTmpVisible).toBe(false);

    // Files it creates belong to its host identity; its /tmp was its own.
    expect((await stat(path.join(dir, 'created-by-workspace.txt'))).uid).toBe(200_202);
    await expect(stat(path.join(os.tmpdir(), `private-${s.instanceId}`))).rejects.toThrow();

    // The host, as the proxy does, reaches the workspace's IDE on its own address and port.
    expect(state.host).toBe(state.net!.address);
    expect(state.portMap).toEqual({ 23000: 23000 });
    const ide = await (await fetch(`http://${state.host}:${state.idePort}/`)).text();
    expect(ide).toBe(`ide of ${s.instanceId}`);
    const neighbourPage = await (await fetch(`http://${neighbour.host}:${neighbour.idePort}/api/info`)).json();
    expect(neighbourPage).toMatchObject({
      contentDir: '/workspace',
      hostname: neighbour.instanceId.replace('iso', 'ws-iso'),
    });
  });

  it('cannot change its own network, mounts, hostname or sandbox init, not even from a user namespace of its own', async () => {
    // Each line tries one thing; the workspace's namespaces belong to the host's user namespace, so none may work.
    const attacks = [
      'ip link set eth0 down',
      'ip addr add 10.88.255.1/30 dev eth0',
      'ip route del default',
      'unshare --user --map-root-user ip link set eth0 down',
      'unshare --user --map-root-user umount -l /workspace',
      'mount -t tmpfs evil /workspace',
      'umount -l /tmp',
      'hostname evil',
      'kill -9 1',
      'cat /proc/1/environ',
      'sh -c "echo 0 > /proc/sys/net/ipv4/ip_forward"',
      'chown 0 /workspace/mine',
      'nsenter --target 1 --mount true',
    ];
    // Controls: the tools are there and work where they are allowed, so a refusal above is a refusal.
    const controls = ['ip link show eth0', 'unshare --user --map-root-user true', 'hostname', 'touch /tmp/x'];
    const script = [
      'touch mine',
      'for a in "$@"; do if sh -c "$a" >/dev/null 2>&1; then echo "SUCCEEDED: $a"; else echo "refused: $a"; fi; done > attacks.txt',
      'mv attacks.txt attacks.done',
      'exec sleep 600',
    ].join('\n');
    const runtime = await newRuntime({
      // Nested namespaces allowed: the attacks from a user namespace of its own are the point here.
      nestedNamespaces: 'limited',
      images: {
        attacker: {
          command: ['/bin/sh', '-c', script, 'attacker', ...controls, ...attacks],
          readiness: { kind: 'none' },
        },
      },
    });
    const dir = await contentDir(200_205);
    const s = spec(dir, 'attacker');
    const state = await runtime.start(s);
    let report = '';
    for (let i = 0; i < 400 && !report; i++) {
      report = await readFile(path.join(dir, 'attacks.done'), 'utf8').catch(() => '');
      if (!report) await new Promise((r) => setTimeout(r, 50));
    }
    console.log(`attacks from inside:\n${report}`);
    expect(report.trim().split('\n')).toEqual([
      ...controls.map((c) => `SUCCEEDED: ${c}`),
      ...attacks.map((a) => `refused: ${a}`),
    ]);
    // Seen from the host, its network is as the runtime made it.
    const { stdout } = await runCommandText('ip', ['-n', state.net!.netns, '-j', 'route']);
    expect(JSON.parse(stdout)).toContainEqual(
      expect.objectContaining({ dst: 'default', gateway: state.net!.hostAddress }),
    );
    expect((await stat(path.join(dir, 'mine'))).uid).toBe(200_205);
  });

  it('stop removes the veth, the netns and the cgroup; the host table keeps only prefix-wide rules', async () => {
    const runtime = await newRuntime();
    const s = spec(await contentDir(200_203), 'workbay/default');
    const state = await startReady(runtime, s);
    const netState = state.net!;
    expect((await listLinks(netState.ifName)).map((l) => l.name)).toContain(netState.ifName);
    expect(await listNetns(netState.netns)).toContain(netState.netns);
    expect(state.cgroupDirs.length).toBeGreaterThan(0);
    const table = await readWorkspaceFirewall();
    expect(table).toContain(`table inet ${WORKSPACE_FIREWALL_TABLE}`);
    expect(table).toContain('iifname "wbv*"');

    await runtime.stop(s.instanceId, { gracePeriodMs: 5_000 });
    expect((await listLinks(netState.ifName)).filter((l) => l.alias.endsWith(` ${s.instanceId}`))).toEqual([]);
    expect(await listNetns(netState.netns)).not.toContain(netState.netns);
    for (const dir of state.cgroupDirs) await expect(stat(dir)).rejects.toThrow();
    // Nothing of the workspace is left in the host table: its rules never named it.
    const after = (await readWorkspaceFirewall()) ?? '';
    expect(after).not.toContain(netState.ifName + '"');
    expect(after).not.toContain(netState.address);
  });

  it("a restarted runtime re-adopts a running isolated workspace and cleans a crashed one's leftovers", async () => {
    const first = await LocalRuntime.create({ config: { stateDir, readiness: { intervalMs: 20 } } });
    const s = spec(await contentDir(200_204), 'workbay/default');
    const ready = nextEvent(first, 'ready', s.instanceId);
    const st = await first.start(s);
    await ready;
    await first.close();

    // What a manager that crashed half-way through a start leaves: a claimed link and a netns, no record.
    const tag = WorkspaceNetworks.tagFor(path.resolve(stateDir));
    await createNetns(`wb-${tag}-ghost-1`);
    await createWorkspaceVeth({
      hostIfName: 'wbv65000',
      alias: `workbay ${tag} ghost-1`,
      netns: `wb-${tag}-ghost-1`,
      cidr: '10.88.253.0/30',
    });
    await createNetns(`wb-${tag}-ghost-2`); // a netns whose link was never made
    // Another runtime's (another tag) are not ours to remove.
    await createNetns('wb-othertag-live-1');

    const second = await newRuntime({ exitPollIntervalMs: 50 });
    expect(await listLinks('wbv65000')).toEqual([]);
    expect(await listNetns(`wb-${tag}-ghost`)).toEqual([]);
    expect(await listNetns('wb-othertag-live-1')).toEqual(['wb-othertag-live-1']);
    await deleteNetns('wb-othertag-live-1');
    const adopted = await second.inspect(s.instanceId);
    expect(adopted).toMatchObject({ status: 'running', pid: st.pid, host: st.host, net: st.net });
    expect(await (await fetch(`http://${st.host}:${st.idePort}/healthz`)).text()).toBe('ok\n');

    await second.stop(s.instanceId, { gracePeriodMs: 5_000 });
    expect(await listNetns(st.net!.netns)).not.toContain(st.net!.netns);
  });
});
