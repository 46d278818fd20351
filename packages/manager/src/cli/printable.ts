/**
 * What the CLI prints that a server sent (messages, status fields, git branches, names) may quote what a repository
 * or a workspace chose: an escape sequence there would drive the user's terminal (title, colours, OSC 52 clipboard
 * writes). Every such text is made printable here (red team rounds 11 E1 and 12 E2).
 *
 * @module
 */

/** Control characters (C0 but newline and tab, DEL, C1) as `?`. */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is replaced
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '?');
}

/**
 * JSON text with DEL and C1 characters escaped too (`JSON.stringify` escapes C0 only): the same data, and nothing
 * a terminal would act on when the output is shown rather than parsed.
 */
export function terminalSafeJson(json: string): string {
  return json.replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
