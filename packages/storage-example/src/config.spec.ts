import { describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { parseExampleStorageConfig } from './config.js';

describe('parseExampleStorageConfig', () => {
  it('accepts the flat and the nested form, with or without the layout the daemon adds', () => {
    expect(parseExampleStorageConfig({ kind: 'example', root: '/srv' })).toEqual({ root: '/srv' });
    expect(parseExampleStorageConfig({ kind: 'example', example: { root: '/srv' } })).toEqual({ root: '/srv' });
    expect(
      parseExampleStorageConfig({ kind: 'example', root: '/srv', layout: { mode: 'shared', bucket: 'all' } }),
    ).toEqual({ root: '/srv', layout: { mode: 'shared', bucket: 'all' } });
  });

  it('names the key of a bad or unknown setting', () => {
    const error = (() => {
      try {
        parseExampleStorageConfig({ kind: 'example', root: '/srv', rot: 1 });
      } catch (e) {
        return e;
      }
    })();
    expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    expect(String((error as Error).message)).toContain('rot');
    expect(() => parseExampleStorageConfig({ kind: 'example' })).toThrow(/storage\.root/);
  });
});
