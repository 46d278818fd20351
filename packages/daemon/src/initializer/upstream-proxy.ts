/**
 * The operator's forward proxy for network git (`git.upstreamProxy`): nodes that reach forges only through one.
 * The egress proxy still resolves and checks every target itself and asks the upstream proxy for a tunnel to the
 * checked address (`CONNECT <ip>:<port>`), never to the name: the address policy and the pinning hold whatever the
 * upstream proxy's resolver would have said. Addresses in `direct` (an internal forge the node reaches on its own)
 * are connected to without it. Plain-http remotes go through a tunnel too (to port 80 or theirs): a proxy that
 * allows CONNECT to 443 only refuses them, as it would refuse ssh and git://.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { BlockList, isIP } from 'node:net';
import { parseNetwork } from './address-policy.js';
import type { AddressRules } from './address-policy.js';

export interface UpstreamProxy {
  readonly host: string;
  readonly port: number;
  /** base64 of `user:password` for `Proxy-Authorization: Basic`, when the URL carries credentials. */
  readonly authorization?: string;
  /** Networks connected to directly (`10.1.0.0/16`, `fd00::/8`, a single address). */
  readonly direct: readonly string[];
}

/** The egress rules of network git: where it may connect, and how it gets there. */
export interface EgressRules extends AddressRules {
  readonly upstreamProxy?: UpstreamProxy;
}

/** The largest answer head of an upstream proxy read before giving up on it. */
const maxAnswerBytes = 16 * 1024;

/**
 * Parses `http://[user:password@]host:port` (the config's `git.upstreamProxy.url`); throws an Error whose message
 * says what is wrong and never repeats the password.
 */
export function parseUpstreamProxy(text: string, direct: readonly string[] = []): UpstreamProxy {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error('is not a URL (http://[user:password@]host:port)');
  }
  if (url.protocol !== 'http:') throw new Error(`must be an http:// proxy URL, not ${url.protocol}//`);
  if (url.port === '') throw new Error('needs a port (http://host:port)');
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
    throw new Error('must have no path, query or fragment');
  }
  for (const network of direct) parseNetwork(network);
  const user = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: Number(url.port),
    ...(user || password ? { authorization: Buffer.from(`${user}:${password}`).toString('base64') } : {}),
    direct,
  };
}

/** `host:port` of an upstream proxy, for messages (never its credentials). */
export function describeUpstream(proxy: UpstreamProxy): string {
  return `${isIP(proxy.host) === 6 ? `[${proxy.host}]` : proxy.host}:${proxy.port}`;
}

/** Whether `address` is one of the proxy's direct networks. */
export function directMatcher(proxy: UpstreamProxy): (address: string) => boolean {
  const list = new BlockList();
  for (const text of proxy.direct) {
    const network = parseNetwork(text);
    list.addSubnet(network.address, network.prefix, network.family);
  }
  return (address) => {
    const family = isIP(address);
    return family !== 0 && list.check(address, family === 4 ? 'ipv4' : 'ipv6');
  };
}

export type Tunnelled = { readonly socket: Socket } | { readonly failed: string };

/**
 * Asks the upstream proxy for a tunnel to `address:port` (an address already checked). Resolves with the tunnel's
 * socket once the proxy answered 2xx (bytes it sent after its answer are given back to the socket), or with what
 * went wrong in a short message: unreachable, an answer other than 2xx (its status line, bounded), no answer
 * within `timeoutMs`, or an answer head larger than 16 KiB.
 */
export function tunnelThrough(
  proxy: UpstreamProxy,
  address: string,
  port: number,
  timeoutMs: number,
): Promise<Tunnelled> {
  const authority = `${isIP(address) === 6 ? `[${address}]` : address}:${port}`;
  const shown = describeUpstream(proxy);
  return new Promise((resolve) => {
    const socket = connect({ host: proxy.host, port: proxy.port });
    let head = Buffer.alloc(0);
    let settled = false;
    const finish = (result: Tunnelled): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if ('failed' in result) {
        socket.off('readable', onReadable);
        socket.destroy();
      }
      resolve(result);
    };
    const timer = setTimeout(
      () => finish({ failed: `upstream proxy ${shown} did not answer within ${timeoutMs} ms` }),
      timeoutMs,
    );
    // Read with read(), not 'data': flowing mode would go on after the head and drop the tunnel's first bytes, and a
    // socket paused by hand would not flow again for a reader that only listens to 'data' (the http client).
    const onReadable = (): void => {
      for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) {
        head = Buffer.concat([head, chunk]);
      }
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) {
        if (head.length > maxAnswerBytes) finish({ failed: `upstream proxy ${shown} sent an answer head over 16 KiB` });
        return;
      }
      const statusLine = head.subarray(0, Math.min(end, head.indexOf('\r\n'))).toString('latin1');
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1];
      if (!status?.startsWith('2')) {
        // Printable and short: the status line is the proxy's, and ends up in the workspace's error.
        const said = statusLine.replace(/[^\x20-\x7e]/g, '?').slice(0, 80);
        finish({ failed: `upstream proxy ${shown} answered "${said}" to CONNECT ${authority}` });
        return;
      }
      socket.off('readable', onReadable);
      const rest = head.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      finish({ socket });
    };
    socket.on('readable', onReadable);
    socket.once('error', (error: NodeJS.ErrnoException) =>
      finish({ failed: `upstream proxy ${shown} is unreachable (${error.code ?? 'error'})` }),
    );
    socket.once('close', () => finish({ failed: `upstream proxy ${shown} closed the connection` }));
    socket.once('connect', () => {
      const auth = proxy.authorization ? `Proxy-Authorization: Basic ${proxy.authorization}\r\n` : '';
      socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`);
    });
  });
}
