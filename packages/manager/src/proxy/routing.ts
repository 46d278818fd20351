/**
 * Which workspace (and which of its ports) a request is for: path routes `/ws/<id>/…` and `/ws/<id>/port/<n>/…`,
 * and Host routes `<id>.ws.<domain>` and `<port>-<id>.ws.<domain>`. Total: any input yields a route or a refusal.
 *
 * @module
 */
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { deepDecode, headerCount, parseHost, parseTarget } from './parse.js';
import type { Target } from './parse.js';

export interface Route {
  readonly id: string;
  /** Undefined for the IDE. */
  readonly port?: number;
  /** Path to send to the workspace (raw, starts with `/`), without the query. */
  readonly path: string;
  /** Query as sent (raw, without `?`); undefined when there was none. */
  readonly query?: string;
  /** Canonical path prefix the route consumed (`/ws/<id>` or `/ws/<id>/port/<n>`), '' for Host routes. */
  readonly prefix: string;
  /** Set when the path lacks the slash after the prefix (`/ws/<id>`): the proxy redirects to `<prefix>/`. */
  readonly missingSlash?: boolean;
}

export interface Refusal {
  readonly status: number;
  readonly message: string;
  readonly headers?: OutgoingHttpHeaders;
}

const idPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/**
 * A host route's id: one label, never several (a workspace `evil.a1` would be a subdomain of `a1`, and its pages could
 * set cookies for it: red team round 14); lower case, as hosts compare. Starts refuse other ids under host routing.
 */
const hostIdPattern = /^[a-z0-9][a-z0-9_-]{0,127}$/;
const pathRoute = /^\/ws\/([^/]+)(?:\/port\/([^/]+))?(\/.*)?$/;

/** At most this much of a client's input is quoted back in an error. */
const quoteLimit = 64;

export function quote(value: string): string {
  const printable = value.replace(/[^\x20-\x7e]/g, '?');
  return printable.length > quoteLimit ? `${printable.slice(0, quoteLimit)}…` : printable;
}

function parsePort(text: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

function badRequest(message: string): Refusal {
  return { status: 400, message: `${message}\n` };
}

export function routeRequest(req: IncomingMessage, domain: string | undefined): Route | Refusal {
  const target = parseTarget(req.url);
  if (!target) return badRequest('bad request target: only origin-form paths (/…) are served');
  // Red team round 15 (G3): two Host headers were served by the first's workspace.
  if (headerCount(req.rawHeaders, 'host') > 1) return badRequest('more than one Host header');
  const host = parseHost(req.headers.host);
  if (host === undefined) return badRequest('bad Host header');
  if (domain) {
    const suffix = `.ws.${domain.toLowerCase()}`;
    if (host.endsWith(suffix)) return hostRoute(host.slice(0, -suffix.length), host, target);
  }
  return pathRouteOf(target);
}

function hostRoute(label: string, host: string, target: Target): Route | Refusal {
  const portMatch = /^([0-9]{1,5})-(.+)$/.exec(label);
  const id = portMatch ? portMatch[2]! : label;
  const port = portMatch ? parsePort(portMatch[1]!) : undefined;
  if (!hostIdPattern.test(id) || (portMatch && port === undefined)) {
    return { status: 404, message: `no workspace route for host ${quote(host)}\n` };
  }
  return { id, port, path: target.path, query: target.query, prefix: '' };
}

function pathRouteOf(target: Target): Route | Refusal {
  const match = pathRoute.exec(target.path);
  if (!match) return { status: 404, message: 'not a workspace URL: use /ws/<id>/ or /ws/<id>/port/<port>/\n' };
  const id = deepDecode(match[1]!);
  if (!idPattern.test(id)) return { status: 404, message: `no workspace ${quote(id)}\n` };
  let port: number | undefined;
  if (match[2] !== undefined) {
    port = parsePort(match[2]);
    if (port === undefined) return { status: 404, message: `no port ${quote(match[2])}: ports are 1-65535\n` };
  }
  // The prefix is rebuilt from what was validated, never copied from the request.
  const prefix = port === undefined ? `/ws/${id}` : `/ws/${id}/port/${port}`;
  const rest = match[3];
  if (rest === undefined) return { id, port, path: '/', query: target.query, prefix, missingSlash: true };
  return { id, port, path: rest, query: target.query, prefix };
}
