import Table from 'cli-table3';
import { admissionLevel, portProtocol, portVisibility, workspacePhase, workspaceType, wsman } from '@workbay/api';
import type { WorkspacePhase } from '@workbay/api';

/** A plain table without borders, like `kubectl get`: header row, then one row per item. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const t = new Table({
    head: [...head],
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: '  ',
    },
    style: { 'padding-left': 0, 'padding-right': 0, head: [], border: [], compact: true },
  });
  for (const row of rows) t.push([...row]);
  return `${t
    .toString()
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n')}\n`;
}

/** `key  value` lines with aligned values. */
export function keyValues(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${v}`.trimEnd()).join('\n') + '\n';
}

export function phaseOf(status: wsman.WorkspaceStatus | undefined): WorkspacePhase {
  return (status && safe(() => workspacePhase.fromProto(status.phase))) ?? 'unknown';
}

const safe = <T>(f: () => T): T | undefined => {
  try {
    return f();
  } catch {
    // Deliberate: a value this CLI does not know (a newer server) is shown as unknown, not an error.
    return undefined;
  }
};

/** "4s", "3m", "2h5m", "3d" – how long ago `date` was. */
export function age(date: Date | undefined, now = Date.now()): string {
  if (!date) return '-';
  return shortDuration(now - date.getTime());
}

export function shortDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h}h${m % 60}m` : `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

/** "1.2s" with one decimal, for progress output. */
export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

const isTrue = (v: wsman.WorkspaceConditionBool | undefined): boolean => v === wsman.WorkspaceConditionBool.TRUE;

/** The conditions that are set, as short words: `failed: …`, `timeout: …`, `deployed`, … */
export function conditionList(c: wsman.WorkspaceConditions | undefined): string[] {
  if (!c) return [];
  const out: string[] = [];
  if (c.failed) out.push(`failed: ${c.failed}`);
  if (c.timeout) out.push(`timeout: ${c.timeout}`);
  if (c.headlessTaskFailed) out.push(`headless task failed: ${c.headlessTaskFailed}`);
  if (isTrue(c.deployed)) out.push('deployed');
  if (c.firstUserActivity) out.push(`first user activity ${c.firstUserActivity.toISOString()}`);
  if (isTrue(c.stoppedByRequest)) out.push('stopped by request');
  if (isTrue(c.aborted)) out.push('aborted');
  if (isTrue(c.finalBackupComplete)) out.push('final backup complete');
  if (c.snapshot) out.push(`snapshot: ${c.snapshot}`);
  return out;
}

export const workspaceListHead = ['INSTANCE', 'WORKSPACE', 'OWNER', 'PHASE', 'CLASS', 'AGE', 'URL'] as const;

export function workspaceRow(status: wsman.WorkspaceStatus, now = Date.now()): string[] {
  const phase = phaseOf(status);
  const failed = status.conditions?.failed;
  return [
    status.id,
    status.metadata?.metaId ?? '',
    status.metadata?.owner ?? '',
    failed && (phase === 'stopping' || phase === 'stopped') ? `${phase} (failed)` : phase,
    status.spec?.class ?? '',
    age(status.metadata?.startedAt, now),
    status.spec?.url ?? '',
  ];
}

export function describeStatus(
  status: wsman.WorkspaceStatus,
  lastActivity: string | undefined,
  options: { showToken: boolean },
  now = Date.now(),
): string {
  const spec = status.spec;
  const meta = status.metadata;
  const pairs: [string, string][] = [
    ['Instance', status.id],
    ['Workspace', meta?.metaId ?? ''],
    ['Owner', meta?.owner ?? ''],
    ['Phase', phaseOf(status)],
    ['URL', spec?.url ?? ''],
    ['Image', spec?.workspaceImage ?? ''],
    ['Class', spec?.class ?? ''],
    ['Type', safe(() => workspaceType.fromProto(spec?.type ?? 0)) ?? 'unknown'],
    ['Started', meta?.startedAt ? `${meta.startedAt.toISOString()} (${age(meta.startedAt, now)} ago)` : '-'],
    ['Last activity', lastActivity || '-'],
    ['Inactivity timeout', spec?.timeout || 'default'],
    ['Closed timeout', spec?.closedTimeout || 'default'],
    ['Admission', safe(() => admissionLevel.fromProto(status.auth?.admission ?? 0)) ?? 'unknown'],
    ['Owner token', options.showToken ? status.auth?.ownerToken || '-' : '(hidden; use --show-token)'],
  ];
  const ports = spec?.exposedPorts ?? [];
  pairs.push(['Ports', ports.length ? ports.map(portLine).join('\n' + ' '.repeat(20)) : '-']);
  const annotations = Object.entries(meta?.annotations ?? {});
  if (annotations.length) pairs.push(['Annotations', annotations.map(([k, v]) => `${k}=${v}`).join(', ')]);
  const conditions = conditionList(status.conditions);
  pairs.push(['Conditions', conditions.length ? conditions.join('\n' + ' '.repeat(20)) : '-']);
  if (status.repo?.branch || status.repo?.latestCommit) pairs.push(['Git', gitLine(status.repo)]);
  if (status.runtime?.nodeName) pairs.push(['Node', status.runtime.nodeName]);
  if (status.message) pairs.push(['Message', status.message]);
  pairs.push(['Status version', String(status.statusVersion)]);
  // Align the continuation lines above with the value column.
  const width = Math.max(...pairs.map(([k]) => k.length));
  return keyValues(pairs.map(([k, v]) => [k, v.replaceAll(' '.repeat(20), ' '.repeat(width + 2))]));
}

/** The Git state the final backup recorded: branch, commit and what would be lost without the backup. */
export function gitLine(repo: NonNullable<wsman.WorkspaceStatus['repo']>): string {
  const commit = repo.latestCommit ? ` @ ${repo.latestCommit.slice(0, 12)}` : '';
  const counts = [
    `${repo.totalUncommitedFiles} uncommitted`,
    `${repo.totalUntrackedFiles} untracked`,
    `${repo.totalUnpushedCommits} unpushed`,
  ].join(', ');
  return `${repo.branch || '(detached)'}${commit} (${counts})`;
}

export function portLine(p: wsman.PortSpec): string {
  const visibility = safe(() => portVisibility.fromProto(p.visibility)) ?? 'unknown';
  const protocol = safe(() => portProtocol.fromProto(p.protocol)) ?? 'unknown';
  return `${p.port} ${visibility} ${protocol}${p.url ? ` ${p.url}` : ''}`;
}

/**
 * The proto3 JSON form of a status, for `--json`, with the phase spelled as everywhere else in the CLI (tables,
 * `--phase`, `start --json`): `running`, not the proto's `RUNNING`.
 */
export function statusJson(status: wsman.WorkspaceStatus | undefined): unknown {
  if (!status) return null;
  return { ...(wsman.WorkspaceStatus.toJSON(status) as Record<string, unknown>), phase: phaseOf(status) };
}

/**
 * A float32 from the wire as the decimal it was configured as: the shortest one that is the same float32
 * (0.3333, not 0.33329999446868896).
 */
export function float32Decimal(value: number): number {
  if (!Number.isFinite(value)) return value;
  for (let digits = 1; digits <= 9; digits++) {
    const candidate = Number(value.toPrecision(digits));
    if (Math.fround(candidate) === Math.fround(value)) return candidate;
  }
  return value;
}
