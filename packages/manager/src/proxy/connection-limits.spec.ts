import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  AddressCounter,
  addressKey,
  defaultProxyLimits,
  resolveProxyLimits,
  timeoutCheckInterval,
} from './connection-limits.js';

describe('addressKey', () => {
  it('counts IPv4 as is, also when mapped into IPv6', () => {
    expect(addressKey('203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
  });

  it('counts IPv6 by its /64, however it is spelled', () => {
    expect(addressKey('2001:db8:0:1::1')).toBe('2001:db8:0:1::/64');
    expect(addressKey('2001:0db8:0000:0001:ffff:0:0:2')).toBe('2001:db8:0:1::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('2001:db8:0:2::1')).not.toBe(addressKey('2001:db8:0:1::1'));
  });
});

describe('resolveProxyLimits', () => {
  it('fills in defaults', () => {
    expect(resolveProxyLimits()).toEqual(defaultProxyLimits);
    expect(resolveProxyLimits({ maxConnections: 10 }).maxConnections).toBe(10);
    expect(resolveProxyLimits().maxConnectionsPerWorkspace).toBe(512);
    expect(resolveProxyLimits({ maxConnectionsPerWorkspace: 0 }).maxConnectionsPerWorkspace).toBe(0);
    // Anonymous connections together: three quarters of the server's cap, the one given when it is given.
    expect(resolveProxyLimits().maxAnonymousConnections).toBe(3072);
    expect(resolveProxyLimits({ maxConnections: 100 }).maxAnonymousConnections).toBe(75);
    expect(resolveProxyLimits({ maxConnections: 0 }).maxAnonymousConnections).toBe(0);
    expect(resolveProxyLimits({ maxConnections: 100, maxAnonymousConnections: 90 }).maxAnonymousConnections).toBe(90);
  });

  it('refuses values that would disable a timeout or that Node refuses', () => {
    expect(() => resolveProxyLimits({ headersTimeoutMs: 0 })).toThrow(/headersTimeoutMs/);
    expect(() => resolveProxyLimits({ idleTimeoutMs: -1 })).toThrow(/idleTimeoutMs/);
    expect(() => resolveProxyLimits({ refusalGraceMs: 1.5 })).toThrow(/refusalGraceMs/);
    expect(() => resolveProxyLimits({ headersTimeoutMs: 2_000, requestTimeoutMs: 1_000 })).toThrow(/requestTimeoutMs/);
    expect(() => resolveProxyLimits({ maxConnectionsPerWorkspace: -1 })).toThrow(/maxConnectionsPerWorkspace/);
  });

  it('checks timeouts often enough for short ones and rarely for long ones', () => {
    expect(timeoutCheckInterval(resolveProxyLimits({ headersTimeoutMs: 500, requestTimeoutMs: 500 }))).toBe(250);
    expect(timeoutCheckInterval(resolveProxyLimits({ headersTimeoutMs: 120_000 }))).toBe(30_000);
  });
});

describe('AddressCounter', () => {
  /** Just what the counter looks at: the address, the close event, and a reset. */
  function fakeSocket(address: string): Socket & { reset: boolean } {
    const socket = Object.assign(new EventEmitter(), { remoteAddress: address, destroyed: false, reset: false });
    return Object.assign(socket, {
      resetAndDestroy: () => {
        socket.reset = true;
        socket.destroyed = true;
        socket.emit('close');
      },
    }) as unknown as Socket & { reset: boolean };
  }

  it('at the cap, lets an address’s connection being closed give way to its next one (red team round 17b, M3)', () => {
    const counter = new AddressCounter(2);
    const [a, b, c, d] = ['10.0.0.1', '10.0.0.1', '10.0.0.1', '10.0.0.1'].map(fakeSocket);
    expect(counter.admit(a!)).toBe(true);
    expect(counter.admit(b!)).toBe(true);
    // At the cap, nothing being closed: refused.
    expect(counter.admit(c!)).toBe(false);
    // a's answer is done and lingers: it gives way, reset.
    counter.closing(a!);
    expect(counter.admit(d!)).toBe(true);
    expect(a!.reset).toBe(true);
    expect(counter.count('10.0.0.1')).toBe(2);
    // Another address is not touched.
    expect(counter.admit(fakeSocket('10.0.0.2'))).toBe(true);
  });
});
