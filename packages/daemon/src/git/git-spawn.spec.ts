// spawnGit as root: git for a workspace's user runs under the workspaces' syscall filter (real kernel, real git).
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { spawnGit } from './git-spawn.js';

const isRoot = process.getuid?.() === 0;

/** What a process git starts (an alias with `!`, as a hook or filter would be) finds it may do. */
const probe = [
  'import ctypes, socket',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'try:',
  '    socket.socket(40, socket.SOCK_STREAM); vsock = "created"',
  'except OSError as e: vsock = str(e.errno)',
  'fd = libc.syscall(425, 1, ctypes.create_string_buffer(120))',
  'uring = "created" if fd >= 0 else str(ctypes.get_errno())',
  "seccomp = [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0]",
  'import os',
  'print(os.getuid(), vsock, uring, seccomp)',
].join('\n');

describe.runIf(isRoot && existsSync('/usr/bin/python3'))('spawnGit as a workspace user', () => {
  it('runs git, and whatever git starts, as that user under the syscall filter: no vsock, no io_uring', async () => {
    const result = await spawnGit(
      ['-c', `alias.probe=!/usr/bin/python3 -c '${probe.replace(/'/g, '"')}'`, 'probe'],
      {},
      { cwd: '/', scratch: '/', env: { PATH: '/usr/bin:/bin', HOME: '/' }, user: { uid: 210_777, gid: 210_777 } },
    );
    expect(result.stdout.trim()).toBe('210777 97 38 2');
  });
});
