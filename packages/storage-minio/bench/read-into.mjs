// The bench's readInto contenders: an object read range by range into buffers that are reused, as a chunked restore
// reads its packs into the shared memory of its workers (RemoteStorage.readInto), with and without a SHA-256 of the
// whole object on a worker thread overlapping the next range's read (how the restore checks its blobs).
import { Worker } from 'node:worker_threads';

/** Parts of this size (a restore's packs are 8 to 12 MiB): two buffers, one filling while the other is hashed. */
export const rangeBytes = 16 * 1024 * 1024;

const hasherSource = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
let hash = createHash('sha256');
parentPort.on('message', (m) => {
  if (m.kind === 'part') {
    hash.update(new Uint8Array(m.buffer, 0, m.length));
    parentPort.postMessage({ kind: 'hashed', slot: m.slot });
  } else {
    parentPort.postMessage({ kind: 'digest', digest: 'sha256:' + hash.digest('hex') });
    hash = createHash('sha256');
  }
});`;

/** A worker that hashes the parts it is given, in order, and tells the digest at the end. */
export function startHasher() {
  const worker = new Worker(hasherSource, { eval: true });
  const waiting = new Map();
  worker.on('message', (m) => {
    const key = m.kind === 'digest' ? 'digest' : `slot-${m.slot}`;
    waiting.get(key)?.(m.digest);
    waiting.delete(key);
  });
  const answer = (key) => new Promise((resolve) => waiting.set(key, resolve));
  return {
    part(slot, buffer, length) {
      const done = answer(`slot-${slot}`);
      worker.postMessage({ kind: 'part', slot, buffer, length });
      return done;
    },
    digest() {
      const done = answer('digest');
      worker.postMessage({ kind: 'end' });
      return done;
    },
    close: () => worker.terminate(),
  };
}

/**
 * Reads `size` bytes of `name` range by range into two reused buffers; with a hasher, each filled range is hashed
 * on it while the next one is read, and the digest of the whole is returned.
 */
export async function readIntoRanges(storage, bucket, name, size, hasher) {
  const slots = [new SharedArrayBuffer(rangeBytes), new SharedArrayBuffer(rangeBytes)];
  const free = [Promise.resolve(), Promise.resolve()];
  let offset = 0;
  for (let i = 0; offset < size; i++) {
    const slot = i % 2;
    await free[slot];
    const length = await storage.readInto(bucket, name, new Uint8Array(slots[slot]), { offset });
    if (length === 0) throw new Error(`readInto read nothing at ${offset} of ${size}`);
    if (hasher) free[slot] = hasher.part(slot, slots[slot], length);
    offset += length;
  }
  await Promise.all(free);
  return hasher ? hasher.digest() : undefined;
}
