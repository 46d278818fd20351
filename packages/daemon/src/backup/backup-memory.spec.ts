import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BackupMemory } from '../bench/backup-memory.js';
import { measureBackupMemory, writeEmptyFiles } from '../bench/backup-memory.js';
import { tempDir } from '../test-support/tree.js';

// Memory, not time: what a backup keeps per file must not grow with a hostile workspace's file count. Measured as
// the growth of retained memory (heap and buffers, after full collections) from a small tree to a larger one, so
// what every backup holds anyway (worker buffers, a pack) cancels out. Keeping JS objects per file cost ~3.3 KB per
// empty file of this tree; compact records cost ~0.3 KB. The bound leaves a wide margin on both sides.
const small = 10_000;
const large = 40_000;
const maxGrowthPerFile = 1000;

describe('backup memory by file count', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;

  beforeEach(async () => {
    work = await tempDir();
  });
  afterEach(async () => {
    await work.cleanup();
  });

  const measure = async (count: number): Promise<BackupMemory> => {
    const tree = join(work.path, `tree-${count}`);
    await mkdir(tree);
    writeEmptyFiles(tree, count);
    const measured = await measureBackupMemory(tree, 'chunked', join(work.path, `storage-${count}`));
    expect(measured.files).toBe(count);
    return measured;
  };

  it(`a chunked backup (full, then incremental) retains less than ${maxGrowthPerFile} bytes more per file`, async () => {
    const before = await measure(small);
    const after = await measure(large);
    expect((after.retainedBytes - before.retainedBytes) / (large - small)).toBeLessThan(maxGrowthPerFile);
    // Creating 50,000 files and four backups: well within a minute alone, slower on a loaded machine.
  }, 180_000);
});
