import { describe, expect, it } from 'vitest';
import {
  syscallFilterArgument,
  syscallFilterLoader,
  syscallFilterProgram,
  syscallFilterSupported,
} from './syscall-filter.js';

/** Reads the program back as (code, jt, jf, k) rows. */
function rows(program: Buffer): [number, number, number, number][] {
  const out: [number, number, number, number][] = [];
  for (let i = 0; i < program.length; i += 8) {
    out.push([program.readUInt16LE(i), program[i + 2]!, program[i + 3]!, program.readUInt32LE(i + 4)]);
  }
  return out;
}

/** What the kernel would return for a call: runs the program's four opcodes over a seccomp_data. */
function decide(program: Buffer, call: { arch: number; nr: number; arg0?: number }): number {
  const data = new Map([
    [0, call.nr >>> 0],
    [4, call.arch >>> 0],
    [16, (call.arg0 ?? 0) >>> 0],
  ]);
  const ins = rows(program);
  let acc = 0;
  for (let pc = 0; pc < ins.length; pc++) {
    const [code, jt, jf, k] = ins[pc]!;
    if (code === 0x20) acc = data.get(k) ?? 0;
    else if (code === 0x06) return k;
    else if (code === 0x15) pc += acc === k ? jt : jf;
    else if (code === 0x35) pc += acc >= k ? jt : jf;
    else throw new Error(`unexpected opcode ${code}`);
  }
  throw new Error('fell off the end');
}

const allow = 0x7fff0000;
const kill = 0x80000000;
const errno = (n: number): number => 0x00050000 | n;
const arch = { x64: 0xc000003e, i386: 0x40000003, arm64: 0xc00000b7, arm32: 0x40000028 };

describe('syscall filter program', () => {
  it('decides as documented on x86_64', () => {
    const program = syscallFilterProgram('x64');
    const at = (nr: number, arg0?: number): number => decide(program, { arch: arch.x64, nr, arg0 });
    expect(at(41, 40)).toBe(errno(97)); // socket(AF_VSOCK)
    expect(at(41, 2)).toBe(allow); // socket(AF_INET)
    expect(at(41, 1)).toBe(allow); // socket(AF_UNIX)
    for (const nr of [425, 426, 427]) expect(at(nr)).toBe(errno(38)); // io_uring_*
    for (const nr of [0, 1, 40, 42, 102, 359, 424, 428, 435]) expect(at(nr, 40)).toBe(allow);
    expect(at(0x40000000 | 41, 40)).toBe(errno(38)); // x32
  });

  it('holds 32-bit calls (i386) to the same rules with their own numbers', () => {
    const program = syscallFilterProgram('x64');
    const at = (nr: number, arg0?: number): number => decide(program, { arch: arch.i386, nr, arg0 });
    expect(at(359, 40)).toBe(errno(97)); // socket(AF_VSOCK)
    expect(at(359, 2)).toBe(allow);
    expect(at(102, 1)).toBe(errno(38)); // socketcall: its arguments are out of a filter's sight
    for (const nr of [425, 426, 427]) expect(at(nr)).toBe(errno(38));
    for (const nr of [1, 3, 4, 5, 41, 120]) expect(at(nr, 40)).toBe(allow);
  });

  it('decides the same on arm64 and arm32, with their numbers', () => {
    const program = syscallFilterProgram('arm64');
    const at = (nr: number, arg0?: number): number => decide(program, { arch: arch.arm64, nr, arg0 });
    expect(at(198, 40)).toBe(errno(97));
    expect(at(198, 2)).toBe(allow);
    expect(at(426)).toBe(errno(38));
    expect(at(41, 40)).toBe(allow); // 41 is not socket on arm64
    const arm32 = (nr: number, arg0?: number): number => decide(program, { arch: arch.arm32, nr, arg0 });
    expect(arm32(281, 40)).toBe(errno(97));
    expect(arm32(281, 2)).toBe(allow);
    expect(arm32(427)).toBe(errno(38));
  });

  it('kills a call of any ABI it has no numbers for', () => {
    expect(decide(syscallFilterProgram('x64'), { arch: arch.arm64, nr: 198, arg0: 40 })).toBe(kill);
    expect(decide(syscallFilterProgram('arm64'), { arch: arch.x64, nr: 41, arg0: 40 })).toBe(kill);
    expect(rows(syscallFilterProgram('x64'))[0]).toEqual([0x20, 0, 0, 4]); // the architecture, first
  });

  it('jumps only forward, within the program', () => {
    for (const a of ['x64', 'arm64'] as const) {
      const program = rows(syscallFilterProgram(a));
      program.forEach(([code, jt, jf], i) => {
        if ((code & 0x07) === 0x05) expect(i + 1 + Math.max(jt, jf)).toBeLessThan(program.length);
      });
    }
  });

  it('is only offered where its table exists', () => {
    expect(syscallFilterSupported('x64')).toBe(true);
    expect(syscallFilterSupported('ia32')).toBe(false);
    expect(() => syscallFilterProgram('ia32')).toThrow(/syscallFilter: off/);
  });

  it("gives the loader prctl's number and the program, and a loader the init script can quote whole", () => {
    expect(syscallFilterArgument('x64')).toBe(`157:${syscallFilterProgram('x64').toString('hex')}`);
    expect(syscallFilterArgument('arm64').startsWith('167:')).toBe(true);
    expect(syscallFilterLoader).not.toContain("'");
  });
});
