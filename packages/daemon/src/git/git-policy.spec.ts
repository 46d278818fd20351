import { describe, expect, it } from 'vitest';
import type { InvalidArgumentError } from '../errors.js';
import { isWorkbayError } from '../errors.js';
import type { GitInitializerSpec } from '../initializer/types.js';
import {
  UnsafeRepositoryError,
  configEnv,
  fixedConfig,
  neutralise,
  neutraliseFile,
  parseConfigList,
} from './config-guard.js';
import type { GitPolicy } from './git-policy.js';
import {
  classifyRemote,
  customConfigAllowlist,
  defaultGitPolicy,
  validateCustomConfig,
  validateGitInitializer,
  validateRemoteUrl,
} from './git-policy.js';

const strict: GitPolicy = defaultGitPolicy;
const local: GitPolicy = { ...defaultGitPolicy, allowLocalRemotes: true };

function errorOf(fn: () => void): InvalidArgumentError {
  try {
    fn();
  } catch (error) {
    expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    return error as InvalidArgumentError;
  }
  throw new Error('expected INVALID_ARGUMENT');
}

const spec = (patch: Partial<GitInitializerSpec>): GitInitializerSpec => ({
  remoteUri: 'https://example.com/acme/app.git',
  targetMode: 'remote-head',
  cloneTarget: '',
  checkoutLocation: '',
  customConfig: {},
  auth: { method: 'none' },
  fullClone: false,
  ...patch,
});

describe('custom_config allowlist', () => {
  it('accepts the allowed keys in any case', () => {
    expect(() =>
      validateCustomConfig({ 'core.autocrlf': 'input', 'User.Name': 'A', 'http.postBuffer': '524288000' }, 'f'),
    ).not.toThrow();
  });

  it.each([
    'core.sshCommand',
    'core.fsmonitor',
    'core.hooksPath',
    'core.gitProxy',
    'core.askPass',
    'core.editor',
    'core.pager',
    'core.worktree',
    'core.sharedRepository',
    'core.alternateRefsCommand',
    'credential.helper',
    'credential.https://example.com.helper',
    'filter.lfs.process',
    'filter.x.clean',
    'filter.x.smudge',
    'diff.x.textconv',
    'diff.external',
    'merge.x.driver',
    'uploadpack.packObjectsHook',
    'protocol.ext.allow',
    'protocol.allow',
    'include.path',
    'includeIf.gitdir:/.path',
    'url.https://evil.example/.insteadOf',
    'http.proxy',
    'http.sslVerify',
    'http.cookieFile',
    'remote.origin.uploadpack',
    'remote.origin.vcs',
    'submodule.x.update',
    'gpg.program',
    'alias.status',
    'init.templateDir',
    'sequence.editor',
    'core.x.autocrlf',
  ])('refuses %s with INVALID_ARGUMENT naming the key', (key) => {
    const error = errorOf(() =>
      validateCustomConfig({ [key]: 'touch /tmp/pwned' }, 'initializer.git.config.custom_config'),
    );
    expect(error.field).toBe('initializer.git.config.custom_config');
    expect(error.message).toContain(`'${key.slice(0, 64)}'`);
  });

  it('no allowed key names a program, a path, a URL or a transport', () => {
    for (const key of customConfigAllowlist) {
      expect(key).toBe(key.toLowerCase());
      expect(key).not.toMatch(
        /command|hook|helper|proxy|program|editor|pager|askpass|insteadof|\.allow$|^url\.|^include|\.path$|cookiefile|worktree|template|^ssl|\.ssl/,
      );
    }
  });

  it('bounds keys, values and entries, and quotes at most 64 characters of a key', () => {
    const long = `core.${'x'.repeat(300)}`;
    expect(errorOf(() => validateCustomConfig({ [long]: '1' }, 'f')).message.length).toBeLessThan(200);
    expect(errorOf(() => validateCustomConfig({ 'user.name': 'x'.repeat(5000) }, 'f')).message).toMatch(/too long/);
    expect(errorOf(() => validateCustomConfig({ 'user.name': 'a\nb' }, 'f')).message).toMatch(/control/);
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`user.name${i}`, 'x']));
    expect(errorOf(() => validateCustomConfig(many, 'f')).message).toMatch(/too many entries/);
    const evil = `core.sshCommand${'y'.repeat(200)}`;
    const message = errorOf(() => validateCustomConfig({ [evil]: '1' }, 'f')).message;
    expect(message).toContain(evil.slice(0, 64));
    expect(message).not.toContain(evil.slice(0, 65));
  });
});

describe('remote URLs', () => {
  it.each([
    ['https://github.com/acme/app.git', 'https'],
    ['http://127.0.0.1:8080/repo.git', 'http'],
    ['ssh://git@github.com/acme/app.git', 'ssh'],
    ['git+ssh://git@github.com/acme/app.git', 'ssh'],
    ['git@github.com:acme/app.git', 'ssh'],
    ['github.com:acme/app.git', 'ssh'],
    ['git://example.com/app.git', 'git'],
    ['file:///srv/repo.git', 'local'],
    ['/etc', 'local'],
    ['./repo', 'local'],
    ['repo.git', 'local'],
    ['../x:y/z', 'local'],
    ['ext::sh -c touch% /tmp/x', 'helper'],
    ['fd::3', 'helper'],
    ['https::https://example.com/x', 'helper'],
    ['ftp://example.com/x', 'other'],
    ['testgit://x', 'other'],
  ])('%s is %s', (url, kind) => {
    expect(classifyRemote(url).kind).toBe(kind);
  });

  it.each(['https://github.com/acme/app.git', 'ssh://git@host/x', 'git@host:x.git', 'git://host/x', 'http://h/x'])(
    'allows %s without local remotes',
    (url) => {
      expect(() => validateRemoteUrl(url, strict, 'remote_uri')).not.toThrow();
    },
  );

  it.each(['/etc', 'file:///root/x', '/tmp/repo.git', 'relative/repo', 'FILE:///etc'])(
    'refuses the local remote %s unless git.allowLocalRemotes',
    (url) => {
      const error = errorOf(() => validateRemoteUrl(url, strict, 'initializer.git.remote_uri'));
      expect(error.field).toBe('initializer.git.remote_uri');
      expect(error.message).toMatch(/allowLocalRemotes/);
      expect(() => validateRemoteUrl(url, local, 'initializer.git.remote_uri')).not.toThrow();
    },
  );

  it.each(['ext::sh -c touch% /tmp/x', 'ext::sh', 'fd::17', 'foo::bar', 'ftp://h/x', 'testgit://x'])(
    'refuses %s even with local remotes allowed',
    (url) => {
      errorOf(() => validateRemoteUrl(url, local, 'f'));
    },
  );

  it('refuses option-looking hosts, whitespace and oversized URLs, and never quotes a password', () => {
    errorOf(() => validateRemoteUrl('ssh://-oProxyCommand=touch%20x/y', strict, 'f'));
    errorOf(() => validateRemoteUrl('-uhttps://x', strict, 'f'));
    errorOf(() => validateRemoteUrl('https://h/x y', strict, 'f'));
    expect(errorOf(() => validateRemoteUrl(`https://h/${'x'.repeat(5000)}`, strict, 'f')).message).toMatch(/too long/);
    const message = errorOf(() => validateRemoteUrl('file://alice:s3cr3t-pass@/etc', strict, 'f')).message;
    expect(message).not.toContain('s3cr3t');
  });

  it('validateGitInitializer checks both remotes and the config; without a policy local remotes wait for the clone', () => {
    expect(errorOf(() => validateGitInitializer(spec({ remoteUri: '/etc' }), 'initializer.git', strict)).field).toBe(
      'initializer.git.remote_uri',
    );
    expect(() => validateGitInitializer(spec({ remoteUri: '/etc' }), 'initializer.git')).not.toThrow();
    expect(
      errorOf(() => validateGitInitializer(spec({ upstreamRemoteUri: 'ext::sh' }), 'initializer.git', local)).field,
    ).toBe('initializer.git.upstream_Remote_uri');
    expect(
      errorOf(() => validateGitInitializer(spec({ customConfig: { 'core.fsmonitor': 'x' } }), 'initializer.git')).field,
    ).toBe('initializer.git.config.custom_config');
  });
});

describe('config neutralisation', () => {
  it('parses git config --list -z with and without scopes, valueless keys included', () => {
    expect(parseConfigList('local\0core.bare\nfalse\0local\0x.flag\0command\0a.b\n1\n2\0', true)).toEqual([
      { scope: 'local', key: 'core.bare', value: 'false' },
      { scope: 'local', key: 'x.flag' },
      { scope: 'command', key: 'a.b', value: '1\n2' },
    ]);
    expect(parseConfigList('filter.x.clean\ncat\0', false)).toEqual([{ key: 'filter.x.clean', value: 'cat' }]);
  });

  it('overrides every command-bearing key it finds, keeping subsection case', () => {
    const entries = parseConfigList(
      [
        'local\0filter.Evil.clean\ntouch x',
        'local\0diff.t.textconv\ntouch x',
        'local\0diff.t.command\ntouch x',
        'local\0diff.external\ntouch x',
        'local\0merge.m.driver\ntouch x',
        'local\0credential.https://h.helper\n!touch x',
        'local\0submodule.s.update\n!touch x',
        'local\0protocol.ext.allow\nalways',
        'local\0protocol.https.allow\nnever',
        'local\0core.alternaterefscommand\ntouch x',
        'local\0gpg.program\ntouch x',
        'command\0filter.ours.clean\nx',
        '',
      ].join('\0'),
      true,
    );
    const overrides = new Map(neutralise(entries, strict, '/w'));
    expect(overrides.get('filter.Evil.clean')).toBe('');
    expect(overrides.get('filter.Evil.smudge')).toBe('');
    expect(overrides.get('filter.Evil.process')).toBe('');
    expect(overrides.get('filter.Evil.required')).toBe('false');
    expect(overrides.get('diff.t.textconv')).toBe('cat');
    expect(overrides.get('diff.t.command')).toBe('true');
    expect(overrides.get('diff.external')).toBe('true');
    expect(overrides.get('merge.m.driver')).toBe('false');
    expect(overrides.get('credential.https://h.helper')).toBe('');
    expect(overrides.get('submodule.s.update')).toBe('checkout');
    expect(overrides.get('protocol.ext.allow')).toBe('never');
    expect(overrides.get('protocol.https.allow')).toBe('always');
    expect(overrides.get('core.alternateRefsCommand')).toBe('true');
    expect(overrides.get('gpg.program')).toBe('gpg');
    expect(overrides.has('filter.ours.clean')).toBe(false);
  });

  it('refuses what it cannot neutralise', () => {
    expect(() => neutralise([{ scope: 'local', key: 'remote.origin.vcs', value: 'ext' }], strict, '/w')).toThrow(
      UnsafeRepositoryError,
    );
    expect(() => neutralise([{ scope: 'local', key: 'remote.x.uploadpack', value: 'sh' }], strict, '/w')).toThrow(
      /program run for a remote/,
    );
    expect(() =>
      neutralise([{ scope: 'local', key: 'includeIf.onbranch:main.path', value: '/x' }], strict, '/w'),
    ).toThrow(/checked-out branch/);
    expect(() => neutraliseFile([{ key: 'include.path', value: '/x' }], strict, '/w')).toThrow(/includes/);
  });

  it('the fixed config switches off hooks, fsmonitor, helpers and every transport but the allowed ones', () => {
    const fixed = new Map(fixedConfig(strict));
    expect(fixed.get('core.hooksPath')).toBe('/dev/null');
    expect(fixed.get('core.fsmonitor')).toBe('false');
    expect(fixed.get('credential.helper')).toBe('');
    expect(fixed.get('protocol.allow')).toBe('never');
    expect(fixed.get('protocol.file.allow')).toBe('never');
    expect(fixed.get('protocol.ext.allow')).toBe('never');
    expect(fixed.get('protocol.https.allow')).toBe('always');
    expect(new Map(fixedConfig(local)).get('protocol.file.allow')).toBe('always');
    expect(configEnv([['a.b', 'x=y']])).toEqual({
      GIT_CONFIG_COUNT: '1',
      GIT_CONFIG_KEY_0: 'a.b',
      GIT_CONFIG_VALUE_0: 'x=y',
    });
  });
});
