import { describe, expect, it } from 'vitest';
import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  contentservice,
  wsman,
} from '@workbay/api';
import { CliError, ExitCode, exitCodeFor } from './exit-codes.js';
import { age, gitLine, keyValues, shortDuration, table } from './format.js';
import { runCli } from './program.js';
import { buildStartRequest, parseEnvFlag, parsePortFlag, repoName } from './start-request.js';
import type { StartFlags } from './start-request.js';

const flags = (over: Partial<StartFlags> = {}): StartFlags => ({
  image: 'workbay/default',
  type: 'regular',
  port: [],
  env: [],
  annotation: [],
  ...over,
});

describe('buildStartRequest', () => {
  it('fills in ids, owner, location and an empty initializer', () => {
    const r = buildStartRequest(flags(), {}, 'bob');
    expect(r.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.metadata?.metaId).toMatch(/^ws-[0-9a-f]{10}$/);
    expect(r.metadata?.owner).toBe('bob');
    expect(r.servicePrefix).toBe(r.metadata?.metaId);
    expect(r.spec?.workspaceLocation).toBe(r.metadata?.metaId);
    expect(r.spec?.initializer?.spec?.$case).toBe('empty');
    expect(r.spec?.admission).toBe(wsman.AdmissionLevel.ADMIT_OWNER_ONLY);
    expect(r.type).toBe(wsman.WorkspaceType.REGULAR);
  });

  it('builds each initializer', () => {
    const commit = buildStartRequest(flags({ git: 'git@github.com:acme/tool.git', commit: 'abc123' }), {}, 'b');
    expect(commit.spec?.initializer?.spec).toEqual({
      $case: 'git',
      value: expect.objectContaining({
        remoteUri: 'git@github.com:acme/tool.git',
        targetMode: contentservice.CloneTargetMode.REMOTE_COMMIT,
        cloneTaget: 'abc123',
        checkoutLocation: 'tool',
      }),
    });
    const head = buildStartRequest(flags({ git: 'https://x/y/z' }), {}, 'b');
    expect(head.spec?.initializer?.spec).toMatchObject({
      value: { targetMode: contentservice.CloneTargetMode.REMOTE_HEAD },
    });
    const snap = buildStartRequest(flags({ snapshot: 'workspaces/w/snapshot-1.tar@bucket' }), {}, 'b');
    expect(snap.spec?.initializer?.spec).toEqual({
      $case: 'snapshot',
      value: expect.objectContaining({ snapshot: 'workspaces/w/snapshot-1.tar@bucket' }),
    });
    const backup = buildStartRequest(flags({ backup: true, metaId: 'm1' }), {}, 'b');
    expect(backup.spec?.initializer?.spec).toEqual({
      $case: 'backup',
      value: expect.objectContaining({ checkoutLocation: 'm1' }),
    });
  });

  it.each<[Partial<StartFlags>, string]>([
    [{ git: 'u', empty: true }, 'initializer'],
    [{ branch: 'main' }, '--branch'],
    [{ git: 'u', branch: 'a', commit: 'b' }, '--commit'],
    [{ snapshot: 'a@b@c' }, '--snapshot'],
    [{ location: '../up' }, '--location'],
    [{ location: '/abs' }, '--location'],
    [{ type: 'weird' }, '--type'],
    [{ maxLifetime: '1 day' }, '--max-lifetime'],
    [{ annotation: ['novalue'] }, '--annotation'],
    [{ admission: 'friends' }, 'admission'],
  ])('rejects %j naming %s', (over, field) => {
    expect(() => buildStartRequest(flags(over), {}, 'b')).toThrow(
      expect.objectContaining({ field }) as unknown as InvalidArgumentError,
    );
  });

  it('parses ports and env', () => {
    expect(parsePortFlag('8443:https:public')).toEqual(
      wsman.PortSpec.fromPartial({
        port: 8443,
        visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC,
        protocol: wsman.PortProtocol.PORT_PROTOCOL_HTTPS,
      }),
    );
    expect(() => parsePortFlag('0')).toThrow(/1 to 65535/);
    expect(() => parsePortFlag('80:secret')).toThrow(/neither/);
    expect(parseEnvFlag('A=b=c', {})).toMatchObject({ name: 'A', value: 'b=c' });
    expect(parseEnvFlag('HOME', { HOME: '/home/x' })).toMatchObject({ name: 'HOME', value: '/home/x' });
    expect(() => parseEnvFlag('UNSET', {})).toThrow(/not set/);
    expect(repoName('https://github.com/acme/app.git/')).toBe('app');
  });
});

describe('exit codes', () => {
  it('map domain errors to documented codes', () => {
    expect(exitCodeFor(new InvalidArgumentError('x', 'y'))).toBe(ExitCode.usage);
    expect(exitCodeFor(new NotFoundError('x'))).toBe(ExitCode.notFound);
    expect(exitCodeFor(new AlreadyExistsError('x'))).toBe(ExitCode.precondition);
    expect(exitCodeFor(new FailedPreconditionError('x'))).toBe(ExitCode.precondition);
    expect(exitCodeFor(new UnavailableError('x'))).toBe(ExitCode.unavailable);
    expect(exitCodeFor(new DeadlineExceededError('x'))).toBe(ExitCode.timedOut);
    expect(exitCodeFor(new InternalError('x'))).toBe(ExitCode.other);
    expect(exitCodeFor(new CliError('x', ExitCode.workspaceFailed))).toBe(6);
    expect(exitCodeFor(new Error('x'))).toBe(ExitCode.other);
  });
});

describe('formatting', () => {
  it('summarises the Git state a final backup recorded', () => {
    const line = gitLine({
      branch: 'main',
      latestCommit: '0123456789abcdef0123',
      uncommitedFiles: ['a'],
      untrackedFiles: [],
      unpushedCommits: [],
      totalUncommitedFiles: 1,
      totalUntrackedFiles: 2,
      totalUnpushedCommits: 0,
    });
    expect(line).toBe('main @ 0123456789ab (1 uncommitted, 2 untracked, 0 unpushed)');
  });

  it('renders borderless tables and aligned key/values', () => {
    expect(
      table(
        ['A', 'LONGER'],
        [
          ['x', 'y'],
          ['wide-cell', 'z'],
        ],
      ),
    ).toBe('A          LONGER\nx          y\nwide-cell  z\n');
    expect(
      keyValues([
        ['a', '1'],
        ['bbb', '2'],
      ]),
    ).toBe('a    1\nbbb  2\n');
  });
  it('formats ages', () => {
    expect(shortDuration(59_000)).toBe('59s');
    expect(shortDuration(3_600_000 + 5 * 60_000)).toBe('1h5m');
    expect(shortDuration(3 * 86_400_000)).toBe('3d');
    expect(age(undefined)).toBe('-');
  });
});

describe('runCli in-process', () => {
  it('writes help to the given stdout and usage errors to stderr', async () => {
    let out = '';
    let err = '';
    const io = { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) }, env: {} };
    expect(await runCli(['--help'], io)).toBe(0);
    expect(out).toContain('Usage: workbay');
    expect(await runCli(['describe'], io)).toBe(ExitCode.usage);
    expect(err).toContain("missing required argument 'id'");
  });
});

describe('PhaseProgress', () => {
  it('prints one line per phase without a TTY', async () => {
    const { PhaseProgress } = await import('./progress.js');
    let text = '';
    const p = new PhaseProgress({ write: (s: string) => (text += s) }, 'ws-1');
    p.update('pending');
    p.update('pending');
    p.update('running');
    p.done();
    expect(text).toMatch(/^ws-1: pending after 0\.\ds\nws-1: running after 0\.\ds\n$/);
    p.done('gave up');
    expect(text).toMatch(/ws-1: gave up after 0\.\ds\n$/);
  });
  it('prints the status message once per change, without the control characters a server sends', async () => {
    const { PhaseProgress } = await import('./progress.js');
    let text = '';
    const p = new PhaseProgress({ write: (s: string) => (text += s) }, 'ws-1');
    p.update('initializing');
    p.note('');
    p.note('git clone failed, retrying (attempt 2 of at most 14): fatal: 503');
    p.note('git clone failed, retrying (attempt 2 of at most 14): fatal: 503');
    p.note('evil \x1b]0;pwned\x07\x1b[2J done\r\nfake: line');
    p.done();
    const lines = text.split('\n');
    expect(lines.filter((l) => l.includes('attempt 2'))).toEqual([
      'ws-1: git clone failed, retrying (attempt 2 of at most 14): fatal: 503',
    ]);
    // Only the line breaks the progress writes itself remain.
    expect([...text].filter((c) => c < ' ' && c !== '\n')).toEqual([]);
    expect(lines).toContain('ws-1: evil  ]0;pwned  [2J done  fake: line');
  });
  it('draws a spinner line and ticks phases off on a TTY', async () => {
    const { PhaseProgress } = await import('./progress.js');
    let text = '';
    const p = new PhaseProgress({ write: (s: string) => (text += s), isTTY: true }, 'ws-1');
    p.update('creating');
    await new Promise((r) => setTimeout(r, 250));
    p.update('running');
    p.done();
    expect(text).toContain('\r\x1b[2K');
    expect(text).toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] ws-1: creating \d\.\ds/);
    expect(text).toMatch(/✓ creating \(0\.\ds\)\n/);
    expect(text).toMatch(/✓ running \(0\.\ds\)\n$/);
  });
});
