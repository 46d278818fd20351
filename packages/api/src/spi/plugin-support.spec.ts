import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../errors.js';
import type { SafeParseResultLike, SchemaIssueLike, SchemaLike } from './plugin-support.js';
import {
  isNetworkUnreachableCode,
  lowerCaseMetadata,
  networkUnreachableCodes,
  parsePluginSection,
  readConfigFile,
} from './plugin-support.js';

interface Demo {
  endpoint: string;
}

/** A hand-written schema in zod's safeParse shape: `endpoint` is a required string, nothing else allowed. */
const demoSchema: SchemaLike<Demo> = {
  safeParse(input: unknown): SafeParseResultLike<Demo> {
    const { kind, endpoint, ...rest } = input as Record<string, unknown>;
    const issues: SchemaIssueLike[] = [];
    const extra = Object.keys(rest);
    if (extra.length) issues.push({ code: 'unrecognized_keys', path: [], message: 'Unrecognized key', keys: extra });
    if (kind !== undefined && kind !== 'demo') issues.push({ code: 'invalid_value', path: ['kind'], message: 'bad' });
    if (typeof endpoint !== 'string') issues.push({ code: 'invalid_type', path: ['endpoint'], message: 'is required' });
    if (issues.length) return { success: false, error: { issues } };
    return { success: true, data: { endpoint: endpoint as string } };
  },
};

const options = { kind: 'demo', schema: demoSchema, keyPrefix: 'storage' };

function errorOf(fn: () => unknown): InvalidArgumentError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgumentError);
    return error as InvalidArgumentError;
  }
  throw new Error('expected an InvalidArgumentError');
}

describe('parsePluginSection', () => {
  it('reads the flat form, naming keys under the prefix', () => {
    const section = parsePluginSection({ kind: 'demo', endpoint: 'x' }, options);
    expect(section.config).toEqual({ endpoint: 'x' });
    expect(section.prefix).toBe('storage');
    expect(section.key('endpoint')).toBe('storage.endpoint');
  });

  it('reads the nested form, naming keys under prefix.kind', () => {
    const section = parsePluginSection({ kind: 'demo', demo: { endpoint: 'x' } }, options);
    expect(section.config).toEqual({ endpoint: 'x' });
    expect(section.key('endpoint')).toBe('storage.demo.endpoint');
    expect(parsePluginSection({ demo: { endpoint: 'y' } }, options).config).toEqual({ endpoint: 'y' });
  });

  it('refuses a wrong kind or sibling keys beside the nested section', () => {
    const wrongKind = errorOf(() => parsePluginSection({ kind: 'other', demo: { endpoint: 'x' } }, options));
    expect(wrongKind.field).toBe('storage.kind');
    expect(wrongKind.reason).toBe("is 'other', expected 'demo'");
    const sibling = errorOf(() => parsePluginSection({ kind: 'demo', demo: { endpoint: 'x' }, extra: 1 }, options));
    expect(sibling.field).toBe('storage.extra');
    expect(sibling.reason).toBe('unknown key');
  });

  it('names the full key of the first issue, and unknown keys as such', () => {
    expect(errorOf(() => parsePluginSection({}, options)).field).toBe('storage.endpoint');
    expect(errorOf(() => parsePluginSection({ kind: 'demo', demo: {} }, options)).field).toBe('storage.demo.endpoint');
    const unknown = errorOf(() => parsePluginSection({ demo: { endpoint: 'x', endpiont: 'y' } }, options));
    expect(unknown.field).toBe('storage.demo.endpiont');
    expect(unknown.reason).toBe('unknown key');
    expect(errorOf(() => parsePluginSection({ kind: 'other', endpoint: 'x' }, options)).field).toBe('storage.kind');
  });

  it('refuses a section that is not an object, naming the section', () => {
    expect(errorOf(() => parsePluginSection('nope', options)).field).toBe('storage');
    expect(errorOf(() => parsePluginSection([], options)).field).toBe('storage');
    expect(errorOf(() => parsePluginSection({ demo: null }, options)).field).toBe('storage.demo');
  });

  it('lets the plugin rewrite an issue message, e.g. to keep secrets out of it', () => {
    const error = errorOf(() =>
      parsePluginSection(
        { endpoint: 5 },
        { ...options, describeIssue: (path, message) => (path[0] === 'endpoint' ? 'redacted' : message) },
      ),
    );
    expect(error.field).toBe('storage.endpoint');
    expect(error.reason).toBe('redacted');
  });
});

describe('isNetworkUnreachableCode', () => {
  it('knows Node network and TLS codes and undici transport errors', () => {
    for (const code of ['ECONNREFUSED', 'ENOTFOUND', 'CERT_HAS_EXPIRED', 'UND_ERR_SOCKET']) {
      expect(isNetworkUnreachableCode(code)).toBe(true);
    }
    expect(networkUnreachableCodes.has('ETIMEDOUT')).toBe(true);
  });

  it('is false for other codes and non-strings', () => {
    for (const code of ['ENOENT', 'NoSuchKey', 404, undefined, null]) {
      expect(isNetworkUnreachableCode(code)).toBe(false);
    }
  });
});

describe('readConfigFile', () => {
  it('reads the file, and names the key, path and errno code when it cannot', () => {
    const dir = mkdtempSync(join(tmpdir(), 'workbay-plugin-support-'));
    try {
      writeFileSync(join(dir, 'secret'), 'value\n');
      expect(readConfigFile(join(dir, 'secret'), 'storage.secretKeyFile')).toBe('value\n');
      const error = errorOf(() => readConfigFile(join(dir, 'missing'), 'storage.secretKeyFile'));
      expect(error.field).toBe('storage.secretKeyFile');
      expect(error.reason).toBe(`cannot read '${join(dir, 'missing')}' (ENOENT)`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('lowerCaseMetadata', () => {
  it('lower-cases the keys, keeps the values as they are, and takes no metadata as none', () => {
    expect(lowerCaseMetadata({ 'Workbay-Digest': 'sha256:AB', owner: 'Alice' })).toEqual({
      'workbay-digest': 'sha256:AB',
      owner: 'Alice',
    });
    expect(lowerCaseMetadata(undefined)).toEqual({});
  });
});
