import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import {
  InvalidArgumentError,
  admissionLevel,
  parseGoDuration,
  parseQualifiedObject,
  portProtocol,
  portVisibility,
  workspaceType,
  wsman,
  contentservice,
} from '@workbay/api';
import type { PortProtocol, PortVisibility, WorkspaceType } from '@workbay/api';

/** The `workbay start` flags, as commander hands them over. */
export interface StartFlags {
  readonly id?: string;
  readonly metaId?: string;
  readonly owner?: string;
  readonly image: string;
  readonly class?: string;
  readonly type: string;
  readonly port: readonly string[];
  readonly env: readonly string[];
  readonly annotation: readonly string[];
  readonly location?: string;
  readonly servicePrefix?: string;
  readonly git?: string;
  readonly branch?: string;
  readonly commit?: string;
  readonly snapshot?: string;
  readonly backup?: boolean;
  readonly empty?: boolean;
  readonly inactivityTimeout?: string;
  readonly closedTimeout?: string;
  readonly maxLifetime?: string;
  readonly admission?: string;
  readonly gitUserName?: string;
  readonly gitUserEmail?: string;
}

/** Parses `3000`, `3000:public`, `3000:public:https` (visibility and protocol in either order). */
export function parsePortFlag(value: string): wsman.PortSpec {
  const [portText = '', ...rest] = value.split(':');
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535) {
    throw new InvalidArgumentError('--port', `'${value}': the port must be a number from 1 to 65535`);
  }
  let visibility: PortVisibility = 'private';
  let protocol: PortProtocol = 'http';
  for (const part of rest) {
    if (portVisibility.is(part)) visibility = part;
    else if (portProtocol.is(part)) protocol = part;
    else throw new InvalidArgumentError('--port', `'${value}': '${part}' is neither public/private nor http/https`);
  }
  return wsman.PortSpec.fromPartial({
    port,
    visibility: portVisibility.toProto(visibility),
    protocol: portProtocol.toProto(protocol),
  });
}

/** `NAME=VALUE`, or `NAME` alone to pass on the variable from the CLI's own environment. */
export function parseEnvFlag(
  value: string,
  env: Readonly<Record<string, string | undefined>>,
): wsman.EnvironmentVariable {
  const eq = value.indexOf('=');
  const name = eq < 0 ? value : value.slice(0, eq);
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    throw new InvalidArgumentError('--env', `'${value}': expected NAME=VALUE with a valid variable name`);
  }
  const val = eq < 0 ? env[name] : value.slice(eq + 1);
  if (val === undefined) throw new InvalidArgumentError('--env', `'${name}' is not set in this environment`);
  return wsman.EnvironmentVariable.fromPartial({ name, value: val });
}

export function parseKeyValue(value: string, flag: string): [string, string] {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(flag, `'${value}': expected KEY=VALUE`);
  return [value.slice(0, eq), value.slice(eq + 1)];
}

/** `--owner` / `--admission owner|everyone`. */
export function parseAdmission(value: string): wsman.AdmissionLevel {
  if (value === 'owner' || value === 'owner-only') return admissionLevel.toProto('owner-only');
  if (value === 'everyone') return admissionLevel.toProto('everyone');
  throw new InvalidArgumentError('admission', `'${value}': expected 'owner' or 'everyone'`);
}

function checkDuration(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') return '';
  parseGoDuration(value, flag);
  return value;
}

/** The repository name of a Git URL, for the default checkout location. */
export function repoName(url: string): string {
  const last = url.replace(/\/+$/, '').split(/[/:]/).pop() ?? '';
  return last.replace(/\.git$/, '') || 'repo';
}

function initializer(flags: StartFlags, location: string): contentservice.WorkspaceInitializer {
  const chosen = [flags.git !== undefined, flags.snapshot !== undefined, flags.backup === true, flags.empty === true];
  if (chosen.filter(Boolean).length > 1) {
    throw new InvalidArgumentError('initializer', 'choose at most one of --git, --snapshot, --backup and --empty');
  }
  if ((flags.branch || flags.commit) && flags.git === undefined) {
    throw new InvalidArgumentError('--branch', '--branch and --commit need --git');
  }
  if (flags.branch && flags.commit) throw new InvalidArgumentError('--commit', 'give either --branch or --commit');
  if (flags.git !== undefined) {
    const mode = flags.commit
      ? contentservice.CloneTargetMode.REMOTE_COMMIT
      : flags.branch
        ? contentservice.CloneTargetMode.REMOTE_BRANCH
        : contentservice.CloneTargetMode.REMOTE_HEAD;
    return contentservice.WorkspaceInitializer.fromPartial({
      spec: {
        $case: 'git',
        value: {
          remoteUri: flags.git,
          targetMode: mode,
          cloneTaget: flags.commit ?? flags.branch ?? '',
          checkoutLocation: location,
        },
      },
    });
  }
  if (flags.snapshot !== undefined) {
    parseQualifiedObject(flags.snapshot, '--snapshot');
    return contentservice.WorkspaceInitializer.fromPartial({
      spec: { $case: 'snapshot', value: { snapshot: flags.snapshot } },
    });
  }
  if (flags.backup) {
    return contentservice.WorkspaceInitializer.fromPartial({
      spec: { $case: 'backup', value: { checkoutLocation: location } },
    });
  }
  return contentservice.WorkspaceInitializer.fromPartial({ spec: { $case: 'empty', value: {} } });
}

/**
 * Turns `workbay start` flags into a StartWorkspaceRequest. Fills in what a person at a terminal does not want to
 * type (ids, owner, location); checks values the CLI can check itself so that mistakes fail before any call.
 */
export function buildStartRequest(
  flags: StartFlags,
  env: Readonly<Record<string, string | undefined>>,
  defaultOwner: string,
): wsman.StartWorkspaceRequest {
  const type = flags.type as WorkspaceType;
  if (!workspaceType.is(type)) {
    throw new InvalidArgumentError('--type', `'${flags.type}': expected one of ${workspaceType.values.join(', ')}`);
  }
  const id = flags.id ?? randomUUID();
  const metaId = flags.metaId ?? `ws-${randomBytes(5).toString('hex')}`;
  const location = flags.location ?? (flags.git !== undefined ? repoName(flags.git) : metaId);
  if (path.isAbsolute(location) || location.split('/').includes('..')) {
    throw new InvalidArgumentError('--location', `'${location}' must be a relative path inside the workspace`);
  }
  const ports = flags.port.map(parsePortFlag);
  const seen = new Set<number>();
  for (const p of ports) {
    if (seen.has(p.port)) throw new InvalidArgumentError('--port', `port ${p.port} is given twice`);
    seen.add(p.port);
  }
  return wsman.StartWorkspaceRequest.fromPartial({
    id,
    servicePrefix: flags.servicePrefix ?? metaId,
    type: workspaceType.toProto(type),
    metadata: {
      owner: flags.owner ?? defaultOwner,
      metaId,
      annotations: Object.fromEntries(flags.annotation.map((a) => parseKeyValue(a, '--annotation'))),
    },
    spec: {
      workspaceImage: flags.image,
      initializer: initializer(flags, location),
      ports,
      envvars: flags.env.map((e) => parseEnvFlag(e, env)),
      workspaceLocation: location,
      timeout: checkDuration(flags.inactivityTimeout, '--inactivity-timeout'),
      closedTimeout: checkDuration(flags.closedTimeout, '--closed-timeout'),
      maximumLifetime: checkDuration(flags.maxLifetime, '--max-lifetime'),
      admission: parseAdmission(flags.admission ?? 'owner'),
      class: flags.class ?? '',
      git:
        flags.gitUserName || flags.gitUserEmail
          ? { username: flags.gitUserName ?? '', email: flags.gitUserEmail ?? '' }
          : undefined,
    },
  });
}
