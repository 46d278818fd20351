/**
 * Writes a workspace's authorised SSH keys to `<contentDir>/.ssh/authorized_keys` (directory 0700, file 0600,
 * replaced atomically), where the workspace's sshd or its user finds them.
 *
 * @module
 */
import { chmod, mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export async function writeAuthorizedKeys(contentDir: string, keys: readonly string[]): Promise<string> {
  const sshDir = join(contentDir, '.ssh');
  await mkdir(sshDir, { recursive: true, mode: 0o700 });
  // mkdir's mode is filtered by the umask and does not apply to an existing directory.
  await chmod(sshDir, 0o700);
  const target = join(sshDir, 'authorized_keys');
  const tmp = `${target}.tmp-${process.pid}`;
  const content = keys.map((k) => k.trim()).join('\n');
  await writeFile(tmp, content ? `${content}\n` : '', { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, target);
  return target;
}
