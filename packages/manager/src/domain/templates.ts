/**
 * URL templates: `{{name}}` placeholders, e.g. `http://{{proxy}}/ws/{{id}}/` or
 * `http://{{port}}-{{id}}.ws.{{domain}}:7780/`. Unknown placeholders are an error at startup, not at use.
 *
 * @module
 */
import { InvalidArgumentError } from '@workbay/api';

export interface UrlVariables {
  readonly id: string;
  readonly prefix: string;
  readonly metaId: string;
  readonly owner: string;
  /** host:port of the manager's port proxy. */
  readonly proxy: string;
  readonly domain: string;
  readonly port?: number;
}

const known = new Set(['id', 'prefix', 'metaId', 'owner', 'proxy', 'domain', 'port']);
const placeholder = /\{\{\s*([A-Za-z]+)\s*\}\}/g;

/** Throws naming `field` if the template uses an unknown variable (or `{{port}}` where none is allowed). */
export function checkTemplate(template: string, field: string, allowPort: boolean): void {
  for (const match of template.matchAll(placeholder)) {
    const name = match[1]!;
    if (!known.has(name) || (name === 'port' && !allowPort)) {
      throw new InvalidArgumentError(field, `unknown template variable {{${name}}}`);
    }
  }
}

export function renderTemplate(template: string, vars: UrlVariables): string {
  return template.replace(placeholder, (_all, name: string) => {
    const value = (vars as unknown as Record<string, string | number | undefined>)[name];
    return value === undefined ? '' : encodeURIComponent(String(value)).replace(/%3A/gi, ':');
  });
}
