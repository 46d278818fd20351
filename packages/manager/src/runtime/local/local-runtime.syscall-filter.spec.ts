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
  // A 32-bit call from this 64-bit process (`int 0x80`: i386 numbers, i386 ABI as the filter sees it): socket(AF_VSOCK)
  // and socketcall, whose arguments a filter cannot see. Returns -errno or the new descriptor.
  'import mmap, platform',
  'def int80(nr, ebx, ecx):',
  "    code = bytes([0x53, 0xB8]) + nr.to_bytes(4, 'little') + bytes([0xBB]) + ebx.to_bytes(4, 'little') + bytes([0xB9]) + ecx.to_bytes(4, 'little') + bytes([0x31, 0xD2, 0xCD, 0x80, 0x5B, 0xC3])",
  '    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)',
  '    m.write(code)',
  '    return ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))()',
  "compat = f'i386_vsock={int80(359, 40, 1)} socketcall={int80(102, 1, 0)}' if platform.machine() == 'x86_64' else 'i386 n/a'",
  'vsock = attempt(lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close())',
  'tcp = attempt(lambda: socket.socket().close())',
  "status = {l.split(':')[0]: l.split(':')[1].strip() for l in open('/proc/self/status') if l.startswith('Seccomp')}",
  "open('probe.txt', 'w').write(f\"vsock={vsock} io_uring={attempt(uring)} tcp={tcp} seccomp={status.get('Seccomp')} {compat}\\n\")",
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
  it('refuses vsock sockets (EAFNOSUPPORT) and io_uring (ENOSYS) to a workspace and everything it runs, 32-bit calls included; TCP is untouched', async () => {
    // Mode 2 (filter) in a grandchild of the workspace's shell: the filter is inherited and cannot be dropped.
    // The same for a 32-bit call (x86_64 only): socket(AF_VSOCK) with i386's number, and socketcall.
    const compat = process.arch === 'x64' ? 'i386_vsock=-97 socketcall=-38' : 'i386 n/a';
    expect(await probed({})).toBe(`vsock=97 io_uring=38 tcp=ok seccomp=2 ${compat}`);
  });

  it('with syscallFilter: off, io_uring works: the filter is what refuses it', async () => {
    expect(await probed({ syscallFilter: 'off' })).toMatch(/^vsock=\S+ io_uring=ok tcp=ok seccomp=0 /);
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
