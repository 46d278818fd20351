/**
 * Extended attributes without a native addon: `getfattr`/`setfattr` from the `attr` package, one process per
 * tree (not per file). When the tools are missing, xattrs are skipped and the caller is told once, so archives
 * still work on minimal hosts.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { FailedPreconditionError, InternalError } from '../errors.js';
import { confinedArgs } from '../util/confined-command.js';
import { hasProgram, runProcess } from '../util/process.js';
import { isSafeXattrName } from './xattr-policy.js';

export type Xattrs = Record<string, Buffer>;

export interface XattrSupport {
  readonly available: boolean;
  /** Why xattrs are not handled, when they are not. */
  readonly reason?: string;
}

let support: Promise<XattrSupport> | undefined;

/** Whether getfattr and setfattr are installed (checked once per process). */
export function xattrSupport(): Promise<XattrSupport> {
  support ??= Promise.all([hasProgram('getfattr'), hasProgram('setfattr')]).then(([get, set]) =>
    get && set
      ? { available: true }
      : {
          available: false,
          reason: 'getfattr/setfattr (the attr package) are not installed; xattrs are not preserved',
        },
  );
  return support;
}

/** Undoes getfattr's octal escapes (`\012`) and `\\`, byte-wise so multi-byte names survive. */
export function unescapeAttrPath(escaped: string): string {
  const bytes: number[] = [];
  const raw = Buffer.from(escaped, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    const byte = raw[i] as number;
    if (byte === 0x5c && i + 3 < raw.length && /^[0-7]{3}$/.test(raw.subarray(i + 1, i + 4).toString('latin1'))) {
      bytes.push(parseInt(raw.subarray(i + 1, i + 4).toString('latin1'), 8));
      i += 3;
    } else if (byte === 0x5c && raw[i + 1] === 0x5c) {
      bytes.push(0x5c);
      i += 1;
    } else {
      bytes.push(byte);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** Escapes a path for `setfattr --restore`: control characters, backslash and non-ASCII bytes as `\ooo`. */
export function escapeAttrPath(path: string): string {
  let out = '';
  for (const byte of Buffer.from(path, 'utf8')) {
    if (byte < 0x21 && byte !== 0x20) out += `\\${byte.toString(8).padStart(3, '0')}`;
    else if (byte === 0x5c || byte >= 0x7f) out += `\\${byte.toString(8).padStart(3, '0')}`;
    else out += String.fromCharCode(byte);
  }
  return out;
}

/** Parses `getfattr -d -e base64` output into absolute path → attributes. */
export function parseGetfattrDump(dump: string): Map<string, Xattrs> {
  const result = new Map<string, Xattrs>();
  let current: Xattrs | undefined;
  for (const line of dump.split('\n')) {
    if (line.startsWith('# file: ')) {
      current = {};
      result.set(unescapeAttrPath(line.slice('# file: '.length)), current);
      continue;
    }
    if (!current || line === '') continue;
    const eq = line.indexOf('=');
    const name = eq === -1 ? line : line.slice(0, eq);
    const value = eq === -1 ? '' : line.slice(eq + 1);
    current[name] = decodeAttrValue(value);
  }
  return result;
}

function decodeAttrValue(value: string): Buffer {
  if (value.startsWith('0s')) return Buffer.from(value.slice(2), 'base64');
  if (value.startsWith('0x')) return Buffer.from(value.slice(2), 'hex');
  if (value.startsWith('"') && value.endsWith('"')) return Buffer.from(value.slice(1, -1), 'utf8');
  return Buffer.from(value, 'utf8');
}

/**
 * Content a running workspace may change while its xattrs are read (see {@link readTreeXattrs}): its owner, whom the
 * read runs as.
 */
export interface XattrReader {
  /** The content's owner (the workspace's host uid). */
  readonly uid: number;
  readonly gid: number;
}

/**
 * getfattr output read at most: the restore takes 64 MiB of values per archive (base64 is 4/3 of that) plus names
 * and paths. Red team round 8: 60,000 files sharing one 3.9 KB value (1.6 MB of disk) made a 256 MiB dump that took
 * the daemon to 1 GiB and blocked its event loop.
 */
export const maxXattrDumpBytes = 96 * 1024 * 1024;

/** A tree walk that runs longer is stopped (a link swapped in mid-walk can lead it anywhere the reader can read). */
const xattrReadTimeoutMs = 10 * 60 * 1000;

/** The xattrs of a tree are more than an archive carries (not retried: another attempt reads the same). */
export class XattrsTooLargeError extends FailedPreconditionError {}

// getfattr walks by path (newfstatat, then openat without O_NOFOLLOW): a running workspace that swaps a directory
// for a symlink mid-walk sends it wherever the link points. As root on the host, that read another owner's xattrs into
// a snapshot (red team round 8). As the owner with the working area hidden, it still reached world-readable host files'
// xattrs, and lost those of files the owner had made unreadable (a mode-000 file's user xattrs need read permission).
// Chrooted into a minimal root (util/confined-command.ts: the content and the read-only system directories, nothing
// else), a swapped link leads nowhere but there; read permission then takes only CAP_DAC_READ_SEARCH, kept alone.
const getfattrArgs = ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', '--'];

/**
 * Reads the xattrs of every entry under `root` (not following symlinks). Keys are paths relative to `root`
 * with `/` separators; entries without xattrs are absent. Returns an empty map when unsupported. With `reader`
 * (content a workspace may change while it is read), getfattr runs as the content's owner, chrooted into a root that
 * holds only the content and the system directories. More than {@link maxXattrDumpBytes} of output fails with {@link XattrsTooLargeError}.
 */
export async function readTreeXattrs(
  root: string,
  reader?: XattrReader,
  maxDumpBytes = maxXattrDumpBytes,
): Promise<Map<string, Xattrs>> {
  const out = new Map<string, Xattrs>();
  if (!(await xattrSupport()).available) return out;
  let dump: string;
  if (reader) {
    const minimalRoot = await mkdtemp(join(tmpdir(), 'workbay-xattrs-'));
    try {
      const result = await boundedOutput(
        maxDumpBytes,
        'unshare',
        confinedArgs(
          {
            uid: reader.uid,
            gid: reader.gid,
            mount: { source: root, target: minimalRoot },
            minimalRoot,
            capabilities: ['dac_read_search'],
          },
          ['getfattr', ...getfattrArgs, '.'],
        ),
      );
      // The namespace could not be set up (no CAP_SYS_ADMIN in a container): an archive without the xattrs would
      // pass for a complete one, so the archive fails instead.
      const setup = /^(unshare|mount|setpriv|sh|chroot|mkdir|ln): .*$/m.exec(result.stderr);
      if (result.code !== 0 && setup) {
        throw new InternalError(`cannot read the xattrs as the content's owner: ${setup[0].slice(0, 300)}`);
      }
      dump = result.stdout;
    } finally {
      // The root's tmpfs lived in the namespace of the process, gone with it: the directory is empty.
      await rmdir(minimalRoot).catch(() => undefined);
    }
  } else {
    dump = (await boundedOutput(maxDumpBytes, 'getfattr', [...getfattrArgs, root])).stdout;
  }
  const base = reader ? '.' : root;
  for (const [path, attrs] of parseGetfattrDump(dump)) {
    const rel = relative(base, path).split(sep).join('/');
    if (rel === '' || Object.keys(attrs).length === 0) continue;
    out.set(rel, attrs);
  }
  return out;
}

/**
 * getfattr's output, failing past `maxBytes` or {@link xattrReadTimeoutMs}. It exits non-zero when a
 * file vanished mid-walk (the workspace may be running): what it printed is used.
 */
function boundedOutput(
  maxBytes: number,
  command: string,
  args: readonly string[],
): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString('utf8');
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let failure: Error | undefined;
    const stop = (error: Error): void => {
      failure ??= error;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(
      () => stop(new XattrsTooLargeError(`reading xattrs took more than ${xattrReadTimeoutMs / 60_000} minutes`)),
      xattrReadTimeoutMs,
    );
    child.stdout.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        stop(new XattrsTooLargeError(`the content's xattrs are more than ${maxBytes} bytes to list`));
        return;
      }
      chunks.push(chunk);
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (failure) reject(failure);
      else resolve({ stdout: Buffer.concat(chunks).toString('utf8'), stderr, code });
    });
  });
}

/** Builds the `setfattr --restore` input for entries relative to the restore root. */
export function buildRestoreInput(entries: Iterable<readonly [string, Xattrs]>): string {
  let out = '';
  for (const [path, attrs] of entries) {
    // Checked again here, whoever built the entries: a name with a newline or an escape would be read by setfattr
    // (as root) as another file's block or another name.
    const names = Object.keys(attrs).filter(isSafeXattrName);
    if (names.length === 0) continue;
    out += `# file: ${escapeAttrPath(path)}\n`;
    for (const name of names) out += `${name}=0s${(attrs[name] as Buffer).toString('base64')}\n`;
    out += '\n';
  }
  return out;
}

export interface ApplyXattrsResult {
  readonly applied: boolean;
  /** setfattr's complaints (e.g. `trusted.*` without CAP_SYS_ADMIN, or user xattrs on symlinks). */
  readonly warnings: string;
}

/** Writes xattrs below `root` in one setfattr run; failures of single attributes are reported, not thrown. */
export async function applyTreeXattrs(
  root: string,
  entries: Iterable<readonly [string, Xattrs]>,
): Promise<ApplyXattrsResult> {
  const input = buildRestoreInput(entries);
  if (input === '') return { applied: true, warnings: '' };
  const supported = await xattrSupport();
  if (!supported.available) return { applied: false, warnings: supported.reason ?? '' };
  const result = await runProcess('setfattr', ['-h', '--restore=-'], { cwd: root, input });
  return { applied: result.code === 0, warnings: result.stderr.trim() };
}
