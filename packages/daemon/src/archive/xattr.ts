/**
 * Extended attributes without a native addon: `getfattr`/`setfattr` from the `attr` package, one process per
 * tree (not per file). When the tools are missing, xattrs are skipped and the caller is told once, so archives
 * still work on minimal hosts.
 */
import { relative, sep } from 'node:path';
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
 * Reads the xattrs of every entry under `root` (not following symlinks). Keys are paths relative to `root`
 * with `/` separators; entries without xattrs are absent. Returns an empty map when unsupported.
 */
export async function readTreeXattrs(root: string): Promise<Map<string, Xattrs>> {
  const out = new Map<string, Xattrs>();
  if (!(await xattrSupport()).available) return out;
  // getfattr exits non-zero when a file vanished mid-walk (the workspace may be running); use what it printed.
  const result = await runProcess(
    'getfattr',
    ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', '--', root],
    {
      maxOutputBytes: 256 * 1024 * 1024,
    },
  );
  for (const [path, attrs] of parseGetfattrDump(result.stdout)) {
    const rel = relative(root, path).split(sep).join('/');
    if (rel === '' || Object.keys(attrs).length === 0) continue;
    out.set(rel, attrs);
  }
  return out;
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
