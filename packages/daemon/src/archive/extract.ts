/**
 * Extraction of tar archives (plain, gzip or zstd) into a workspace tree: each entry is written as it arrives
 * through {@link SafeTreeWriter}, which refuses paths that leave the target; small files are created in batches on
 * other threads (file-batches.ts), sparse files restored sparse (tar-sparse.ts). Packing: tar.ts.
 */
import * as tarStream from 'tar-stream';
import type { Readable } from 'node:stream';
import { placeOnWorker } from '../backup/worker-writes.js';
import { InvalidArgumentError } from '../errors.js';
import { decompressAuto } from './compression.js';
import type { DroppedEntries } from './entry-policy.js';
import { FileBatches } from './file-batches.js';
import type { PlaceFiles } from './file-batches.js';
import { normalizeEntryPath, SafeTreeWriter } from './safe-writer.js';
import type { SafeWriterOptions } from './safe-writer.js';
import { headerToEntry } from './tar.js';
import type { Headers } from './tar.js';
import { extractSparse, sparseHeader } from './tar-sparse.js';

/**
 * Files up to this size are read whole from the stream and written on the thread pool while the stream goes on
 * (at most `writeConcurrency` at once, 8 by default, so a restore holds at most about 36 MiB of them); larger
 * ones are streamed to disk on this thread, which stalls the stream. Creating and writing files is kernel work
 * that runs in parallel on other cores: with 256 KiB here, the 1-3 MiB files of the bench's tree (40% of its
 * bytes) were written one at a time.
 */
const queuedFileLimit = 4 * 1024 * 1024;

export interface ExtractOptions extends SafeWriterOptions {
  readonly signal?: AbortSignal;
  /**
   * Small files are created in batches by the backup workers (default true: see `file-batches.ts`); false: through
   * the thread pool, one file at a time from the event loop.
   */
  readonly batchedWrites?: boolean;
}

export interface ExtractStats {
  readonly entries: number;
  readonly files: number;
  readonly contentBytes: number;
  /** What the entry policy left out (device nodes, FIFOs, set-id bits, file capabilities). */
  readonly dropped: DroppedEntries;
}

/**
 * Extracts a tar stream (plain, gzip or zstd: detected) below `root`. Unsafe entries abort the extraction
 * with an ArchiveEscapeError before anything is written for them.
 */
export function extractTree(input: Readable, root: string, options: ExtractOptions = {}): Promise<ExtractStats> {
  return extractTreeWith(input, root, options, options.batchedWrites === false ? undefined : placeOnWorker);
}

/** {@link extractTree} whose batches of small files `place` creates (none: no batches). For tests. */
export async function extractTreeWith(
  input: Readable,
  root: string,
  options: ExtractOptions,
  place: PlaceFiles | undefined,
): Promise<ExtractStats> {
  const writer = new SafeTreeWriter(root, options);
  const batches = place ? new FileBatches(writer, place) : undefined;
  const source = await decompressAuto(input);
  const extract = tarStream.extract();
  source.on('error', (error: Error) => extract.destroy(error));
  input.on('error', (error: Error) => extract.destroy(error));
  source.pipe(extract as unknown as NodeJS.WritableStream);
  let entries = 0;
  let files = 0;
  let contentBytes = 0;
  try {
    for await (const item of extract) {
      options.signal?.throwIfAborted();
      const entry = headerToEntry(item.header as Headers);
      if (!entry) {
        options.onWarning?.(`skipped '${item.header.name}': unsupported tar entry type '${item.header.type}'`);
        item.resume();
        continue;
      }
      entries++;
      // Whatever this entry touches that a batch has yet to create is created first (archive order).
      const path = normalizeEntryPath(entry.path);
      await batches?.settle(path);
      if (entry.type === 'hardlink' && entry.linkTarget !== undefined) {
        await batches?.settle(normalizeEntryPath(entry.linkTarget));
      }
      if (entry.type !== 'file') {
        item.resume();
        await writer.write(entry);
        continue;
      }
      const sparse = sparseHeader((item.header.pax ?? {}) as Record<string, string>, entry.path);
      if (sparse) {
        contentBytes += await extractSparse(writer, entry, item as AsyncIterable<Buffer>, item.header.size ?? 0);
        files++;
        continue;
      }
      if (entry.size <= queuedFileLimit) {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of item as AsyncIterable<Buffer>) {
          chunks.push(chunk);
          size += chunk.length;
        }
        if (batches?.fits(size)) await batches.add(entry, path, chunks, size);
        else await writer.queueSmallFile(entry, chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
        contentBytes += size;
        files++;
        continue;
      }
      const { handle } = await writer.createFile(entry);
      try {
        for await (const chunk of item as AsyncIterable<Buffer>) {
          await handle.write(chunk);
          contentBytes += chunk.length;
        }
        await writer.finishFile(handle, entry, path);
      } finally {
        await handle.close();
      }
      files++;
    }
  } catch (error) {
    extract.destroy();
    source.destroy();
    input.destroy();
    // No queued write may still run once the caller sees the failure (it may clean up the target).
    await batches?.drain();
    await writer.drain().catch(() => undefined);
    if (error instanceof Error && /Invalid tar header|Unexpected end of data/i.test(error.message)) {
      throw new InvalidArgumentError('archive', `not a valid tar archive: ${error.message}`, { cause: error });
    }
    throw error;
  }
  try {
    await batches?.finish();
  } catch (error) {
    await writer.drain().catch(() => undefined);
    throw error;
  }
  await writer.finish(options.signal);
  return { entries, files, contentBytes, dropped: writer.dropped };
}
