/**
 * Size limits for every string, list and map of every WorkspaceManager request (invariants 7 and 12), checked
 * on the decoded message before the request reaches the core, so that a refused request leaves no trace and
 * costs at most one walk over what grpc-js already decoded.
 *
 * Limits are looked up by field name (ts-proto's camelCase); fields not named here get the defaults. Errors name
 * the field by its wire name (`spec.envvars[3].value`) and never quote the offending value: a field path built
 * from a map key quotes at most a short prefix of the key.
 *
 * @module
 */
import { InvalidArgumentError, assertDecoded } from '@workbay/api';

// The edge's error bounding is shared with the daemon; re-exported for this package's callers.
export { boundErrorMessage, wellFormed } from '@workbay/api';

/** Longest string (in UTF-16 units, which bounds the UTF-8 bytes to 3x) per field name. */
const stringLimits: Readonly<Record<string, number>> = {
  id: 128,
  instanceId: 128,
  metaId: 128,
  owner: 128,
  servicePrefix: 128,
  team: 256,
  project: 256,
  class: 128,
  workspaceImage: 1024,
  deprecatedIdeImage: 1024,
  webRef: 1024,
  supervisorRef: 1024,
  desktopRef: 1024,
  desktopPluginRef: 1024,
  ideImageLayers: 1024,
  workspaceLocation: 1024,
  name: 256,
  value: 32 * 1024,
  secretName: 256,
  key: 256,
  sshPublicKeys: 16 * 1024,
  keys: 16 * 1024,
  timeout: 64,
  closedTimeout: 64,
  maximumLifetime: 64,
  duration: 64,
  volumeHandle: 1024,
  remoteUri: 4096,
  upstreamRemoteUri: 4096,
  url: 4096,
  otsUrl: 4096,
  snapshot: 1024,
  username: 256,
  password: 4096,
  email: 256,
  cloneTaget: 1024,
  checkoutLocation: 1024,
  targetLocation: 1024,
  filePath: 1024,
  digest: 256,
};

/** Most elements per list field. */
const listLimits: Readonly<Record<string, number>> = {
  ports: 64,
  envvars: 256,
  sysEnvvars: 256,
  sshPublicKeys: 32,
  keys: 32,
  ideImageLayers: 32,
  featureFlags: 32,
  initializer: 32,
  files: 1000,
  git: 32,
};

/** Most entries per map field, and the longest key and value. */
const mapLimits: Readonly<Record<string, { entries: number; key: number; value: number }>> = {
  annotations: { entries: 64, key: 256, value: 4096 },
  customConfig: { entries: 64, key: 256, value: 4096 },
};

export const requestLimits = {
  defaultString: 4096,
  defaultList: 256,
  defaultMap: { entries: 64, key: 256, value: 4096 },
  /** Objects nested deeper than this are refused (composite initializers nest 4 levels per step). */
  maxDepth: 48,
  /** Every string, element and entry counted together: bounds the walk and all the little allocations. */
  maxNodes: 20_000,
  /** Total characters of all strings in one request. */
  maxTotalChars: 1024 * 1024,
  /** grpc-js's receive limit for the whole message (the server refuses larger ones with RESOURCE_EXHAUSTED). */
  maxMessageBytes: 2 * 1024 * 1024,
} as const;

const snake = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** A short, printable prefix of a value for an error message. */
export function quote(value: string, max = 64): string {
  // eslint-disable-next-line no-control-regex
  const printable = value.replace(/[\u0000-\u001f\u007f]/g, '?');
  return printable.length > max ? `${printable.slice(0, max - 3)}...` : printable;
}

interface WalkState {
  nodes: number;
  chars: number;
}

/** Composite initializers nest at most this many levels (the daemon has the same limit). */
const maxCompositeDepth = 8;

/** Where a chain of composite initializers began, and how deep it is. */
interface Nesting {
  readonly root: string;
  readonly depth: number;
}

function field(path: string, name: string): string {
  return path ? `${path}.${snake(name)}` : snake(name);
}

function checkString(value: string, path: string, limit: number, state: WalkState): void {
  state.chars += value.length;
  if (value.length > limit) {
    throw new InvalidArgumentError(path, `is too long (${value.length} characters; at most ${limit})`);
  }
  if (state.chars > requestLimits.maxTotalChars) {
    throw new InvalidArgumentError(
      path,
      `the request carries too much text (more than ${requestLimits.maxTotalChars} characters)`,
    );
  }
}

function walk(value: unknown, path: string, name: string, depth: number, state: WalkState, nesting?: Nesting): void {
  state.nodes += 1;
  if (state.nodes > requestLimits.maxNodes) {
    throw new InvalidArgumentError(
      path,
      `the request has too many fields and elements (more than ${requestLimits.maxNodes})`,
    );
  }
  if (typeof value === 'string') {
    checkString(value, path, stringLimits[name] ?? requestLimits.defaultString, state);
    return;
  }
  if (value === null || typeof value !== 'object' || value instanceof Date) return;
  if (depth > requestLimits.maxDepth) throw new InvalidArgumentError(path, 'is nested too deeply');
  if (value instanceof Uint8Array) {
    checkString('', path, 0, state);
    if (value.length > requestLimits.defaultString) {
      throw new InvalidArgumentError(
        path,
        `is too long (${value.length} bytes; at most ${requestLimits.defaultString})`,
      );
    }
    return;
  }
  if (Array.isArray(value)) {
    const limit = listLimits[name] ?? requestLimits.defaultList;
    if (value.length > limit)
      throw new InvalidArgumentError(path, `has too many elements (${value.length}; at most ${limit})`);
    value.forEach((element, i) => walk(element, `${path}[${i}]`, name, depth + 1, state, nesting));
    return;
  }
  const map = mapLimits[name];
  if (map) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length > map.entries) {
      throw new InvalidArgumentError(path, `has too many entries (${entries.length}; at most ${map.entries})`);
    }
    // The field of an error travels in gRPC metadata, which takes printable ASCII only: keys go in the message.
    for (const [key, entry] of entries) {
      state.nodes += 1;
      state.chars += key.length;
      if (key.length > map.key) {
        throw new InvalidArgumentError(
          path,
          `key '${quote(key, 32)}' is too long (${key.length} characters; at most ${map.key})`,
        );
      }
      if (typeof entry === 'string') {
        state.chars += entry.length;
        if (entry.length > map.value) {
          throw new InvalidArgumentError(
            path,
            `the value of key '${quote(key, 32)}' is too long (${entry.length} characters; at most ${map.value})`,
          );
        }
      } else walk(entry, path, name, depth + 1, state, nesting);
    }
    if (state.chars > requestLimits.maxTotalChars) {
      throw new InvalidArgumentError(
        path,
        `the request carries too much text (more than ${requestLimits.maxTotalChars} characters)`,
      );
    }
    return;
  }
  for (const [key, child] of Object.entries(value as Record<string, unknown>)) {
    // ts-proto oneofs are `{ $case, value }` under the oneof's name: the wire path names the chosen field only.
    if (key === '$case') continue;
    const oneof = (value as { $case?: unknown }).$case;
    if (key === 'value' && typeof oneof === 'string') {
      let inner = nesting;
      if (oneof === 'composite') {
        inner = { root: nesting?.root ?? path, depth: (nesting?.depth ?? 0) + 1 };
        if (inner.depth > maxCompositeDepth) {
          throw new InvalidArgumentError(
            inner.root,
            `composite initializers are nested too deeply (at most ${maxCompositeDepth} levels)`,
          );
        }
      }
      walk(child, path ? `${path}.${snake(oneof)}` : snake(oneof), oneof, depth + 1, state, inner);
      continue;
    }
    const isOneof =
      child !== null && typeof child === 'object' && typeof (child as { $case?: unknown }).$case === 'string';
    walk(child, isOneof ? path : field(path, key), key, depth + 1, state, nesting);
  }
}

/**
 * Throws an {@link InvalidArgumentError} naming the first string, list or map of `request` over its limit.
 * Cheap: one walk over the decoded message, bounded by {@link requestLimits}.
 */
export function checkRequestBounds(request: unknown): void {
  assertDecoded(request);
  walk(request, '', '', 0, { nodes: 0, chars: 0 });
}
