/**
 * The host file modes that keep one workspace's content from another's host uid. The sandbox already hides the
 * working area from a workspace; these hold for whatever runs as a workspace's uid outside it (the daemon's git, a
 * process a flaw lets out). Red team round 7 read another owner's repository through the working area, 0755, and
 * content roots, 0755: any workspace uid could list every content directory and read every file its owner's umask
 * left world-readable.
 *
 * @module
 */
import { chmod, mkdir } from 'node:fs/promises';

/** The working area: traversable (a bind source, a kubelet's hostPath) but not listable by workspace uids. */
export const workingAreaMode = 0o711;

/** A content root: its owner's alone (root binds it into the sandbox; the workspace sees it as its own). */
export const contentRootMode = 0o700;

/** Creates the working area, or narrows an existing one's mode (one made by an older daemon was 0755). */
export async function prepareWorkingArea(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: workingAreaMode });
  await chmod(dir, workingAreaMode).catch((error: NodeJS.ErrnoException) => {
    // Deliberate: a daemon that is not root gives workspaces no uids of their own (they are its user), so the mode
    // protects nothing there, and a working area another user made for it must not stop it from starting.
    if (error.code === 'EPERM' && process.getuid?.() !== 0) return;
    throw error;
  });
}
