/**
 * The seccomp filter every isolated workspace runs under (the local runtime's `syscallFilter`, default on), and every
 * git the daemon runs as a workspace's user on repository content nobody reviewed. It takes away what
 * no namespace, capability or cgroup confines, and what Docker's and containerd's default profiles (the Kubernetes
 * runtime's `RuntimeDefault`) take away too:
 * - `socket(AF_VSOCK)`: vsock is not per network namespace. On a virtual machine node, CID 2 is the hypervisor's
 *   host side (the red team reached it from a workspace, round 4): its agents are no workspace's business.
 *   Refused with EAFNOSUPPORT, as on a kernel without vsock.
 * - io_uring (`io_uring_setup`, `_enter`, `_register`): its operations open sockets and files without passing
 *   through these checks (IORING_OP_SOCKET would give vsock back), and it has been a steady source of kernel
 *   privilege escalations. Refused with ENOSYS, as on a kernel without it: libuv, glibc and tokio fall back.
 * - the same for 32-bit programs (i386 on x86_64, arm32 on arm64, and a 64-bit process's `int 0x80`), with their
 *   own numbers; i386's `socketcall` multiplexer, whose arguments a filter cannot see, fails with ENOSYS (glibc
 *   calls `socket` directly since Linux 4.3). x32 calls fail with ENOSYS (x32 is off in most kernels anyway); a
 *   call of any other ABI kills the process (SIGSYS).
 * Everything else is allowed: the rest is held by the workspace's user namespace (no capability of the host's),
 * cgroups and mount layout.
 *
 * The program is classic BPF, built here; a three-line Perl loader installs it with prctl(PR_SET_SECCOMP) (Perl is
 * Essential on Debian, its `syscall` is core, and it starts in 2 ms) and execs the rest of the chain, so the
 * filter holds for the workspace and everything it starts, across exec and fork, and cannot be removed.
 */
export type SyscallFilter = 'default' | 'off';

/** One ABI's numbers: what the checks need to know. */
interface Abi {
  /** AUDIT_ARCH_* of the ABI (seccomp_data.arch). */
  readonly auditArch: number;
  readonly socket: number;
  /** i386's multiplexer (its arguments sit in memory, out of a filter's sight): refused where it exists. */
  readonly socketcall?: number;
  /** x86_64 only: x32 calls are the native numbers with this bit set. */
  readonly x32Bit?: number;
}

interface ArchTable {
  readonly prctl: number;
  readonly native: Abi;
  /** The 32-bit ABI a 64-bit kernel also runs (i386 on x86_64, arm32 on arm64). */
  readonly compat: Abi;
}

// io_uring_setup, io_uring_enter and io_uring_register: the same numbers on every architecture and ABI (the unified
// table since 5.1), consecutive.
const ioUringSetup = 425;
const ioUringRegister = 427;

const archTables: Readonly<Partial<Record<NodeJS.Architecture, ArchTable>>> = {
  x64: {
    prctl: 157,
    native: { auditArch: 0xc000003e, socket: 41, x32Bit: 0x40000000 },
    compat: { auditArch: 0x40000003, socket: 359, socketcall: 102 },
  },
  arm64: {
    prctl: 167,
    native: { auditArch: 0xc00000b7, socket: 198 },
    compat: { auditArch: 0x40000028, socket: 281 },
  },
};

const AF_VSOCK = 40;
const EAFNOSUPPORT = 97;
const ENOSYS = 38;

// Classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const RET_K = 0x06;
const RET_ALLOW = 0x7fff0000;
const RET_ERRNO = 0x00050000;
const RET_KILL_PROCESS = 0x80000000;
// Offsets in struct seccomp_data: nr, arch, then args[] (args[0]'s low 32 bits first on little-endian).
const NR = 0;
const ARCH = 4;
const ARG0_LOW = 16;

interface Instruction {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  readonly k: number;
}

const load = (offset: number): Instruction => ({ code: LD_W_ABS, jt: 0, jf: 0, k: offset });
const ret = (value: number): Instruction => ({ code: RET_K, jt: 0, jf: 0, k: value });
/** Each jumps `skip` instructions ahead when the accumulator compares so with `k`, else falls through. */
const ifEqualSkip = (k: number, skip: number): Instruction => ({ code: JEQ_K, jt: skip, jf: 0, k });
const ifNotEqualSkip = (k: number, skip: number): Instruction => ({ code: JEQ_K, jt: 0, jf: skip, k });
const ifBelowSkip = (k: number, skip: number): Instruction => ({ code: JGE_K, jt: 0, jf: skip, k });
const ifAtLeastSkip = (k: number, skip: number): Instruction => ({ code: JGE_K, jt: skip, jf: 0, k });

/** Whether this node's architecture has a filter (x86_64, arm64). */
export function syscallFilterSupported(arch: NodeJS.Architecture = process.arch): boolean {
  return archTables[arch] !== undefined;
}

/** One ABI's checks, from its first instruction to its returns (every path returns). */
function abiChecks(abi: Abi): Instruction[] {
  return [
    load(NR),
    ...(abi.x32Bit === undefined ? [] : [ifBelowSkip(abi.x32Bit, 1), ret(RET_ERRNO | ENOSYS)]),
    ...(abi.socketcall === undefined ? [] : [ifNotEqualSkip(abi.socketcall, 1), ret(RET_ERRNO | ENOSYS)]),
    ifNotEqualSkip(abi.socket, 4),
    load(ARG0_LOW),
    ifEqualSkip(AF_VSOCK, 1),
    ret(RET_ALLOW),
    ret(RET_ERRNO | EAFNOSUPPORT),
    // io_uring_setup .. io_uring_register are consecutive: at least the first and below the one after the last.
    ifBelowSkip(ioUringSetup, 2),
    ifAtLeastSkip(ioUringRegister + 1, 1),
    ret(RET_ERRNO | ENOSYS),
    ret(RET_ALLOW),
  ];
}

/** The filter program for `arch`, as the kernel reads it (struct sock_filter[], little-endian). */
export function syscallFilterProgram(arch: NodeJS.Architecture = process.arch): Buffer {
  const t = archTables[arch];
  if (!t) throw new Error(`no syscall filter for architecture '${arch}' (syscallFilter: off runs without one)`);
  const native = abiChecks(t.native);
  const compat = abiChecks(t.compat);
  const program: Instruction[] = [
    load(ARCH),
    ifNotEqualSkip(t.native.auditArch, native.length),
    ...native,
    ifNotEqualSkip(t.compat.auditArch, compat.length),
    ...compat,
    // Any other ABI (none is known to run here): nothing to check it against.
    ret(RET_KILL_PROCESS),
  ];
  const bytes = Buffer.alloc(program.length * 8);
  program.forEach((ins, i) => {
    bytes.writeUInt16LE(ins.code, i * 8);
    bytes.writeUInt8(ins.jt, i * 8 + 2);
    bytes.writeUInt8(ins.jf, i * 8 + 3);
    bytes.writeUInt32LE(ins.k >>> 0, i * 8 + 4);
  });
  return bytes;
}

/**
 * The loader's first argument: `<prctl number>:<program in hex>` (about 200 characters). Nothing is written to
 * disk, so no file a workspace could race or a later start could find stale.
 */
export function syscallFilterArgument(arch: NodeJS.Architecture = process.arch): string {
  const t = archTables[arch];
  if (!t) throw new Error(`no syscall filter for architecture '${arch}'`);
  return `${t.prctl}:${syscallFilterProgram(arch).toString('hex')}`;
}

/**
 * `perl -e <this> <argument> command…`: installs the filter (prctl(PR_SET_SECCOMP = 22, SECCOMP_MODE_FILTER = 2,
 * &sock_fprog{len, filter}) as root in the host's user namespace, which needs no no_new_privs) and execs the
 * command. The struct is a 16-bit count, padding to the pointer, and the pointer: 64-bit nodes only, as the table.
 * It has no single quote, so the init script can quote it whole.
 */
export const syscallFilterLoader = [
  'my ($nr, $hex) = split /:/, shift, 2;',
  'my $prog = pack(q{H*}, $hex);',
  'syscall($nr + 0, 22, 2, pack(q{S x6 P}, length($prog) / 8, $prog)) == 0',
  '  or die "workbay: cannot install the syscall filter: $!\\n";',
  'exec { $ARGV[0] } @ARGV or die "workbay: cannot run $ARGV[0]: $!\\n";',
].join('\n');
