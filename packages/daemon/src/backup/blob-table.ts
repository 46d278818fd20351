/**
 * A backup's blobs by index and by hash, in typed arrays: the binary hash (32 bytes), pack, offset and length of
 * each, and an open-addressing index over the hashes. A blob as a BlobRef object with a 64-character hex string,
 * in an array and in a Map by hash, cost ~240 bytes, and a hostile workspace has a blob per tiny file; this is
 * ~70. BlobRef objects are made only when asked for one.
 */
import type { BlobRef, PackRef } from './pack-writer.js';

const hashBytes = 32;

export class BlobTable {
  private hashes = Buffer.alloc(hashBytes * 1024);
  private packs = new Uint32Array(1024);
  private offsets = new Float64Array(1024);
  private lengths = new Float64Array(1024);
  /** Blob index + 1 per slot (0: empty); twice the blobs at least, so probes stay short. */
  private slots = new Int32Array(2048);
  private readonly packRefs: PackRef[] = [];
  private readonly packNumbers = new Map<PackRef, number>();
  private readonly key = Buffer.alloc(hashBytes);
  private count = 0;

  get length(): number {
    return this.count;
  }

  /** The index of the blob with this hex hash; -1 when there is none. */
  find(hash: string): number {
    this.key.write(hash, 'hex');
    return this.findKey(this.key, 0);
  }

  /** The index of the blob whose binary hash is at `offset` of `source`; -1 when there is none. */
  findKey(source: Buffer, offset: number): number {
    const mask = this.slots.length - 1;
    for (let slot = source.readUInt32LE(offset) & mask; ; slot = (slot + 1) & mask) {
      const entry = this.slots[slot] as number;
      if (entry === 0) return -1;
      const at = (entry - 1) * hashBytes;
      if (this.hashes.compare(source, offset, offset + hashBytes, at, at + hashBytes) === 0) return entry - 1;
    }
  }

  /** Appends a blob whose hash is not in the table yet; returns its index. */
  push(ref: BlobRef): number {
    const index = this.count;
    if (index === this.lengths.length) this.grow();
    this.hashes.write(ref.hash, index * hashBytes, 'hex');
    this.store(index, ref);
    this.count++;
    if (2 * this.count > this.slots.length) this.rehash();
    else this.place(index);
    return index;
  }

  /** Replaces where the blob at `index` is stored (a repack moved it; the hash stays). */
  set(index: number, ref: BlobRef): void {
    this.store(index, ref);
  }

  at(index: number): BlobRef {
    return {
      hash: this.hashOf(index),
      pack: this.packOf(index),
      offset: this.offsets[index] as number,
      length: this.lengths[index] as number,
    };
  }

  hashOf(index: number): string {
    return this.hashes.toString('hex', index * hashBytes, (index + 1) * hashBytes);
  }

  packOf(index: number): PackRef {
    return this.packRefs[this.packs[index] as number] as PackRef;
  }

  lengthOf(index: number): number {
    return this.lengths[index] as number;
  }

  *[Symbol.iterator](): Generator<BlobRef> {
    for (let index = 0; index < this.count; index++) yield this.at(index);
  }

  private store(index: number, ref: BlobRef): void {
    let pack = this.packNumbers.get(ref.pack);
    if (pack === undefined) {
      pack = this.packRefs.length;
      this.packRefs.push(ref.pack);
      this.packNumbers.set(ref.pack, pack);
    }
    this.packs[index] = pack;
    this.offsets[index] = ref.offset;
    this.lengths[index] = ref.length;
  }

  private place(index: number): void {
    const mask = this.slots.length - 1;
    let slot = this.hashes.readUInt32LE(index * hashBytes) & mask;
    while (this.slots[slot] !== 0) slot = (slot + 1) & mask;
    this.slots[slot] = index + 1;
  }

  private rehash(): void {
    this.slots = new Int32Array(2 * this.slots.length);
    for (let index = 0; index < this.count; index++) this.place(index);
  }

  private grow(): void {
    const size = 2 * this.lengths.length;
    const hashes = Buffer.alloc(hashBytes * size);
    this.hashes.copy(hashes);
    this.hashes = hashes;
    const packs = new Uint32Array(size);
    packs.set(this.packs);
    this.packs = packs;
    const offsets = new Float64Array(size);
    offsets.set(this.offsets);
    this.offsets = offsets;
    const lengths = new Float64Array(size);
    lengths.set(this.lengths);
    this.lengths = lengths;
  }
}
