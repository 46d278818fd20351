/** TEST ONLY: crafted tar archives, entry by entry, as a hostile snapshot would be made. */
import * as tarStream from 'tar-stream';
import { collect } from './tree.js';

/** One archive entry: a tar-stream header (any fields, also invalid ones) and its body. */
export interface TarEntry {
  readonly header: tarStream.Header | Record<string, unknown>;
  readonly body?: string;
}

/** A whole tar archive of `entries`, each header on top of `defaults` (e.g. `{ mode: 0o644 }`). */
export async function tarOf(entries: readonly TarEntry[], defaults: Record<string, unknown> = {}): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const { header, body } of entries) pack.entry({ ...defaults, ...header } as never, body ?? '');
  pack.finalize();
  return collect(pack as unknown as AsyncIterable<Buffer>);
}
