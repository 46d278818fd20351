// Help, usage errors and the exit code of each failure (failed/slow/refused start, bad input, no manager).
import { describe, expect, it } from 'vitest';
import { fake, serveFakeManager, workbay, workbayProcess } from '../test-support/cli-fake-manager.js';

serveFakeManager();

describe('workbay CLI against a WorkspaceManager server', () => {
  it('prints help with the exit codes, and fails usage errors with 1', async () => {
    const help = await workbayProcess(['--help']);
    expect(help.code).toBe(0);
    for (const command of [
      'up',
      'list',
      'start',
      'stop',
      'describe',
      'watch',
      'snapshot',
      'backup',
      'timeout',
      'port',
      'admission',
      'ssh-key',
      'classes',
    ]) {
      expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    }
    expect(help.stdout).toContain('Exit codes: 0 ok, 1 usage');
    expect((await workbayProcess(['frobnicate'])).code).toBe(1);
    const bad = await workbay(['stop', 'x', '--policy', 'gently']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('Allowed choices are normally, immediately, abort');
  });

  it('start --wait exits 6 when the workspace fails, 5 when it takes too long, 3 in maintenance', async () => {
    const failed = await workbay(['start', '--id', 'cli-fail', '--image', 'fail/me', '--wait']);
    expect(failed.code).toBe(6);
    expect(failed.stderr).toContain('workbay: workspace cli-fail failed: image fail/me does not exist');
    const slow = await workbay([
      '--timeout',
      '500ms',
      'start',
      '--id',
      'cli-slow',
      '--image',
      'slow/forever',
      '--wait',
    ]);
    expect(slow.code).toBe(5);
    expect(slow.stderr).toContain('timed out after 0.5s waiting for cli-slow');
    const maintenance = await workbay(['start', '--image', 'maintenance']);
    expect(maintenance.code).toBe(3);
    expect(maintenance.stderr).toContain('under maintenance');
  });

  it('rejects bad input before calling the manager (exit 1)', async () => {
    const before = fake.calls.length;
    for (const args of [
      ['start', '--port', '70000'],
      ['start', '--port', '3000', '--port', '3000'],
      ['start', '--env', '1BAD=x'],
      ['start', '--snapshot', 'no-bucket'],
      ['start', '--git', 'https://x/y', '--snapshot', 'a@b'],
      ['start', '--inactivity-timeout', '5 minutes'],
      ['timeout', 'cli-1', 'soon'],
      ['--timeout', 'forever', 'list'],
    ]) {
      const run = await workbay(args);
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(1);
      expect(run.stderr).toMatch(/^workbay: /);
    }
    expect(fake.calls.length).toBe(before);
  });

  it('exits 4 with a hint when the manager is unreachable', async () => {
    const run = await workbayProcess(['--address', '127.0.0.1:1', 'list']);
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('workbay: cannot reach the manager at 127.0.0.1:1');
    expect(run.stderr).toContain("start one with 'workbay up'");
  });

  it('prints no control character a message carries (an escape sequence from a repository name)', async () => {
    const run = await workbay(['backup', 'cli-escape']);
    expect(run.stderr).toBe('workbay: a name ?]0;PWNED??[31mRED?\n');
  });

  it('prints no control character a status carries: branch and message in describe, C1 escaped in --json (red team round 12 E2)', async () => {
    const text = await workbay(['describe', 'cli-c1']);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('main?31mRED?0m?0;PWNED?');
    // eslint-disable-next-line no-control-regex -- control characters are exactly what must not be printed
    expect(text.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    const json = await workbay(['--json', 'describe', 'cli-c1']);
    // eslint-disable-next-line no-control-regex -- as above
    expect(json.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    expect(json.stdout).toContain('main\\u009b31mRED');
    expect(JSON.stringify(JSON.parse(json.stdout))).toContain('main\u009b31mRED');
  });

  it('exits 4 with what the manager said when it answers UNAVAILABLE itself, not "cannot reach"', async () => {
    const run = await workbay(['backup', 'cli-storage-down']);
    expect(run.code).toBe(4);
    expect(run.stderr).toContain("workbay: backup of workspace 'cli-storage-down' failed: storage down (the manager");
    expect(run.stderr).not.toMatch(/cannot reach the manager/);
  });
});
