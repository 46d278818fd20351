/**
 * How a git command is pointed at its egress proxy (egress-proxy.ts), for every transport git may use:
 *
 * - https and http: `http.proxy` at command scope, with Proxy-Authorization Basic sent at once. A repository's
 *   `http.<url>.proxy` or `remote.<name>.proxy` would win over a plain `http.proxy` (git picks the most specific),
 *   so config-guard.ts overrides each of those, at the very key the repository used, with the same proxy.
 * - git://: GIT_PROXY_COMMAND (read before any config, so core.gitProxy of the content cannot win).
 * - ssh: GIT_SSH_COMMAND (which beats core.sshCommand) with a ProxyCommand and no ssh config file (whose ProxyJump
 *   or ProxyCommand could come first).
 *
 * The last two run the connect helper below: it opens a CONNECT tunnel through the proxy to the host and port it
 * is given and pipes stdin and stdout through it. It is written into the command's private directory (owned by the
 * user git runs as, see Git) and run by this very Node binary: no file of the daemon's installation has to be
 * readable by the workspace's user, and nothing else is installed.
 *
 * libcurl takes its proxy, and hosts not to proxy, from the environment too: NO_PROXY would send a host around the
 * configured proxy. Those variables are removed from every git command's environment.
 */
import { chown, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EgressRules } from '../initializer/upstream-proxy.js';
import type { ConfigPair } from './config-guard.js';
import { EgressProxy } from './egress-proxy.js';

/** Environment variables libcurl reads for proxies (lower and upper case, as curl reads them). */
export const curlProxyEnv: ReadonlySet<string> = new Set([
  'http_proxy',
  'https_proxy',
  'all_proxy',
  'no_proxy',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'ALL_PROXY',
  'NO_PROXY',
]);

/** The connect helper (CommonJS, run by process.execPath): `egress-connect <host> <port>`. */
export const egressConnectScript = `'use strict';
// Workbay: git's GIT_PROXY_COMMAND and ssh's ProxyCommand. Tunnels stdin/stdout to host:port through the daemon's
// egress proxy (WORKBAY_GIT_EGRESS_PROXY, credentials in WORKBAY_GIT_EGRESS_AUTH), which checks the address.
const net = require('node:net');
const [host = '', port = ''] = process.argv.slice(2);
const fail = (why) => {
  process.stderr.write('workbay: ' + why + '\\n');
  process.exit(1);
};
if (!/^[A-Za-z0-9._:-]{1,253}$/.test(host) || host.startsWith('-') || !/^[0-9]{1,5}$/.test(port))
  fail('refusing an invalid host or port');
const proxy = process.env.WORKBAY_GIT_EGRESS_PROXY || '';
const colon = proxy.lastIndexOf(':');
const target = host.includes(':') ? '[' + host + ']:' + port : host + ':' + port;
const socket = net.connect(Number(proxy.slice(colon + 1)), proxy.slice(0, colon));
socket.once('connect', () =>
  socket.write(
    'CONNECT ' + target + ' HTTP/1.1\\r\\nHost: ' + target + '\\r\\nProxy-Authorization: Basic ' +
      (process.env.WORKBAY_GIT_EGRESS_AUTH || '') + '\\r\\n\\r\\n',
  ),
);
socket.on('error', (error) => fail('egress proxy: ' + error.message));
let head = Buffer.alloc(0);
const onData = (chunk) => {
  head = Buffer.concat([head, chunk]);
  const end = head.indexOf('\\r\\n\\r\\n');
  if (end < 0) {
    if (head.length > 16384) fail('egress proxy: oversized answer');
    return;
  }
  socket.off('data', onData);
  const status = /^HTTP\\/1\\.[01] ([0-9]{3})/.exec(head.toString('latin1', 0, end));
  if (!status || status[1] !== '200')
    fail(
      "the daemon's egress proxy " + (status && status[1] === '403' ? 'refused ' : 'could not connect to ') +
        target + ' (' + (status ? status[1] : 'no answer') + ')',
    );
  const rest = head.subarray(end + 4);
  if (rest.length > 0) process.stdout.write(rest);
  socket.pipe(process.stdout);
  process.stdin.pipe(socket);
  // Writes to a pipe are synchronous on Linux: nothing is lost by exiting when the remote closes.
  socket.once('close', () => process.exit(0));
};
socket.on('data', onData);
`;

/** A shell word for a path (single-quoted). */
function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** The executable wrapper git and ssh run (GIT_PROXY_COMMAND takes a program, not a command line). */
export function egressConnectWrapper(helperPath: string): string {
  return `#!/bin/sh\nexec ${shellQuote(process.execPath)} ${shellQuote(helperPath)} "$@"\n`;
}

/** What a proxy gives git: its address and credentials. */
export interface EgressEndpoint {
  readonly url: string;
  readonly address: string;
  readonly authorization: string;
}

/** Command-scope config and environment that send every connection of one git command through `proxy`. */
export function egressWiring(
  proxy: EgressEndpoint,
  connectProgram: string,
): { config: ConfigPair[]; env: Record<string, string> } {
  // ssh expands %h and %p and runs `exec <command>` with the shell; ssh refuses host names with shell metacharacters
  // (OpenSSH 9.6, and Debian's 9.2 backport), and the quotes keep the rest one word each.
  const proxyCommand = `ProxyCommand=${shellQuote(connectProgram)} '%h' '%p'`;
  return {
    config: [
      ['http.proxy', proxy.url],
      // Send the credentials at once: no 407 round trip per connection.
      ['http.proxyAuthMethod', 'basic'],
    ],
    env: {
      // Read by git after the config (http.c): the operator's value must not turn the credentials off.
      GIT_HTTP_PROXY_AUTHMETHOD: 'basic',
      GIT_PROXY_COMMAND: connectProgram,
      GIT_SSH_COMMAND: `ssh -F /dev/null -o "${proxyCommand}"`,
      // Our command takes ssh's options: the content's ssh.variant must not make git pass plink's.
      GIT_SSH_VARIANT: 'ssh',
      WORKBAY_GIT_EGRESS_PROXY: proxy.address,
      WORKBAY_GIT_EGRESS_AUTH: proxy.authorization,
    },
  };
}

/** One git command's egress: its proxy, and what git gets to use it. */
export interface EgressSession {
  readonly proxy: EgressProxy;
  readonly config: ConfigPair[];
  readonly env: Record<string, string>;
}

/**
 * Starts the proxy of one git command and writes the connect helper into `dir` (the command's private
 * directory), owned by `user` when git runs as another user: it must read and run them. Close the proxy when the
 * command has exited.
 */
export async function startEgress(
  rules: EgressRules,
  dir: string,
  user: { readonly uid: number; readonly gid: number } | undefined,
): Promise<EgressSession> {
  const helper = join(dir, 'egress-connect.cjs');
  const program = join(dir, 'egress-connect');
  // Both end up in command lines (ssh's ProxyCommand, through two shells): a path of plain characters only.
  if (!/^[A-Za-z0-9/._-]+$/.test(program)) throw new Error(`unexpected characters in the git scratch path ${dir}`);
  await writeFile(helper, egressConnectScript, { mode: 0o600 });
  await writeFile(program, egressConnectWrapper(helper), { mode: 0o700 });
  if (user) for (const path of [helper, program]) await chown(path, user.uid, user.gid);
  const proxy = await EgressProxy.start(rules);
  return { proxy, ...egressWiring(proxy, program) };
}
