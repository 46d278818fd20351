/**
 * Validation of requests, in domain terms. Every error is an `InvalidArgumentError` naming the field with its
 * wire name (`spec.workspace_image`, `spec.ports[1].port`, …), and validation never changes any state.
 *
 * @module
 */
import { InvalidArgumentError, parseGoDuration } from '@workbay/api';
import type { EnvVar, StartWorkspaceInput } from './types.js';

const idPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ownerPattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const envNamePattern = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/** Instance ids name files and URL path segments: letters, digits, `.`, `_`, `-`; at most 128. */
export function validateInstanceId(id: string, field = 'id'): void {
  if (!id) throw new InvalidArgumentError(field, 'is required');
  if (!idPattern.test(id) || id === '.' || id === '..') {
    throw new InvalidArgumentError(
      field,
      `'${truncate(id)}' is not a valid id: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
}

/** Parses an optional Go duration ('' = unset). */
export function parseOptionalDuration(value: string, field: string): number | undefined {
  if (value === '') return undefined;
  const ms = parseGoDuration(value, field);
  if (ms < 0) throw new InvalidArgumentError(field, `duration '${truncate(value)}' must not be negative`);
  return ms;
}

/** At most 64 characters of a value from the request, for an error message (docs/security.md). */
export function truncate(value: string): string {
  return value.length > 64 ? `${value.slice(0, 61)}...` : value;
}

export interface ValidatedStart {
  readonly timeoutMs?: number;
  readonly closedTimeoutMs?: number;
  readonly maximumLifetimeMs?: number;
  /** User then system variables, with empty values dropped; system variables win on name clashes. */
  readonly envvars: readonly EnvVar[];
  readonly sysEnvvars: readonly EnvVar[];
}

function validateEnv(list: NonNullable<StartWorkspaceInput['spec']>['envvars'], field: string): EnvVar[] {
  const out: EnvVar[] = [];
  list.forEach((env, i) => {
    const f = `${field}[${i}]`;
    if (!env.name) throw new InvalidArgumentError(`${f}.name`, 'is required');
    if (!envNamePattern.test(env.name)) {
      throw new InvalidArgumentError(`${f}.name`, `'${truncate(env.name)}' is not a valid environment variable name`);
    }
    if (env.value.includes('\0')) throw new InvalidArgumentError(`${f}.value`, 'must not contain NUL bytes');
    if (env.value === '' && env.secret && (env.secret.secretName || env.secret.key)) {
      throw new InvalidArgumentError(
        `${f}.secret`,
        'secret references are not supported by this manager; pass the value instead',
      );
    }
    // Like the original, variables without a value are dropped.
    if (env.value !== '') out.push({ name: env.name, value: env.value });
  });
  return out;
}

/** Checks everything about a StartWorkspace request that does not depend on manager state. */
export function validateStartInput(input: StartWorkspaceInput): ValidatedStart {
  validateInstanceId(input.id, 'id');
  if (input.servicePrefix !== '' && !idPattern.test(input.servicePrefix)) {
    throw new InvalidArgumentError('service_prefix', `'${truncate(input.servicePrefix)}' is not a valid prefix`);
  }
  const metadata = input.metadata;
  if (!metadata) throw new InvalidArgumentError('metadata', 'is required');
  if (!metadata.owner) throw new InvalidArgumentError('metadata.owner', 'is required');
  if (!ownerPattern.test(metadata.owner)) {
    throw new InvalidArgumentError(
      'metadata.owner',
      `'${truncate(metadata.owner)}' may only contain letters, digits, '-' and '_' (at most 128)`,
    );
  }
  if (!metadata.metaId) throw new InvalidArgumentError('metadata.meta_id', 'is required');
  validateInstanceId(metadata.metaId, 'metadata.meta_id');
  for (const key of Object.keys(metadata.annotations)) {
    if (key === '') throw new InvalidArgumentError('metadata.annotations', 'keys must not be empty');
  }
  const spec = input.spec;
  if (!spec) throw new InvalidArgumentError('spec', 'is required');
  if (!spec.image) throw new InvalidArgumentError('spec.workspace_image', 'is required');
  if (!spec.workspaceLocation) throw new InvalidArgumentError('spec.workspace_location', 'is required');
  if (spec.workspaceLocation.startsWith('/') || spec.workspaceLocation.split('/').includes('..')) {
    throw new InvalidArgumentError('spec.workspace_location', 'must be a relative path inside the workspace');
  }
  if (!spec.initializer) throw new InvalidArgumentError('spec.initializer', 'is required');
  if (!spec.initializerKind) {
    throw new InvalidArgumentError('spec.initializer', 'must set one initializer (empty, git, snapshot, …)');
  }
  const seen = new Map<number, number>();
  spec.ports.forEach((port, i) => {
    if (!Number.isInteger(port.port) || port.port < 1 || port.port > 65535) {
      throw new InvalidArgumentError(`spec.ports[${i}].port`, `${port.port} is not a port number (1-65535)`);
    }
    const previous = seen.get(port.port);
    if (previous !== undefined) {
      throw new InvalidArgumentError(
        `spec.ports[${i}].port`,
        `port ${port.port} is listed twice (also spec.ports[${previous}])`,
      );
    }
    seen.set(port.port, i);
  });
  spec.sshPublicKeys.forEach((key, i) => validateSshKey(key, `spec.ssh_public_keys[${i}]`));
  const timeoutMs = parseOptionalDuration(spec.timeout, 'spec.timeout');
  const closedTimeoutMs = parseOptionalDuration(spec.closedTimeout, 'spec.closed_timeout');
  const maximumLifetimeMs = parseOptionalDuration(spec.maximumLifetime, 'spec.maximum_lifetime');
  const envvars = validateEnv(spec.envvars, 'spec.envvars');
  const sysEnvvars = validateEnv(spec.sysEnvvars, 'spec.sys_envvars');
  return { timeoutMs, closedTimeoutMs, maximumLifetimeMs, envvars, sysEnvvars };
}

/** An authorized_keys line: optional options, then `<type> <base64> [comment]`, on one line. */
export function validateSshKey(key: string, field: string): void {
  const trimmed = key.trim();
  if (!trimmed) throw new InvalidArgumentError(field, 'must not be empty');
  if (/[\r\n\0]/.test(trimmed)) throw new InvalidArgumentError(field, 'must be a single line');
  const tokens = trimmed.split(/\s+/);
  const typeIndex = tokens.findIndex((t) => /^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-zA-Z0-9@.-]+)$/.test(t));
  const body = typeIndex >= 0 ? tokens[typeIndex + 1] : undefined;
  if (!body || !/^[A-Za-z0-9+/]+={0,3}$/.test(body)) {
    throw new InvalidArgumentError(
      field,
      `'${truncate(trimmed)}' does not look like an SSH public key ('<type> <base64> [comment]')`,
    );
  }
}
