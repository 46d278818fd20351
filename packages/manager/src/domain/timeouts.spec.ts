import { describe, expect, it } from 'vitest';
import { defaultManagerConfig } from '../config.js';
import { makeRecord } from '../test-support/records.js';
import { withConditions, withPhase, withProgress } from './status.js';
import { evaluateTimeout, timeoutRules } from './timeouts.js';
import type { WorkspaceRecord } from './types.js';

const t = defaultManagerConfig.timeouts;
const created = 1_000_000;
const min = 60_000;
const hour = 60 * min;

function at(record: WorkspaceRecord, offset: number) {
  return evaluateTimeout(record, created + offset, t);
}

describe('timeout rules (original defaults)', () => {
  it('the rule table, phase by phase and in the order checked (inventory §2.6)', () => {
    const running = ['max-lifetime', 'headless', 'no-activity', 'closed', 'inactivity'];
    const names = Object.fromEntries(
      Object.entries(timeoutRules).map(([phase, rules]) => [phase, rules.map((r) => r.rule)]),
    );
    expect(names).toEqual({
      unknown: [],
      pending: ['initialization'],
      creating: ['startup'],
      initializing: ['startup'],
      running,
      interrupted: running,
      stopping: ['content-finalization', 'stopping'],
      stopped: [],
    });
  });

  it('pending: created + initialization (30m)', () => {
    const r = makeRecord();
    expect(at(r, 30 * min)).toBeUndefined();
    expect(at(r, 30 * min + 1)?.rule).toBe('initialization');
  });

  it('creating and initializing: created + startup (1h)', () => {
    for (const phase of ['creating', 'initializing'] as const) {
      const r = makeRecord({ phase });
      expect(at(r, hour)).toBeUndefined();
      expect(at(r, hour + 1)?.rule).toBe('startup');
    }
  });

  it('running without any activity: created + startup', () => {
    const r = makeRecord({ phase: 'running' });
    expect(at(r, hour)).toBeUndefined();
    const verdict = at(r, hour + 1000);
    expect(verdict?.rule).toBe('no-activity');
    expect(verdict?.message).toMatch(
      /^workspace timed out \(no-activity\): .* took 1h0m1s, longer than the 1h0m0s allowed$/,
    );
  });

  it('running: last activity + inactivity timeout, per workspace and capped', () => {
    const r = makeRecord({ phase: 'running', lastActivity: created + hour });
    expect(at(r, hour + 30 * min)).toBeUndefined();
    expect(at(r, hour + 30 * min + 1)?.rule).toBe('inactivity');
    const own = { ...r, spec: { ...r.spec, timeoutMs: 2 * hour } };
    expect(at(own, hour + 2 * hour)).toBeUndefined();
    expect(at(own, hour + 2 * hour + 1)?.rule).toBe('inactivity');
    const huge = { ...r, spec: { ...r.spec, timeoutMs: 100 * hour } };
    // Capped at maxWorkspaceTimeout (24h).
    expect(at(huge, hour + 24 * hour)).toBeUndefined();
    expect(at(huge, hour + 24 * hour + 1)?.rule).toBe('inactivity');
  });

  it('closed IDE: last activity + closed timeout; 0 disables the rule', () => {
    const r = withProgress(makeRecord({ phase: 'running', lastActivity: created }), { closed: true });
    expect(at(r, 2 * min)).toBeUndefined();
    expect(at(r, 2 * min + 1)?.rule).toBe('closed');
    const disabled = { ...r, spec: { ...r.spec, closedTimeoutMs: 0 } };
    expect(at(disabled, 2 * min + 1)).toBeUndefined();
    expect(at(disabled, 30 * min + 1)?.rule).toBe('inactivity');
  });

  it('maximum lifetime comes first, and a spec value is capped by the config', () => {
    const r = makeRecord({ phase: 'running', lastActivity: created + 36 * hour });
    expect(at(r, 36 * hour + 1)?.rule).toBe('max-lifetime');
    const short = { ...r, lastActivity: created + hour, spec: { ...r.spec, maximumLifetimeMs: hour } };
    expect(at(short, hour + 1)?.rule).toBe('max-lifetime');
    const long = { ...r, spec: { ...r.spec, maximumLifetimeMs: 100 * hour } };
    expect(at(long, 36 * hour + 1)?.rule).toBe('max-lifetime');
  });

  it('headless: created + headlessWorkspace (1h), ignoring activity', () => {
    const r = makeRecord({ phase: 'running', type: 'prebuild', lastActivity: created + hour });
    expect(at(r, hour)).toBeUndefined();
    expect(at(r, hour + 1)?.rule).toBe('headless');
  });

  it('stopping: contentFinalization until the backup is complete, then stopping', () => {
    const stopping = withPhase(makeRecord({ phase: 'running' }), 'stopping', created + hour);
    expect(at(stopping, 2 * hour)).toBeUndefined();
    expect(at(stopping, 2 * hour + 1)?.rule).toBe('content-finalization');
    const backedUp = withConditions(stopping, { finalBackupComplete: true });
    expect(at(backedUp, 2 * hour + 1)?.rule).toBe('stopping');
    expect(at(withProgress(backedUp, { stopForced: true }), 10 * hour)).toBeUndefined();
  });

  it('stopped never times out, and a fired timeout does not fire again', () => {
    expect(at(makeRecord({ phase: 'stopped' }), 1000 * hour)).toBeUndefined();
    const fired = withConditions(makeRecord({ phase: 'running' }), { timeout: 'x' });
    expect(at(fired, 1000 * hour)).toBeUndefined();
  });
});
