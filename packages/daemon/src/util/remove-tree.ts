/**
 * Removing a directory tree a workspace wrote.
 *
 * @module
 */
import { rm } from 'node:fs/promises';
import { runProcess } from './process.js';

/**
 * Removes `path` and everything below it. Node's `rm` walks by whole paths and fails past PATH_MAX (4096 bytes), which
 * a workspace reaches by nesting directories with relative steps (red team round 9: such content could not be
 * archived, and would not have been deleted either): GNU `rm`, which walks by descriptors, takes over then. It stays on
 * the tree's filesystem and never follows a link.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true, maxRetries: 3 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENAMETOOLONG') throw error;
    const result = await runProcess('rm', ['-rf', '--one-file-system', '--', path]);
    if (result.code !== 0) {
      throw new Error(`cannot remove ${path}: ${result.stderr.trim().slice(0, 300) || `rm exited ${result.code}`}`);
    }
  }
}
