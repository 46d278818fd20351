/**
 * A strict, total parser for the head of a workspace's answer to an upgrade request (the proxy writes that request
 * itself on a raw socket, so no Node parser sits between the workspace and the client). Lines end in LF or CRLF,
 * as Node's and the browsers' parsers accept; anything a browser might read differently from this parser (a bare
 * CR, a control character, a folded line, a malformed name or status line) makes the head invalid, and the proxy
 * then refuses the answer rather than relay it. Whatever is relayed is re-serialised from what was parsed here, so
 * the client only ever sees lines this parser has seen (and the proxy has filtered).
 *
 * @module
 */

export interface AnswerHead {
  readonly status: number;
  /** The reason phrase ('' when absent). */
  readonly reason: string;
  /** Header lines in order, names as sent, values trimmed; latin1 text (bytes 0x80-0xff kept as they came). */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /** Bytes of the head, its terminating empty line included: what follows is body or another protocol. */
  readonly length: number;
}

export type AnswerHeadResult =
  | { readonly kind: 'incomplete' }
  | { readonly kind: 'invalid'; readonly reason: string }
  | ({ readonly kind: 'head' } & AnswerHead);

/** No more header lines than this in one answer head. */
export const maxAnswerHeaders = 128;

const statusLine = /^HTTP\/1\.[01] ([1-9][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
const headerName = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const headerValue = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Parses the first answer head in `buffer`: `incomplete` while its end has not arrived (and it is within
 * `maxBytes`), `invalid` when it is malformed or larger than `maxBytes`. Never throws.
 */
export function parseAnswerHead(buffer: Buffer, maxBytes: number): AnswerHeadResult {
  const lines: string[] = [];
  let start = 0;
  for (;;) {
    const lf = buffer.indexOf(0x0a, start);
    if (lf < 0 || lf >= maxBytes) {
      return buffer.length > maxBytes ? { kind: 'invalid', reason: 'answer head too large' } : { kind: 'incomplete' };
    }
    const end = lf > start && buffer[lf - 1] === 0x0d ? lf - 1 : lf;
    const line = buffer.subarray(start, end).toString('latin1');
    start = lf + 1;
    if (line === '') {
      if (lines.length === 0) return { kind: 'invalid', reason: 'empty line before the status line' };
      break;
    }
    if (lines.length > maxAnswerHeaders) return { kind: 'invalid', reason: 'too many header lines' };
    lines.push(line);
  }
  const [first = '', ...rest] = lines;
  const status = statusLine.exec(first);
  if (!status) return { kind: 'invalid', reason: 'malformed status line' };
  const headers: Array<readonly [string, string]> = [];
  for (const line of rest) {
    // Also refuses obs-fold (a line starting with whitespace): a continuation some parsers join and others do not.
    const colon = line.indexOf(':');
    const name = colon < 0 ? '' : line.slice(0, colon);
    if (!headerName.test(name)) return { kind: 'invalid', reason: 'malformed header line' };
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!headerValue.test(value)) return { kind: 'invalid', reason: 'control character in a header value' };
    headers.push([name, value]);
  }
  return { kind: 'head', status: Number(status[1]), reason: status[2] ?? '', headers, length: start };
}
