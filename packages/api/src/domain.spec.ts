import { describe, expect, it } from 'vitest';
import {
  admissionLevel,
  cloneTargetMode,
  defineEnumConverter,
  formatGoDuration,
  fsShiftMethod,
  gitAuthMethod,
  gitStatusLimits,
  limitGitStatus,
  parseGoDuration,
  portProtocol,
  portVisibility,
  stopPolicy,
  timeoutType,
  workspaceConditionBool,
  workspaceContentState,
  workspaceFeatureFlag,
  workspacePhase,
  workspaceType,
} from './domain.js';
import type { DomainEnumValue, EnumConverter } from './domain.js';
import { InvalidArgumentError } from './errors.js';
import { contentservice, iws, wsdaemon, wsman } from './wire.js';

/** The numbers of a ts-proto enum object, without UNRECOGNIZED (-1). */
function protoNumbers(protoEnum: Record<string, string | number>): number[] {
  return Object.values(protoEnum)
    .filter((v): v is number => typeof v === 'number' && v !== -1)
    .sort((a, b) => a - b);
}

const converters: [EnumConverter<number, DomainEnumValue>, Record<string, string | number>][] = [
  [workspacePhase, wsman.WorkspacePhase],
  [stopPolicy, wsman.StopWorkspacePolicy],
  [admissionLevel, wsman.AdmissionLevel],
  [portVisibility, wsman.PortVisibility],
  [portProtocol, wsman.PortProtocol],
  [workspaceType, wsman.WorkspaceType],
  [timeoutType, wsman.TimeoutType],
  [workspaceConditionBool, wsman.WorkspaceConditionBool],
  [workspaceFeatureFlag, wsman.WorkspaceFeatureFlag],
  [cloneTargetMode, contentservice.CloneTargetMode],
  [gitAuthMethod, contentservice.GitAuthMethod],
  [workspaceContentState, wsdaemon.WorkspaceContentState],
  [fsShiftMethod, iws.FSShiftMethod],
];

describe('enum converters', () => {
  it.each(converters.map(([c, e]) => [c.name, c, e] as const))(
    '%s round-trips every value in both directions',
    (_name, converter, protoEnum) => {
      const numbers = protoNumbers(protoEnum);
      expect(converter.values).toHaveLength(numbers.length);
      for (const n of numbers) {
        const domain = converter.fromProto(n);
        expect(converter.is(domain)).toBe(true);
        expect(converter.toProto(domain)).toBe(n);
      }
      for (const domain of converter.values) expect(converter.fromProto(converter.toProto(domain))).toBe(domain);
    },
  );

  it.each(converters.map(([c]) => [c.name, c] as const))(
    '%s rejects UNRECOGNIZED and unknown input',
    (_n, converter) => {
      expect(() => converter.fromProto(-1)).toThrow(InvalidArgumentError);
      expect(() => converter.fromProto(99)).toThrow(InvalidArgumentError);
      expect(() => converter.toProto('no-such-value' as never)).toThrow(InvalidArgumentError);
      expect(converter.is('no-such-value')).toBe(false);
    },
  );

  it('names the field in its errors', () => {
    try {
      workspacePhase.fromProto(wsman.WorkspacePhase.UNRECOGNIZED, 'status.phase');
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as InvalidArgumentError).field).toBe('status.phase');
    }
    expect(() => stopPolicy.toProto('gently' as never)).toThrow(/StopWorkspacePolicy: 'gently' is not a valid/);
  });

  it('uses the documented domain values', () => {
    expect(workspacePhase.fromProto(wsman.WorkspacePhase.RUNNING)).toBe('running');
    expect(workspacePhase.fromProto(wsman.WorkspacePhase.INTERRUPTED)).toBe('interrupted');
    expect(workspacePhase.values).toEqual([
      'unknown',
      'pending',
      'creating',
      'initializing',
      'running',
      'stopping',
      'stopped',
      'interrupted',
    ]);
    expect(admissionLevel.toProto('everyone')).toBe(wsman.AdmissionLevel.ADMIT_EVERYONE);
    expect(stopPolicy.toProto('abort')).toBe(wsman.StopWorkspacePolicy.ABORT);
    expect(workspaceConditionBool.fromProto(wsman.WorkspaceConditionBool.EMPTY)).toBeUndefined();
    expect(workspaceConditionBool.toProto(true)).toBe(wsman.WorkspaceConditionBool.TRUE);
    expect(gitAuthMethod.fromProto(contentservice.GitAuthMethod.BASIC_AUTH_OTS)).toBe('basic-ots');
  });

  it('refuses a mapping that is not a bijection onto the domain values', () => {
    expect(() => defineEnumConverter<0 | 1, 'a' | 'b'>('Broken', ['a', 'b'], { 0: 'a', 1: 'a' })).toThrow(
      /mapped twice/,
    );
    expect(() => defineEnumConverter<0, 'a' | 'b'>('Broken', ['a', 'b'], { 0: 'a' })).toThrow(/has no proto value/);
  });
});

describe('parseGoDuration', () => {
  const ok: [string, number][] = [
    ['0', 0],
    ['-0', 0],
    ['+0', 0],
    ['5s', 5_000],
    ['30s', 30_000],
    ['1478s', 1_478_000],
    ['-5s', -5_000],
    ['+5s', 5_000],
    ['5.0s', 5_000],
    ['5.6s', 5_600],
    ['5.s', 5_000],
    ['.5s', 500],
    ['1.004s', 1_004],
    ['100.00100s', 100_001],
    ['10ns', 0.00001],
    ['11us', 0.011],
    ['12µs', 0.012],
    ['12μs', 0.012],
    ['13ms', 13],
    ['15m', 900_000],
    ['16h', 57_600_000],
    ['1h30m', 5_400_000],
    ['3h30m', 12_600_000],
    ['10.5s4m', 250_500],
    ['-2m3.4s', -123_400],
    ['1h2m3s4ms5us6ns', 3_723_004.005006],
    ['39h9m14.425s', 140_954_425],
  ];

  it.each(ok)('parses %s', (text, ms) => {
    expect(parseGoDuration(text)).toBeCloseTo(ms, 9);
  });

  const bad = [
    '',
    '3',
    '-',
    's',
    '.',
    '-.',
    '.s',
    '+.s',
    '1d',
    '1.5x',
    ' 1s',
    '1s ',
    '1h x',
    '1h-1m',
    '9223372036854775808ns',
    '3000000h',
  ];
  it.each(bad)('rejects %j with InvalidArgumentError', (text) => {
    expect(() => parseGoDuration(text)).toThrow(InvalidArgumentError);
  });

  it('names the field it was given', () => {
    try {
      parseGoDuration('ten minutes', 'spec.timeout');
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as InvalidArgumentError).field).toBe('spec.timeout');
      expect((error as Error).message).toContain("invalid duration 'ten minutes'");
    }
  });
});

describe('formatGoDuration', () => {
  const cases: [number, string][] = [
    [0, '0s'],
    [0.000001, '1ns'],
    [0.0011, '1.1µs'],
    [2.2, '2.2ms'],
    [3_300, '3.3s'],
    [245_000, '4m5s'],
    [245_001, '4m5.001s'],
    [18_367_001, '5h6m7.001s'],
    [480_000.000001, '8m0.000000001s'],
    [3_600_000, '1h0m0s'],
    [-1, '-1ms'],
    [-5_400_000, '-1h30m0s'],
  ];
  it.each(cases)('formats %d ms as %s', (ms, text) => {
    expect(formatGoDuration(ms)).toBe(text);
  });

  it('round-trips through parseGoDuration', () => {
    for (const ms of [1, 999, 1_000, 59_999, 61_000, 3_599_999, 86_400_000, 0.5, 123_456.789]) {
      expect(parseGoDuration(formatGoDuration(ms))).toBeCloseTo(ms, 9);
    }
  });

  it('rejects non-finite input', () => {
    expect(() => formatGoDuration(Number.NaN)).toThrow(InvalidArgumentError);
    expect(() => formatGoDuration(Infinity)).toThrow(InvalidArgumentError);
  });
});

describe('limitGitStatus', () => {
  const big = (n: number, width: number): string[] => Array.from({ length: n }, (_, i) => `${i}`.padEnd(width, 'x'));

  it('clips strings, cuts lists to their entry and size bounds, and keeps the totals', () => {
    const limited = limitGitStatus({
      branch: 'b'.repeat(10_000),
      latestCommit: 'c'.repeat(40),
      uncommittedFiles: big(500, 4000),
      untrackedFiles: big(500, 4000),
      unpushedCommits: big(500, 4000),
      totalUncommittedFiles: 500,
      totalUntrackedFiles: 9_999,
      totalUnpushedCommits: -1,
    });
    expect(limited.branch).toHaveLength(gitStatusLimits.stringChars);
    expect(limited.branch.endsWith('…')).toBe(true);
    expect(limited.latestCommit).toBe('c'.repeat(40));
    const lists = [...limited.uncommittedFiles, ...limited.untrackedFiles, ...limited.unpushedCommits];
    expect(lists.reduce((sum, s) => sum + s.length, 0)).toBeLessThanOrEqual(gitStatusLimits.listChars);
    expect(lists.every((s) => s.length <= gitStatusLimits.stringChars)).toBe(true);
    expect(limited.totalUncommittedFiles).toBe(500);
    expect(limited.totalUntrackedFiles).toBe(9_999);
    // A count below what was listed (or not a count at all) is not believed.
    expect(limited.totalUnpushedCommits).toBe(500);
  });

  it('leaves an ordinary status as it is', () => {
    const ordinary = {
      branch: 'main',
      latestCommit: 'a'.repeat(40),
      uncommittedFiles: ['src/a.ts'],
      untrackedFiles: big(100, 40),
      unpushedCommits: [],
      totalUncommittedFiles: 1,
      totalUntrackedFiles: 100,
      totalUnpushedCommits: 0,
    };
    expect(limitGitStatus(ordinary)).toEqual(ordinary);
  });
});
