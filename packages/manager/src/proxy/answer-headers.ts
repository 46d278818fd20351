/**
 * What of a workspace's answer headers reaches the browser. With path routing every workspace shares one origin, and
 * with host routing every workspace host shares one registrable domain with the others: a header that acts on the
 * origin or the domain, rather than on the answering workspace, is one workspace acting on all of them. Red team round
 * 9 had mallory's public port set a cookie for alice's workspace path (`Path=/ws/a2/`, session fixation of her apps),
 * clear every cookie of the origin (`Clear-Site-Data`), and allow a service worker of hers the scope `/`, from which it
 * would answer every request of alice's browser to alice's IDE.
 *
 * @module
 */
import { setsOwnerCookie } from './admission.js';

/** Who answers: the owner cookie names it may not set, and the path prefix the proxy serves it under. */
export interface AnswerScope {
  /** The owner cookies' name prefix (`proxy.cookieName`). */
  readonly cookiePrefix: string;
  /** The route's prefix (`/ws/<id>` or `/ws/<id>/port/<n>`; '' with host routing). */
  readonly prefix: string;
}

/**
 * Headers that act beyond the answering workspace, dropped: `Clear-Site-Data` clears the whole origin (its cookies
 * for the whole registrable domain), `Service-Worker-Allowed` widens a service worker's scope past the script's own
 * directory (to other workspaces' paths).
 */
const originWide = new Set(['clear-site-data', 'service-worker-allowed']);

/**
 * The answer header as the browser gets it, or undefined when it is dropped. A cookie is kept within the workspace:
 * owner cookies are dropped (also behind the `__Host-` and `__Secure-` name prefixes), `Domain` is removed (a cookie
 * for the parent domain would reach every workspace host), and under path routing `Path` is moved below the route's
 * prefix, as the workspace sees its paths without it (`Path=/` becomes `Path=/ws/<id>/`). Without `Path` the browser
 * takes the request's directory, which is below the prefix already.
 */
export function scopeAnswerHeader(name: string, value: string, scope: AnswerScope): string | undefined {
  const lower = name.toLowerCase();
  if (originWide.has(lower)) return undefined;
  if (lower !== 'set-cookie' && lower !== 'set-cookie2') return value;
  if (setsOwnerCookie(value, scope.cookiePrefix) || setsOwnerCookie(withoutNamePrefix(value), scope.cookiePrefix)) {
    return undefined;
  }
  const [pair = '', ...attributes] = value.split(';');
  const kept: string[] = [pair];
  for (const attribute of attributes) {
    const eq = attribute.indexOf('=');
    const key = (eq < 0 ? attribute : attribute.slice(0, eq)).trim().toLowerCase();
    if (key === 'domain') continue;
    if (key === 'path') {
      if (!scope.prefix) kept.push(attribute);
      else {
        const path = eq < 0 ? '' : attribute.slice(eq + 1).trim();
        // Not starting with `/`: the browser ignores it and takes the request's directory (below the prefix).
        if (path.startsWith('/')) kept.push(` Path=${scope.prefix}${path}`);
      }
      continue;
    }
    kept.push(attribute);
  }
  return kept.join(';');
}

/** `__Host-x=…` and `__Secure-x=…` as `x=…` (browsers treat the prefixes as part of the name, matched case-sensitively). */
function withoutNamePrefix(setCookie: string): string {
  return setCookie.replace(/^\s*__(?:Host|Secure)-/i, '');
}
