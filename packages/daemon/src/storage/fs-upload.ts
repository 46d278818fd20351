/**
 * One upload into the filesystem storage backend: the bytes go to a new data file (hashed as they are written),
 * then a new sidecar is renamed over the object's current one, which commits the upload (see `fs-layout.ts`).
 */
import type { Hash } from 'node:crypto';
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ObjectInfo, UploadOptions } from '@workbay/api';
import { copyBytes, lowerCaseMetadata } from '@workbay/api';
import { InvalidArgumentError } from '../errors.js';
import type { KeyedMutex } from '../util/concurrency.js';
import { digestFile, SharedMemoryDigest } from '../backup/worker-pool.js';
import type { DirectorySyncs } from './directory-sync.js';
import type { DirectFileWriter, DirectWrites } from './direct-writes.js';
import { directWriteMinBytes } from './direct-writes.js';
import { dataMarker, metaSuffix, newUploadId, tempMarker } from './fs-layout.js';
import type { Sidecar } from './fs-objects.js';
import { createInDirectory, readSidecar, toInfo } from './fs-objects.js';
import type { LeftoverSweeper } from './fs-sweep.js';

/** Objects up to this size are hashed on the event loop as they stream by (a worker round trip costs more). */
const inlineDigestLimit = 1024 * 1024;

/**
 * What uploads share with the rest of the storage: the per-object commit lock (deletes take it too), the grouped
 * directory fsyncs, the sweeper of crashed uploads' leftovers and the direct writes of large objects.
 */
export interface UploadContext {
  readonly commitLock: KeyedMutex;
  readonly directorySync: DirectorySyncs;
  readonly sweeper: LeftoverSweeper;
  readonly directWrites: DirectWrites;
}

/** Where an upload goes: its validated bucket and name, and the object's directory and encoded base name. */
export interface UploadTarget {
  readonly bucket: string;
  readonly name: string;
  readonly dir: string;
  readonly base: string;
}

/** Uploads `body` as `target` into an existing bucket. */
export async function uploadObject(
  context: UploadContext,
  target: UploadTarget,
  body: Readable,
  options: UploadOptions,
): Promise<ObjectInfo> {
  const { bucket, name, dir, base } = target;
  if (options.digest !== undefined && !/^sha256:[0-9a-f]{64}$/.test(options.digest)) {
    body.destroy();
    throw new InvalidArgumentError('digest', `'${options.digest}' is not a sha256 digest ('sha256:<64 hex>')`);
  }
  const id = newUploadId();
  const dataPath = join(dir, `${base}${dataMarker}${id}`);
  const tempMeta = join(dir, `${base}${tempMarker}${id}`);
  const handle = await createInDirectory(dir, dataPath);
  /** The data file's fsync and close, running beside the digest and the sidecar's write and fsync. */
  let dataDone: Promise<void> | undefined;
  try {
    const written = await writeData(handle, body, options, () => context.directWrites.open(dataPath));
    dataDone = written.dataDone;
    const { size, digest } = written;
    if (options.digest !== undefined && options.digest !== digest) {
      throw new InvalidArgumentError('digest', `upload of '${name}' has digest ${digest}, expected ${options.digest}`);
    }
    const sidecar: Sidecar = {
      v: 1,
      name,
      size,
      lastModified: new Date().toISOString(),
      ...(digest !== undefined ? { digest } : {}),
      ...(options.contentType !== undefined ? { contentType: options.contentType } : {}),
      metadata: lowerCaseMetadata(options.metadata),
      data: id,
    };
    const metaHandle = await createInDirectory(dir, tempMeta);
    try {
      await metaHandle.writeFile(JSON.stringify(sidecar));
      await metaHandle.sync();
    } finally {
      await metaHandle.close();
    }
    // Both files are on disk before the sidecar's rename makes the object visible.
    await dataDone;
    await context.commitLock.run(`${bucket}/${name}`, async () => {
      const previous = await readSidecar(dir, base);
      await rename(tempMeta, join(dir, `${base}${metaSuffix}`));
      // Uploads committing into the same directory at once share one directory fsync.
      await context.directorySync.sync(dir);
      if (previous && previous.data !== id) {
        await rm(join(dir, `${base}${dataMarker}${previous.data}`), { force: true });
      }
    });
    await context.sweeper.sweep(dir);
    return toInfo(bucket, sidecar);
  } catch (error) {
    await dataDone?.catch(() => undefined);
    await rm(dataPath, { force: true });
    await rm(tempMeta, { force: true });
    body.destroy();
    throw error;
  }
}

/**
 * Writes `body` to the data file `handle` and computes its digest. Resolves once every byte is written and the
 * digest known, with the data file's fsync and close still running in `dataDone`; on failure the file is closed
 * (and its fsync settled) before the error is thrown. `openDirect` opens the same file for writes past the page
 * cache (see `direct-writes.ts`), used for large objects whose digest is not read back from the file.
 */
async function writeData(
  handle: FileHandle,
  body: Readable,
  options: UploadOptions,
  openDirect: () => Promise<DirectFileWriter | undefined>,
): Promise<{ size: number; digest: string | undefined; dataDone: Promise<void> }> {
  let size = 0;
  // The digest is computed here, of exactly the bytes written, so the event loop never spends a pass over a
  // large object's bytes: small objects are hashed as they stream by; a large body of shared memory is hashed
  // by a worker thread from that memory while it is written; any other large object afterwards by a worker
  // thread reading the written file back (beside its fsync). Content its caller verifies itself (a backup's
  // packs, whose blobs are checked on restore) is not hashed at all: that pass was a sixth of a backup's CPU.
  const wantDigest = options.digest !== undefined || options.verifiedByCaller !== true;
  let hash: Hash | undefined = wantDigest ? createHash('sha256') : undefined;
  let shared: SharedMemoryDigest | undefined;
  let first = true;
  let direct: DirectFileWriter | undefined;
  let dataDone: Promise<void> | undefined;
  try {
    let digest: string | undefined;
    for await (const chunk of body as AsyncIterable<Buffer | string>) {
      options.signal?.throwIfAborted();
      let buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (wantDigest && first && SharedMemoryDigest.accepts(buffer) && (options.size ?? Infinity) > inlineDigestLimit) {
        shared = new SharedMemoryDigest();
        hash = undefined;
      }
      // A digest read back from the file would then come from the disk: those objects keep the page cache.
      if (first && (!wantDigest || shared) && (options.size ?? Infinity) >= directWriteMinBytes) {
        direct = await openDirect();
      }
      first = false;
      size += buffer.length;
      if (shared) {
        // A body mixing in unshared buffers (rare): a copy of those is still cheaper than a read-back.
        if (!SharedMemoryDigest.accepts(buffer)) {
          const copy = Buffer.from(new SharedArrayBuffer(buffer.length));
          copyBytes(buffer, copy, 0);
          buffer = copy;
        }
        shared.update(buffer);
      } else if (size > inlineDigestLimit) hash = undefined;
      else hash?.update(buffer);
      // Every byte handed to the digest is written: a short write continues where it stopped.
      if (direct) await direct.write(buffer);
      else {
        for (let written = 0; written < buffer.length;) {
          written += (await handle.write(buffer, written, buffer.length - written)).bytesWritten;
        }
      }
    }
    options.signal?.throwIfAborted();
    if (direct) {
      await direct.finish();
      await direct.close();
    }
    const synced = handle.sync();
    try {
      if (wantDigest) {
        digest = `sha256:${shared ? await shared.digest() : hash ? hash.digest('hex') : await digestFile(handle.fd)}`;
      }
    } finally {
      // Closed only once the worker no longer reads it (a reused descriptor number must not be read).
      dataDone = synced.finally(() => handle.close());
      dataDone.catch(() => undefined); // awaited before the commit, or on the way out of a failure
    }
    return { size, digest, dataDone };
  } catch (error) {
    shared?.drop();
    await direct?.close();
    if (!dataDone) await handle.close();
    else await dataDone.catch(() => undefined);
    throw error;
  }
}
