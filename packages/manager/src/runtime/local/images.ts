import type { ImageConfig } from './config.js';

/** Turns `*` (any run of characters) and `?` (one character) into an anchored regular expression. */
export function globToRegExp(glob: string): RegExp {
  let source = '';
  for (const ch of glob) {
    if (ch === '*') source += '.*';
    else if (ch === '?') source += '.';
    else source += ch.replace(/[.+^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

const isGlob = (pattern: string): boolean => /[*?]/.test(pattern);

/** Finds the configured way to run an image: an exact reference wins, then the first matching glob in config order. */
export function resolveImage(
  images: Readonly<Record<string, ImageConfig>>,
  image: string,
): { pattern: string; config: ImageConfig } | undefined {
  const exact = images[image];
  if (exact && !isGlob(image)) return { pattern: image, config: exact };
  for (const [pattern, config] of Object.entries(images)) {
    if (isGlob(pattern) && globToRegExp(pattern).test(image)) return { pattern, config };
  }
  return undefined;
}

/** Replaces `${NAME}` in each argument by that variable of the workspace environment; unknown names stay as written. */
export function expandCommand(command: readonly string[], env: Readonly<Record<string, string>>): string[] {
  return command.map((arg) =>
    arg.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (whole, name: string) => env[name] ?? whole),
  );
}
