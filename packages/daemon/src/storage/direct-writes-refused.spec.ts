import { constants } from 'node:fs';
import type * as FsPromises from 'node:fs/promises';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { tempDir } from '../test-support/tree.js';

// A filesystem without O_DIRECT (some FUSE and network filesystems) refuses the flag at the open with EINVAL;
// the kernel here has none such to mount, so the refusal is simulated for this spec only.
const directOpens = vi.hoisted(() => ({ count: 0 }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof FsPromises>();
  return {
    ...actual,
    open: async (path: string, flags?: string | number, mode?: number) => {
      if (typeof flags === 'number' && (flags & constants.O_DIRECT) !== 0) {
        directOpens.count++;
        throw Object.assign(new Error(`EINVAL: invalid argument, open '${path}'`), { code: 'EINVAL' });
      }
      return actual.open(path, flags, mode);
    },
  };
});

const { DirectWrites } = await import('./direct-writes.js');

describe('direct writes on a filesystem that refuses them', () => {
  it('are given up after the first refusal: the upload goes through the page cache', async () => {
    const dir = await tempDir();
    try {
      const refusals: unknown[] = [];
      const writes = new DirectWrites((error) => refusals.push(error));
      const path = join(dir.path, 'f');
      await writeFile(path, '');
      expect(await writes.open(path)).toBeUndefined();
      expect(await writes.open(path)).toBeUndefined();
      expect(directOpens.count).toBe(1);
      expect(refusals).toHaveLength(1);
    } finally {
      await dir.cleanup();
    }
  });
});
