/**
 * What reaches a remote: which git commands talk to one, and to which origins a command's credentials may go
 * (the GIT_ASKPASS helper answers prompts for those origins only). Used by git.ts.
 */

// Answers git's credential prompts ("Username for 'https://host:port': ", "Password for 'https://user@host:port': ")
// from the environment of this git process only, and only for the origins the command itself names
// (WORKBAY_GIT_ORIGINS, see credentialOrigins): a redirect, a URL rewrite or a submodule on another host gets
// nothing. Anything it cannot read as such a prompt gets nothing either.
export const askpassScript = `#!/bin/sh
set -f
desc=\${1#*\\'}
desc=\${desc%\\'*}
rest=\${desc#*://}
authority=\${rest%%/*}
origin=$(printf '%s' "\${desc%%://*}://\${authority##*@}" | tr '[:upper:]' '[:lower:]')
for allowed in $WORKBAY_GIT_ORIGINS; do
  if [ "$allowed" = "$origin" ]; then
    case "$1" in
      Username*) printf '%s\\n' "$WORKBAY_GIT_USERNAME" ;;
      *) printf '%s\\n' "$WORKBAY_GIT_PASSWORD" ;;
    esac
    exit 0
  fi
done
printf 'workbay: credentials are given only to %s, not to %s\\n' "\${WORKBAY_GIT_ORIGINS:-the remote named in the request}" "$origin" >&2
exit 1
`;

/**
 * Git subcommands that talk to a remote. Any command given credentials counts as well (a partial clone fetches
 * missing objects lazily from its promisor remote, from checkout or cat-file).
 */
export const remoteCommands = new Set([
  'fetch',
  'pull',
  'push',
  'ls-remote',
  'clone',
  'submodule',
  'remote',
  'archive',
  'fetch-pack',
  'send-pack',
]);

/** Global options of git that take a separate value. */
const optionsWithValue = new Set([
  '-c',
  '-C',
  '--git-dir',
  '--work-tree',
  '--namespace',
  '--config-env',
  '--exec-path',
]);

/** The git subcommand of `args` (after the global options). */
export function gitSubcommand(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (optionsWithValue.has(arg)) i++;
    else if (!arg.startsWith('-')) return arg;
  }
  return undefined;
}

/**
 * Where credentials may go, as git's prompts name it (`scheme://host[:port]`, lower case): the origin of every
 * http(s) URL on the command line (the request's remote); a command that names none (submodule update, a lazy
 * fetch) uses the working copy's `origin`, which the initializer sets to the request's remote first.
 */
export function credentialOrigins(args: readonly string[], originUrl?: string): string[] {
  const origins = new Set<string>();
  const add = (url: string): void => {
    // As git reads it (credential.c): scheme up to "://", host after the user info up to the path.
    const match = /^(https?):\/\/([^/?#]*)/i.exec(url);
    if (!match) return;
    const authority = match[2] as string;
    const at = authority.indexOf('@');
    let host = at === -1 ? authority : authority.slice(at + 1);
    try {
      host = decodeURIComponent(host);
    } catch {
      return; // git could not decode it either: no credentials for it
    }
    if (host === '' || /[\s'"]/.test(host)) return;
    origins.add(`${(match[1] as string).toLowerCase()}://${host.toLowerCase()}`);
  };
  for (const arg of args) add(arg);
  if (origins.size === 0 && originUrl !== undefined) add(originUrl);
  return [...origins];
}
