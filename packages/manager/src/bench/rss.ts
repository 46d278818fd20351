/** The manager bench's memory row: resident memory of a manager holding many records, against an empty one. */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { emptyConditions } from '../domain/status.js';
import type { WorkspaceRecord } from '../domain/types.js';
import { FileWorkspaceStore } from '../store/file-store.js';
import { fmtMiB, fmtMs, report } from './stats.js';

const here = fileURLToPath(new URL('.', import.meta.url));

function record(i: number, now: number): WorkspaceRecord {
  const id = `rec-${i}`;
  return {
    id,
    metaId: `meta-${i}`,
    owner: `user-${i % 500}`,
    annotations: { project: `p-${i % 97}`, team: 'platform' },
    type: 'regular',
    servicePrefix: id,
    url: `http://127.0.0.1:7780/ws/${id}/`,
    ownerToken: 'x'.repeat(32),
    spec: {
      image: 'workbay/default',
      ideImage: { webRef: 'ide:latest', supervisorRef: '', desktopRef: '', desktopPluginRef: '' },
      ideImageLayers: [],
      initializer: Buffer.from(`git https://example.com/org/repo-${i}.git`).toString('base64'),
      initializerKind: 'git',
      ports: [
        { port: 3000, visibility: 'private', protocol: 'http', url: `http://127.0.0.1:7780/ws/${id}/port/3000/` },
      ],
      envvars: [{ name: 'EDITOR', value: 'vim' }],
      sysEnvvars: [],
      workspaceLocation: 'repo',
      admission: 'owner-only',
      className: 'g1-standard',
      sshPublicKeys: [],
      featureFlags: [],
    },
    phase: 'stopped',
    conditions: { ...emptyConditions, finalBackupComplete: true, stoppedByRequest: true },
    message: '',
    statusVersion: i + 1,
    createdAt: now,
    lastActivity: now,
    phaseTimes: { pending: now, creating: now, initializing: now, running: now, stopping: now, stopped: now },
    progress: {
      contentReady: false,
      initRequested: true,
      everReady: true,
      closed: false,
      disposed: true,
      idePort: 23000,
    },
  };
}

interface Probe {
  readonly rss: number;
  readonly workspaces: number;
  readonly loadMs: number;
  readonly loadCpuMs: number;
}

async function probeRss(stateDir: string): Promise<Probe> {
  const child = spawn(process.execPath, ['--expose-gc', join(here, 'rss-probe.js'), stateDir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  await new Promise((resolve) => child.once('exit', resolve));
  return JSON.parse(out.trim().split('\n').pop()!) as Probe;
}

export async function benchRss(dir: string, records: number): Promise<void> {
  const empty = await probeRss(join(dir, 'rss-empty'));
  const fullDir = join(dir, 'rss-full');
  const store = new FileWorkspaceStore(fullDir);
  await store.load();
  const now = Date.now();
  for (let i = 0; i < records; i += 1) void store.save(record(i, now));
  await store.flush();
  // The records are written plain, as an older manager wrote them; the first start seals them (one rewrite each).
  // Measured is the second start: a manager loading records it sealed itself, the steady state.
  await probeRss(fullDir);
  const full = await probeRss(fullDir);
  report(
    `manager RSS with ${full.workspaces} records (loaded in ${fmtMs(full.loadMs)})`,
    fmtMiB(full.rss),
    fmtMiB(empty.rss),
    full.rss / empty.rss,
  );
  console.log(
    `  (${((full.rss - empty.rss) / Math.max(1, full.workspaces) / 1024).toFixed(1)} KiB per record; ` +
      `start-up CPU ${fmtMs(full.loadCpuMs)}, empty ${fmtMs(empty.loadCpuMs)})`,
  );
}
