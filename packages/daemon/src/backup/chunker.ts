/**
 * Content-defined chunking with a gear rolling hash (the FastCDC family). Cut points depend only on the
 * bytes just before them, so an insertion early in a large file moves one or two chunk boundaries and every
 * later chunk keeps its hash: a re-backup uploads only the chunks around the change.
 */

export interface ChunkerOptions {
  /** No cut before this many bytes (also the size below which a file is one chunk). */
  readonly minSize: number;
  /** Target average; must be a power of two. */
  readonly avgSize: number;
  /** Forced cut at this many bytes. */
  readonly maxSize: number;
}

export const defaultChunkerOptions: ChunkerOptions = Object.freeze({
  minSize: 256 * 1024,
  avgSize: 1024 * 1024,
  maxSize: 4 * 1024 * 1024,
});

/**
 * A fixed table of 256 pseudo-random 32-bit values (xorshift32 from a constant seed): the same everywhere, so
 * two daemons cut the same content at the same places. Self-contained: the backup workers run its source text.
 */
export function gearTable(): Int32Array {
  const table = new Int32Array(256);
  let state = 0x9e3779b9;
  for (let i = 0; i < 256; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    table[i] = state | 0;
  }
  return table;
}

const gear = gearTable();

/**
 * Finds the end of the first chunk in `data` (which starts at a chunk boundary); `final` means no more data
 * follows. Refers to nothing but `gear`: the backup workers run its source text next to {@link gearTable}'s.
 */
export function findCut(data: Uint8Array, options: ChunkerOptions, final: boolean): number | undefined {
  const { minSize, avgSize, maxSize } = options;
  if (data.length <= minSize) return final ? data.length : undefined;
  const bits = Math.log2(avgSize) | 0;
  // Normalized chunking: a stricter mask before the average size, a looser one after, so sizes cluster.
  const strict = ((1 << (bits + 1)) - 1) | 0;
  const loose = ((1 << (bits - 1)) - 1) | 0;
  const end = Math.min(data.length, maxSize);
  const middle = Math.min(end, avgSize);
  let hash = 0;
  // The hash only depends on the last 32 bytes, so start just before the minimum.
  let i = Math.max(0, minSize - 32);
  for (; i < minSize; i++) hash = ((hash << 1) + (gear[data[i] as number] as number)) | 0;
  for (; i < middle; i++) {
    hash = ((hash << 1) + (gear[data[i] as number] as number)) | 0;
    if ((hash & strict) === 0) return i + 1;
  }
  for (; i < end; i++) {
    hash = ((hash << 1) + (gear[data[i] as number] as number)) | 0;
    if ((hash & loose) === 0) return i + 1;
  }
  if (end === maxSize) return maxSize;
  return final ? data.length : undefined;
}

/** Feeds a byte stream in arbitrary pieces and yields complete chunks. */
export class StreamChunker {
  private buffer: Buffer = Buffer.alloc(0);

  constructor(private readonly options: ChunkerOptions = defaultChunkerOptions) {
    if (!Number.isInteger(Math.log2(options.avgSize))) throw new RangeError('avgSize must be a power of two');
    if (!(options.minSize < options.avgSize && options.avgSize < options.maxSize)) {
      throw new RangeError('chunk sizes must satisfy min < avg < max');
    }
  }

  *push(data: Buffer): Generator<Buffer> {
    this.buffer = this.buffer.length === 0 ? data : Buffer.concat([this.buffer, data]);
    for (;;) {
      const cut = findCut(this.buffer, this.options, false);
      if (cut === undefined) return;
      yield this.buffer.subarray(0, cut);
      this.buffer = this.buffer.subarray(cut);
    }
  }

  *flush(): Generator<Buffer> {
    while (this.buffer.length > 0) {
      const cut = findCut(this.buffer, this.options, true) as number;
      yield this.buffer.subarray(0, cut);
      this.buffer = this.buffer.subarray(cut);
    }
  }
}
