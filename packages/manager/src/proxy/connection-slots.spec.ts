import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { ConnectionSlots } from './connection-slots.js';

/** Just what the slots look at: the close event and `destroyed`. */
function fakeSocket(): Socket & { close(): void } {
  const socket = Object.assign(new EventEmitter(), { destroyed: false }) as unknown as Socket & { close(): void };
  socket.close = () => {
    (socket as { destroyed: boolean }).destroyed = true;
    socket.emit('close');
  };
  return socket;
}

describe('ConnectionSlots', () => {
  it('admits up to the cap, then evicts the longest-waiting connection', () => {
    const slots = new ConnectionSlots(3);
    const [a, b, c, d] = [fakeSocket(), fakeSocket(), fakeSocket(), fakeSocket()];
    for (const s of [a, b, c]) expect(slots.admit(s)).toEqual({ admitted: true });
    slots.busy(a);
    expect(slots.admit(d)).toEqual({ admitted: true, evicted: b });
    expect(slots.size).toBe(3);
    expect(slots.waitingCount).toBe(2);
  });

  it('puts a connection that waits again at the end of the line', () => {
    const slots = new ConnectionSlots(2);
    const [a, b, c] = [fakeSocket(), fakeSocket(), fakeSocket()];
    slots.admit(a);
    slots.admit(b);
    slots.busy(a);
    slots.waitingAgain(a);
    expect(slots.admit(c).evicted).toBe(b);
  });

  it('gives a connection being closed up first, busy or not', () => {
    const slots = new ConnectionSlots(3);
    const [a, b, c, d] = [fakeSocket(), fakeSocket(), fakeSocket(), fakeSocket()];
    for (const s of [a, b, c]) slots.admit(s);
    slots.busy(c);
    // c's answer is done and the proxy closes it (the client's grace to take the rest): it goes before a and b.
    slots.closing(c);
    expect(slots.admit(d).evicted).toBe(c);
    expect(slots.waitingCount).toBe(3);
  });

  it('refuses a new connection when every slot is busy, and frees a slot on close', () => {
    const slots = new ConnectionSlots(2);
    const [a, b, c] = [fakeSocket(), fakeSocket(), fakeSocket()];
    slots.admit(a);
    slots.admit(b);
    slots.busy(a);
    slots.busy(b);
    expect(slots.admit(c)).toEqual({ admitted: false });
    a.close();
    expect(slots.admit(c)).toEqual({ admitted: true });
    // A closed connection never waits again.
    slots.waitingAgain(a);
    expect(slots.waitingCount).toBe(1);
  });

  it('never evicts without a cap', () => {
    const slots = new ConnectionSlots(0);
    for (let i = 0; i < 100; i++) expect(slots.admit(fakeSocket()).admitted).toBe(true);
  });
});
