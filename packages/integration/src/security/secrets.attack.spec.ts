/**
 * Secrets at rest and in logs (issue 8, item 11 and invariant 11): a scenario with every credential type a
 * request can carry (git basic-auth password, one-time-secret URL and the secret it serves, credentials in the
 * remote and upstream URLs, a signed download URL, secret-looking env values, the owner token), then a grep of
 * every state file, log and metrics page of the manager and the daemon for each secret in every spelling.
 */
import { randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentservice, wsman } from '@workbay/api';
import { createGitFixture, startGitHttpServer } from '@workbay/testing';
import type { GitFixture, GitHttpServer } from '@workbay/testing';
import { outcome, secretSpellings, tryFetch } from './attack-kit.js';
import { bootWorkbay, gitInit, listTree, startRequest, stopWorkspace, waitForPhase } from './harness.js';
import type { Workbay } from './harness.js';

const secret = (label: string): string => `${label}-${randomBytes(12).toString('hex')}`;
const secrets = {
  gitPassword: secret('gitpw'),
  otsSecret: secret('otspath'),
  otsPassword: secret('otspw'),
  urlPassword: secret('urlpw'),
  upstreamPassword: secret('uppw'),
  downloadSignature: secret('sig'),
  envValue: secret('envtok'),
  daemonGitPassword: secret('dpw'),
};
const user = 'gituser';
let ownerToken = '';

let wb: Workbay;
let fixture: GitFixture;
let git: GitHttpServer;
let side: Server;
let sideUrl = '';
const ids: string[] = [];

beforeAll(async () => {
  wb = await bootWorkbay({ allowLocalRemotes: true });
  fixture = await createGitFixture({ name: 'private', root: path.join(wb.dir, 'git') });
  git = await startGitHttpServer({ repoRoot: fixture.root, auth: { user, password: secrets.gitPassword } });
  // The one-time-secret endpoint and a download server that wants a signature in its query.
  side = createServer((req, res) => {
    if (req.url === `/ots/${secrets.otsSecret}`) return res.end(secrets.gitPassword);
    if (req.url?.startsWith('/file')) return res.end('downloaded\n');
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => side.listen(0, '127.0.0.1', resolve));
  sideUrl = `http://127.0.0.1:${(side.address() as AddressInfo).port}`;

  const repoUrl = `${git.url}/private.git`;
  const withAuth = (u: string, pw: string): string => u.replace('http://', `http://${user}:${pw}@`);
  const starts: [string, contentservice.WorkspaceInitializer, Record<string, string>][] = [
    [
      'sec-basic',
      gitInit(repoUrl, {
        config: {
          authentication: contentservice.GitAuthMethod.BASIC_AUTH,
          authUser: user,
          authPassword: secrets.gitPassword,
        },
      }),
      {},
    ],
    [
      'sec-ots',
      gitInit(repoUrl, {
        config: {
          authentication: contentservice.GitAuthMethod.BASIC_AUTH_OTS,
          authUser: user,
          authOts: `${sideUrl}/ots/${secrets.otsSecret}`,
        },
      }),
      {},
    ],
    ['sec-url', gitInit(withAuth(repoUrl, secrets.urlPassword)), {}],
    [
      'sec-upstream',
      gitInit(withAuth(repoUrl, secrets.gitPassword), {
        upstreamRemoteUri: withAuth(repoUrl, secrets.upstreamPassword),
      }),
      {},
    ],
    [
      'sec-download',
      contentservice.WorkspaceInitializer.fromPartial({
        spec: {
          $case: 'download',
          value: {
            files: [{ url: `${sideUrl}/file?X-Amz-Signature=${secrets.downloadSignature}`, filePath: 'f.txt' }],
            targetLocation: 'dl',
          },
        },
      }),
      {},
    ],
    [
      'sec-env',
      gitInit(withAuth(repoUrl, secrets.gitPassword)),
      { GITHUB_TOKEN: secrets.envValue, NPM_TOKEN: secrets.envValue },
    ],
  ];
  for (const [id, initializer, env] of starts) {
    const started = await outcome(wb.manager.startWorkspace(startRequest({ id, initializer, env })));
    if (started.ok) {
      ids.push(id);
      ownerToken ||= (started.value as wsman.StartWorkspaceResponse).ownerToken;
    }
  }
  for (const id of ids) await waitForPhase(wb, id, [wsman.WorkspacePhase.RUNNING]);
  // Straight to the daemon as well.
  await outcome(
    wb.daemon.initWorkspace({
      id: 'sec-daemon',
      metadata: { owner: 'alice', metaId: 'sec-daemon' },
      initializer: gitInit(repoUrl, {
        config: {
          authentication: contentservice.GitAuthMethod.BASIC_AUTH,
          authUser: user,
          authPassword: secrets.daemonGitPassword,
        },
      }),
    }),
  );
  // A backup and a stop with its final backup: the paths that write state after the start.
  for (const id of ids) await outcome(wb.manager.backupWorkspace({ id }));
  for (const id of ids) await stopWorkspace(wb, id);
}, 300_000);

afterAll(async () => {
  await wb?.daemon.disposeWorkspace({ id: 'sec-daemon', backup: false }).catch(() => undefined);
  side?.close();
  await git?.stop();
  await fixture?.cleanup();
  await wb?.cleanup();
});

/** Every spelling of a secret, plus the Basic header a client would build from it. */
const spellings = (value: string): string[] => [
  ...secretSpellings(value),
  Buffer.from(`${user}:${value}`).toString('base64').replace(/=+$/, ''),
];

async function filesUnder(root: string, skip: (rel: string) => boolean): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const rel of await listTree(root)) {
    if (skip(rel)) continue;
    out.set(path.join(root, rel), await readFile(path.join(root, rel), 'latin1').catch(() => ''));
  }
  return out;
}

function leaks(texts: Map<string, string>, values: readonly string[]): string[] {
  const found: string[] = [];
  for (const [where, text] of texts) {
    for (const value of values) {
      for (const spelling of spellings(value))
        if (text.includes(spelling)) found.push(`${where}: ${value.split('-')[0]}`);
    }
  }
  return [...new Set(found)];
}

const credentialValues = (): string[] => Object.values(secrets);

describe('no credential is kept in plain state files', () => {
  it("the manager's state dir (records, runtime records)", async () => {
    // Workspace logs are the workspace's own output, checked with the logs below.
    const files = await filesUnder(wb.stateDir, (rel) => rel.includes('/logs/'));
    expect(files.size).toBeGreaterThan(0);
    expect(leaks(files, credentialValues())).toEqual([]);
  });

  it("the daemon's session state and everything in the working area outside content", async () => {
    const contentIds = new Set([...ids, 'sec-daemon']);
    const files = await filesUnder(wb.workingArea, (rel) => contentIds.has(rel.split('/')[0]!));
    expect(leaks(files, credentialValues())).toEqual([]);
  });

  it('nothing the storage holds besides content backups (manifests, metadata sidecars)', async () => {
    const files = await filesUnder(wb.storageRoot, (rel) => /%z/.test(rel));
    expect(leaks(files, credentialValues())).toEqual([]);
  });
});

describe('no credential or owner token in logs, metrics or answers', () => {
  it('the output of workbay up and the daemon', () => {
    expect(wb.stderr().length).toBeGreaterThan(0);
    expect(leaks(new Map([['workbay up stderr', wb.stderr()]]), [...credentialValues(), ownerToken])).toEqual([]);
  });

  it("the workspaces' log files", async () => {
    const dir = path.join(wb.runtimeStateDir, 'logs');
    const files = new Map<string, string>();
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      files.set(name, await readFile(path.join(dir, name), 'latin1'));
    }
    expect(leaks(files, [...credentialValues().filter((v) => v !== secrets.envValue), ownerToken])).toEqual([]);
  });

  it('the metrics page', async () => {
    const metrics = await tryFetch(`http://${wb.metricsAddress}/metrics`);
    expect(metrics.status).toBe(200);
    expect(leaks(new Map([['/metrics', metrics.body]]), [...credentialValues(), ownerToken])).toEqual([]);
  });

  it('GetWorkspaces and DescribeWorkspace answers, failure messages included', async () => {
    const answers = new Map<string, string>();
    answers.set('GetWorkspaces', JSON.stringify(await wb.manager.getWorkspaces({})));
    for (const id of ids) answers.set(id, JSON.stringify(await wb.manager.describeWorkspace({ id })));
    expect(leaks(answers, credentialValues())).toEqual([]);
  });
});

it('the scenario really ran: the basic-auth clone reached the git server with credentials', () => {
  expect(ids.length).toBeGreaterThan(0);
  expect(git.requests.some((r) => r.authorized)).toBe(true);
});
