/**
 * Programs that run INSIDE workspaces as their image command (`node -e <source>`), written as plain CommonJS
 * source. They avoid `${` on purpose: the local runtime substitutes `${NAME}` in command arguments.
 *
 * - {@link escapeProbe}: the hostile workspace. It tries to reach everything of the host it can find and writes
 *   what it managed into `findings.json` in its working directory (its content); then serves its IDE port.
 * - {@link echoServer}: a workspace IDE that answers every request with what it received (request line and
 *   headers), logs the same into `requests.log` in its content, and echoes WebSocket-style upgrades.
 */

/** What the probe is told by the test (env `PROBE_CONFIG`, JSON). */
export interface ProbeConfig {
  /** host:port of the manager gRPC, the daemon gRPC, the ops endpoint, the proxy. */
  readonly manager: string;
  readonly daemon: string;
  readonly metrics: string;
  readonly proxy: string;
  /** Non-loopback IPv4 addresses of the host. */
  readonly hostIps: readonly string[];
  /** Ports to try on every host address besides 1-1024. */
  readonly ports: readonly number[];
  /** Another workspace: its id, where its IDE listens, its content dir on the host. */
  readonly victim: { readonly id: string; readonly host: string; readonly port: number; readonly content: string };
  /** Host paths the workspace must not read or write. */
  readonly secretPaths: readonly string[];
  readonly writablePaths: readonly string[];
  /** Host pids (manager, daemon) the workspace must neither see nor signal. */
  readonly pids: readonly number[];
  /** Unix sockets of the host (another workspace's iws socket) the workspace must not connect to. */
  readonly sockets: readonly string[];
}

export interface ProbeAttempt {
  readonly kind: string;
  readonly target: string;
  /** Whether the attack got through (a connection, an OK answer, a read, a write, a signal). */
  readonly reached: boolean;
  readonly detail: string;
}

export interface ProbeFindings {
  readonly uid: number;
  readonly gid: number;
  readonly hostname: string;
  readonly iwsSocket: string;
  readonly iwsReachable: boolean;
  readonly scanned: number;
  readonly attempts: readonly ProbeAttempt[];
}

export const escapeProbe = String.raw`
const net = require('net'), http2 = require('http2'), http = require('http'), fs = require('fs'), os = require('os');
const cfg = JSON.parse(process.env.PROBE_CONFIG);
const attempts = [];
const rec = (kind, target, reached, detail) => attempts.push({ kind, target, reached, detail: String(detail).slice(0, 300) });
const hostOf = (a) => a.slice(0, a.lastIndexOf(':'));
const portOf = (a) => Number(a.slice(a.lastIndexOf(':') + 1));
function connect(host, port, ms) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => { s.destroy(); resolve('timeout'); }, ms);
    s.on('connect', () => { clearTimeout(t); const from = s.localAddress + '>' + s.remoteAddress; s.destroy(); resolve('connected ' + from); });
    s.on('error', (e) => { clearTimeout(t); resolve(e.code || String(e)); });
  });
}
function gateway() {
  try {
    for (const line of fs.readFileSync('/proc/net/route', 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[1] === '00000000' && f[2]) {
        const n = parseInt(f[2], 16);
        return [n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255].join('.');
      }
    }
  } catch (e) {}
  return undefined;
}
function grpcCall(address, path, body) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v) => { if (!done) { done = true; try { client.close(); } catch (e) {} resolve(v); } };
    const client = http2.connect('http://' + address);
    client.on('error', (e) => finish({ reached: false, detail: e.code || String(e) }));
    const timer = setTimeout(() => finish({ reached: false, detail: 'timeout' }), 3000);
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    const req = client.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
    let bytes = 0, status;
    req.on('response', (h) => { if (h['grpc-status'] !== undefined) status = h['grpc-status']; });
    req.on('trailers', (h) => { status = h['grpc-status']; });
    req.on('data', (d) => { bytes += d.length; });
    req.on('end', () => { clearTimeout(timer); finish({ reached: status === '0', detail: 'grpc-status ' + status + ', ' + bytes + ' bytes' }); });
    req.on('error', (e) => { clearTimeout(timer); finish({ reached: false, detail: e.code || String(e) }); });
    req.end(frame);
  });
}
function httpCall(host, port, method, path, body) {
  return new Promise((resolve) => {
    const req = http.request({ host, port, method, path, timeout: 3000, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ reached: res.statusCode >= 200 && res.statusCode < 300, detail: res.statusCode + ' ' + text.slice(0, 100) }));
    });
    req.on('timeout', () => { req.destroy(); resolve({ reached: false, detail: 'timeout' }); });
    req.on('error', (e) => resolve({ reached: false, detail: e.code || String(e) }));
    req.end(body);
  });
}
const str = (field, s) => { const b = Buffer.from(s); return Buffer.concat([Buffer.from([(field << 3) | 2, b.length]), b]); };
async function main() {
  const gw = gateway();
  const hosts = Array.from(new Set(['127.0.0.1', 'localhost', gw, ...cfg.hostIps].filter(Boolean)));
  // Known services on every host address, all at once (dropped packets make each try wait for its timeout).
  const tries = [];
  for (const [name, address] of [['manager', cfg.manager], ['daemon', cfg.daemon], ['metrics', cfg.metrics], ['proxy', cfg.proxy]]) {
    for (const h of hosts) {
      const target = h + ':' + portOf(address);
      tries.push((async () => {
        const r = await connect(h, portOf(address), 1500);
        rec('connect-' + name, target, r.startsWith('connected'), r);
        if (name === 'manager') {
          const call = await grpcCall(target, '/wsman.WorkspaceManager/GetWorkspaces', Buffer.alloc(0));
          rec('grpc-GetWorkspaces', target, call.reached, call.detail);
        }
        if (name === 'daemon') {
          const d = await grpcCall(target, '/wsdaemon.WorkspaceContentService/DisposeWorkspace', str(1, cfg.victim.id));
          rec('grpc-daemon-DisposeWorkspace', target, d.reached, d.detail);
        }
        if (name === 'metrics') {
          const m = await httpCall(h, portOf(address), 'PUT', '/admin/maintenance', '{"enabled":true}');
          rec('admin-maintenance', target, m.reached, m.detail);
        }
      })());
    }
  }
  await Promise.all(tries);
  console.log('probe: known services tried');
  // Every port 1-1024 and the given ones on every host address.
  const ports = Array.from(new Set([...Array.from({ length: 1024 }, (_, i) => i + 1), ...cfg.ports]));
  const jobs = [];
  for (const h of hosts) for (const p of ports) jobs.push([h, p]);
  let next = 0, scanned = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const [h, p] = jobs[next++];
      const r = await connect(h, p, 400);
      scanned++;
      if (r.startsWith('connected')) rec('port-scan', h + ':' + p, true, r);
    }
  };
  await Promise.all(Array.from({ length: 200 }, worker));
  console.log('probe: scanned ' + scanned + ' ports');
  // Another workspace.
  const v = await connect(cfg.victim.host, cfg.victim.port, 2000);
  rec('other-workspace-ide', cfg.victim.host + ':' + cfg.victim.port, v.startsWith('connected'), v);
  for (const p of [cfg.victim.content, ...cfg.secretPaths]) {
    try { const list = fs.statSync(p).isDirectory() ? fs.readdirSync(p).join(',') : fs.readFileSync(p, 'utf8'); rec('read', p, true, list.slice(0, 100)); }
    catch (e) { rec('read', p, false, e.code || String(e)); }
  }
  for (const p of cfg.writablePaths) {
    try { fs.writeFileSync(p, 'escaped'); rec('write', p, true, 'written'); } catch (e) { rec('write', p, false, e.code || String(e)); }
  }
  for (const pid of cfg.pids) {
    try { process.kill(pid, 0); rec('signal', String(pid), true, 'kill 0 allowed'); } catch (e) { rec('signal', String(pid), e.code === 'EPERM' ? false : false, e.code); }
    try { const c = fs.readFileSync('/proc/' + pid + '/cmdline', 'utf8'); rec('proc', String(pid), /workbay|node/.test(c), c.replace(/\0/g, ' ').slice(0, 100)); }
    catch (e) { rec('proc', String(pid), false, e.code || String(e)); }
  }
  for (const p of cfg.sockets) {
    const r = await new Promise((res) => { const s = net.connect(p); s.on('connect', () => { s.destroy(); res('connected'); }); s.on('error', (e) => res(e.code || String(e))); });
    rec('socket', p, r === 'connected', r);
  }
  // vsock (on a VM node, CID 2 is the hypervisor's side) and io_uring, which the runtime's syscall filter refuses:
  // reached when the socket or the ring could be made at all. Python, since Node has neither.
  if (fs.existsSync('/usr/bin/python3')) {
    const py = [
      'import ctypes, socket',
      'try:',
      '    s = socket.socket(40, socket.SOCK_STREAM); print("vsock created")',
      'except OSError as e: print("vsock", e.errno)',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'fd = libc.syscall(425, 1, ctypes.create_string_buffer(120))',
      'print("io_uring", "created" if fd >= 0 else ctypes.get_errno())',
    ].join('\n');
    const r = require('child_process').spawnSync('/usr/bin/python3', ['-c', py], { encoding: 'utf8', timeout: 10000 });
    if (!r.stdout) console.log('probe: python3 gave nothing: ' + String(r.error || r.stderr).slice(0, 300));
    for (const line of (r.stdout || '').trim().split('\n')) {
      const [kind, result] = line.split(' ');
      if (kind) rec(kind, kind === 'vsock' ? 'socket(AF_VSOCK)' : 'io_uring_setup', result === 'created', result);
    }
  }
  const iwsSocket = process.env.WORKBAY_IWS_SOCKET || '';
  const iwsReachable = iwsSocket ? (await new Promise((r) => { const s = net.connect(iwsSocket); s.on('connect', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); })) : false;
  const findings = { uid: process.getuid(), gid: process.getgid(), hostname: os.hostname(), iwsSocket, iwsReachable, scanned, attempts };
  fs.writeFileSync('findings.json.tmp', JSON.stringify(findings, null, 1));
  fs.renameSync('findings.json.tmp', 'findings.json');
}
main().catch((e) => { try { fs.writeFileSync('findings.json', JSON.stringify({ error: String(e && e.stack || e) })); } catch (_) {} })
  .finally(() => { http.createServer((q, s) => s.end('probe\n')).listen(Number(process.env.PORT || 0), '0.0.0.0'); });
`;

export const echoServer = String.raw`
const http = require('http'), fs = require('fs');
const log = (line) => { try { fs.appendFileSync('requests.log', line + '\n'); } catch (e) {} };
const handle = (req, res) => {
  const seen = { method: req.method, url: req.url, headers: req.rawHeaders, port: req.socket.localPort };
  log(JSON.stringify(seen));
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(seen));
};
const upgrade = (req, socket) => {
  log(JSON.stringify({ upgrade: true, url: req.url, headers: req.rawHeaders }));
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: ' + (req.headers.upgrade || 'websocket') + '\r\nConnection: Upgrade\r\n\r\n');
  socket.on('data', (d) => socket.write(d));
  socket.on('error', () => {});
};
const ports = [Number(process.env.PORT)].concat((process.env.ECHO_PORTS || '').split(',').filter(Boolean).map(Number));
for (const p of ports) {
  const server = http.createServer(handle);
  server.on('upgrade', upgrade);
  server.listen(p, '0.0.0.0');
}
process.on('SIGTERM', () => process.exit(0));
`;
