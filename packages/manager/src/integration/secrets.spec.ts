/**
 * Secrets at rest (issue 8, item 11), against the real manager, daemon, git and HTTP: workspaces start with every
 * kind of initializer credential (basic auth user/password, a one-time-secret URL, a token in the URL's user
 * info, a token in a download URL), run, stop; then no file under the manager's and the daemon's state and no
 * log line of either holds any of the secrets.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FailedPreconditionError, contentservice, createWorkspaceManagerClient, wsman } from '@workbay/api';
import type { WorkspaceManagerClient } from '@workbay/api';
import { startManager } from '../app.js';
import type { RunningManager } from '../app.js';
import { resolveManagerConfig } from '../config.js';
import type { ManagerConfigInput } from '../config.js';
import { DaemonSupervisor } from '../embedded.js';
import { createLogger, createSilentLogger } from '../logger.js';
import { startTestGitServer } from '../test-support/git-http.js';
import type { TestGitServer } from '../test-support/git-http.js';
import { startRequest, testDaemonConfig, testImages, waitForPhase } from '../test-support/harness.js';

const secret = (name: string): string => `${name}-${randomBytes(12).toString('hex')}`;

/**
 * What to look for: the secret itself and its base64 forms at each byte alignment (records once kept the
 * initializer as base64 of its proto encoding), minus the edge characters that depend on neighbouring bytes.
 */
function needles(value: string): string[] {
  const out = [value];
  for (let k = 0; k < 3; k += 1) {
    const encoded = Buffer.concat([Buffer.alloc(k), Buffer.from(value)]).toString('base64');
    out.push(encoded.slice(4, -4));
  }
  return out;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

describe('secrets at rest', () => {
  const password = secret('basic-password');
  const otsPassword = secret('ots-password');
  const urlToken = secret('url-token');
  const downloadToken = secret('download-token');
  let otsUrl = '';
  const secrets = (): string[] => [password, otsPassword, urlToken, downloadToken, otsUrl.split('/').pop()!];

  let dir: string;
  let git: TestGitServer;
  let daemon: DaemonSupervisor;
  let manager: RunningManager;
  let client: WorkspaceManagerClient;
  const logs: string[] = [];
  let restoreStderr: () => void = () => undefined;
  let config: ManagerConfigInput;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-secrets-'));
    git = await startTestGitServer({ user: 'git-user', password });
    await git.createRepo('repo', { 'README.md': 'hello\n' });
    // The daemon's own log lines (stderr, passed through by the supervisor) are captured too.
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      logs.push(chunk.toString());
      return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    restoreStderr = () => (process.stderr.write = write);
    await writeFile(
      join(dir, 'daemon.yaml'),
      testDaemonConfig.replace('log: { level: silent }', 'log: { level: debug }'),
    );
    config = {
      stateDir: join(dir, 'manager'),
      workingArea: join(dir, 'workspaces'),
      grpc: { address: '127.0.0.1:0' },
      proxy: { address: '127.0.0.1:0' },
      metrics: { address: '127.0.0.1:0' },
      idePorts: { from: 33000, to: 33099 },
      runtime: { kind: 'local', isolation: 'none', cgroups: 'off', readiness: { intervalMs: 50 }, images: testImages },
      stopGrace: { normally: '2s', immediately: '500ms', abort: '500ms' },
      log: { level: 'debug' },
      daemon: {
        address: '127.0.0.1:0',
        httpAddress: 'off',
        storageRoot: join(dir, 'storage'),
        configPath: join(dir, 'daemon.yaml'),
        output: 'inherit',
        retryBackoff: '100ms',
      },
    };
    daemon = new DaemonSupervisor(resolveManagerConfig(config, { baseDir: dir }), createSilentLogger());
    await daemon.start();
    manager = await launch();
    client = createWorkspaceManagerClient(manager.grpcAddress, { defaultTimeoutMs: 30_000 });
  });
  afterAll(async () => {
    client?.close();
    await manager?.stop();
    await daemon?.stop();
    restoreStderr();
    await git?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function launch(): Promise<RunningManager> {
    const resolved = resolveManagerConfig(config, { baseDir: dir });
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        logs.push(chunk.toString());
        done();
      },
    });
    return startManager({
      config: { ...resolved, daemon: { ...resolved.daemon, address: daemon.address } },
      logger: createLogger({ level: 'debug', destination: sink }),
    });
  }

  const gitInit = (
    remoteUri: string,
    auth: Partial<contentservice.GitConfig>,
  ): contentservice.WorkspaceInitializer => ({
    spec: {
      $case: 'git',
      value: contentservice.GitInitializer.fromPartial({
        remoteUri,
        cloneTaget: 'main',
        checkoutLocation: 'project',
        config: contentservice.GitConfig.fromPartial(auth),
      }),
    },
  });

  it('no state file and no log line holds a credential after workspaces with every kind ran and stopped', async () => {
    otsUrl = git.addOneTimeSecret(secret('ots'), `git-user:${password}`);
    const withToken = git.urlFor('repo').replace('http://', `http://git-user:${password}@`);
    const body = 'downloaded\n';
    const fileUrl = git.addFile('file.txt', body, downloadToken);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    const requests = [
      startRequest({
        initializer: gitInit(git.urlFor('repo'), {
          authentication: contentservice.GitAuthMethod.BASIC_AUTH,
          authUser: 'git-user',
          authPassword: password,
        }),
      }),
      startRequest({
        initializer: gitInit(git.urlFor('repo'), {
          authentication: contentservice.GitAuthMethod.BASIC_AUTH_OTS,
          authOts: otsUrl,
        }),
      }),
      startRequest({ initializer: gitInit(withToken, {}) }),
      startRequest({
        initializer: {
          spec: {
            $case: 'composite',
            value: {
              initializer: [
                {
                  spec: {
                    $case: 'download',
                    value: { files: [{ url: fileUrl, filePath: 'f.txt', digest }], targetLocation: 'dl' },
                  },
                },
              ],
            },
          },
        },
      }),
    ];
    // The token in the URL is the password of the same user: the server accepts it.
    expect(withToken).toContain(password);
    for (const r of requests) await client.startWorkspace(r);
    for (const r of requests) {
      const status = await waitForPhase(client, r.id, 'running', 60_000);
      expect(status.conditions?.failed).toBe('');
    }
    // Proof that the credentials were used: the content is there.
    expect(await readFile(join(dir, 'workspaces', requests[0]!.id, 'project', 'README.md'), 'utf8')).toBe('hello\n');
    expect(await readFile(join(dir, 'workspaces', requests[3]!.id, 'dl', 'f.txt'), 'utf8')).toBe(body);

    // The records on disk are sealed (checked while the workspaces exist).
    const recordFiles = await filesUnder(join(dir, 'manager', 'workspaces'));
    expect(recordFiles.length).toBeGreaterThanOrEqual(4);
    expect(await readFile(recordFiles[0]!, 'utf8')).toContain('wbsec2:');

    for (const r of requests) await client.stopWorkspace({ id: r.id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    for (const r of requests) await waitForPhase(client, r.id, 'stopped', 60_000);
    await manager.stop();
    manager = await launch();
    client.close();
    client = createWorkspaceManagerClient(manager.grpcAddress, { defaultTimeoutMs: 30_000 });

    const hits: string[] = [];
    for (const file of await filesUnder(dir)) {
      const text = (await readFile(file)).toString('latin1');
      for (const s of secrets()) {
        if (needles(s).some((n) => text.includes(n))) hits.push(`${file}: ${s.slice(0, 12)}`);
      }
    }
    const logText = logs.join('');
    expect(logText.length).toBeGreaterThan(0);
    for (const s of secrets()) if (needles(s).some((n) => logText.includes(n))) hits.push(`logs: ${s.slice(0, 12)}`);
    expect(hits).toEqual([]);
  });

  it('failures with credentials in their URLs name no credential in the status, the state or the logs', async () => {
    const failToken = secret('fail-token');
    const failOts = git.addOneTimeSecret(secret('fail-ots'), 'not-a-user-password-pair');
    const failDownload = secret('fail-download');
    const requests = [
      // A closed port: the clone fails with the URL in git's error.
      startRequest({ initializer: gitInit(`http://git-user:${failToken}@127.0.0.1:1/repo.git`, {}) }),
      startRequest({
        initializer: gitInit(git.urlFor('repo'), {
          authentication: contentservice.GitAuthMethod.BASIC_AUTH_OTS,
          authOts: failOts,
        }),
      }),
      startRequest({
        initializer: {
          spec: {
            $case: 'download',
            value: {
              files: [{ url: `${git.url}/files/missing?token=${failDownload}`, filePath: 'f', digest: '' }],
              targetLocation: 'dl',
            },
          },
        },
      }),
    ];
    for (const r of requests) await client.startWorkspace(r);
    const failures: string[] = [];
    for (const r of requests) {
      const status = await waitForPhase(client, r.id, 'stopped', 60_000);
      expect(status.conditions?.failed).not.toBe('');
      failures.push(status.conditions!.failed);
    }
    await manager.stop();
    manager = await launch();
    client.close();
    client = createWorkspaceManagerClient(manager.grpcAddress, { defaultTimeoutMs: 30_000 });
    const all = [failToken, failOts.split('/').pop()!, failDownload];
    const hits: string[] = [];
    for (const f of failures) for (const s of all) if (needles(s).some((n) => f.includes(n))) hits.push(`status: ${f}`);
    for (const file of await filesUnder(dir)) {
      const text = (await readFile(file)).toString('latin1');
      for (const s of all) if (needles(s).some((n) => text.includes(n))) hits.push(`${file}: ${s.slice(0, 12)}`);
    }
    const logText = logs.join('');
    for (const s of all) if (needles(s).some((n) => logText.includes(n))) hits.push(`logs: ${s.slice(0, 12)}`);
    expect(hits).toEqual([]);
  });

  it('a restart without the key file fails loudly, naming the key, instead of losing the secrets', async () => {
    // A workspace record with a sealed initializer exists while the manager is down.
    const r = startRequest({ image: 'test/sleeper' });
    await client.startWorkspace(r);
    await waitForPhase(client, r.id, 'running', 60_000);
    await manager.stop();
    await rm(join(dir, 'manager', 'secrets.key'));
    await expect(launch()).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(launch()).rejects.toThrow(/secrets key .*secrets\.key/);
    // The operator's other way out: drop the key and the records written with it.
    await rm(join(dir, 'manager', 'secrets.key'));
    await rm(join(dir, 'manager', 'workspaces'), { recursive: true });
    manager = await launch();
    await manager.runtime.stop(r.id, { gracePeriodMs: 0 }).catch(() => undefined);
  });
});
