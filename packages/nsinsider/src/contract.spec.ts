import { describe, expect, it } from 'vitest';
import { opNames, parseIpv4Cidr, parseOpArgs } from './contract.js';
import { NsinsiderValidationError } from './errors.js';

describe('operation contract', () => {
  it('fills defaults', () => {
    expect(parseOpArgs('mount-proc', { target: '/proc' })).toEqual({ target: '/proc', mask: true, createTarget: true });
    expect(parseOpArgs('prepare-dev', { uid: 1, gid: 2 })).toEqual({ devDir: '/dev', uid: 1, gid: 2 });
    expect(parseOpArgs('setup-pair-veths', { targetPid: 5, cidr: '10.0.5.0/30' })).toEqual({
      targetPid: 5,
      cidr: '10.0.5.0/30',
      hostIfName: 'veth0',
      peerIfName: 'eth0',
      masquerade: false,
    });
    expect(parseOpArgs('mknod', { path: '/dev/x', type: 'char', major: 1, minor: 3 }).mode).toBe(0o666);
  });

  it('names the bad field', () => {
    const fields: Array<[Parameters<typeof parseOpArgs>[0], unknown, string]> = [
      ['mount-sysfs', { target: '' }, 'target'],
      ['unmount', {}, 'target'],
      ['mknod', { path: '/x', type: 'char', major: 5000, minor: 1 }, 'major'],
      ['setup-peer-veth', { cidr: '300.1.1.1/30' }, 'cidr'],
      ['setup-connection-limit', { limitPerMinute: 10, bucketSize: -1 }, 'bucketSize'],
      ['enable-ip-forward', { enabled: 'yes' }, 'enabled'],
    ];
    for (const [op, input, field] of fields) {
      try {
        parseOpArgs(op, input);
        throw new Error(`${op} accepted ${JSON.stringify(input)}`);
      } catch (e) {
        expect(e).toBeInstanceOf(NsinsiderValidationError);
        expect((e as NsinsiderValidationError).field).toBe(field);
        expect((e as Error).message).toContain(op);
      }
    }
  });

  it('computes veth addresses from a CIDR', () => {
    expect(parseIpv4Cidr('10.0.5.0/30')).toEqual({
      network: '10.0.5.0',
      prefixLength: 30,
      first: '10.0.5.1',
      second: '10.0.5.2',
    });
    expect(parseIpv4Cidr('198.18.7.9/24')).toEqual({
      network: '198.18.7.0',
      prefixLength: 24,
      first: '198.18.7.1',
      second: '198.18.7.2',
    });
    expect(() => parseIpv4Cidr('10.0.0.0/31')).toThrow();
    expect(() => parseIpv4Cidr('10.0.0/24')).toThrow();
  });

  it('lists every operation', () => {
    expect(opNames).toContain('setup-connection-limit');
    expect(opNames).toHaveLength(14);
  });
});
