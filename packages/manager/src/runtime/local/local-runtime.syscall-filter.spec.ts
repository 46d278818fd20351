// LocalRuntime as root: the seccomp filter of isolated workspaces (syscall-filter.ts), on the real kernel.
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  contentDir,
  isRoot,
  newRuntime,
  shellImages,
  spec,
  useLocalRuntimeFixtures,
  waitForFile,
} from '../../test-support/local-runtime.js';

useLocalRuntimeFixtures();

/** Tries a vsock socket, io_uring and a TCP socket, and writes what each gave (an errno, or ok). */
const probe = [
  'import ctypes, os, socket',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'def attempt(fn):',
  '    try:',
  '        fn(); return "ok"',
  '    except OSError as e:',
  '        return str(e.errno)',
  'def uring():',
  '    params = ctypes.create_string_buffer(120)',
  '    fd = libc.syscall(425, 1, params)',
  '    if fd < 0: raise OSError(ctypes.get_errno(), "io_uring_setup")',
  '    os.close(fd)',
  'vsock = attempt(lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close())',
  'tcp = attempt(lambda: socket.socket().close())',
  "status = {l.split(':')[0]: l.split(':')[1].strip() for l in open('/proc/self/status') if l.startswith('Seccomp')}",
  "open('probe.txt', 'w').write(f\"vsock={vsock} io_uring={attempt(uring)} tcp={tcp} seccomp={status.get('Seccomp')}\\n\")",
].join('\n');

const images = shellImages({ probe: '/usr/bin/python3 probe.py; exec sleep 600' });

async function probed(config: Parameters<typeof newRuntime>[0]): Promise<string> {
  const runtime = await newRuntime({ images, ...config });
  const dir = await contentDir();
  await writeFile(path.join(dir, 'probe.py'), probe);
  await runtime.start(spec({ contentDir: dir, image: 'probe' }));
  return (await waitForFile(path.join(dir, 'probe.txt'))).trim();
}

describe.runIf(isRoot && existsSync('/usr/bin/python3'))('LocalRuntime: syscall filter as root', () => {
  it('refuses vsock sockets (EAFNOSUPPORT) and io_uring (ENOSYS) to a workspace and everything it runs; TCP is untouched', async () => {
    // Mode 2 (filter) in a grandchild of the workspace's shell: the filter is inherited and cannot be dropped.
    expect(await probed({})).toBe('vsock=97 io_uring=38 tcp=ok seccomp=2');
  });

  it('with syscallFilter: off, io_uring works: the filter is what refuses it', async () => {
    expect(await probed({ syscallFilter: 'off' })).toMatch(/^vsock=\S+ io_uring=ok tcp=ok seccomp=0$/);
  });

  it('runs a Node workspace under the filter (libuv does without io_uring)', async () => {
    const runtime = await newRuntime({
      images: shellImages({
        node: `${process.execPath} -e "require('fs').writeFileSync('node.txt', require('fs').readFileSync('/etc/hostname', 'utf8').length > 0 ? 'read\\n' : 'empty\\n')"; exec sleep 600`,
      }),
    });
    const dir = await contentDir();
    await runtime.start(spec({ contentDir: dir, image: 'node' }));
    expect((await waitForFile(path.join(dir, 'node.txt'))).trim()).toBe('read');
  });
});
