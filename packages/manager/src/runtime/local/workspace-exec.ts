/**
 * How the workspace command gets its environment, and nothing else of the wrapper's: the last step of the wrapper
 * (see wrapper.ts) runs `command` with exactly the workspace's variables.
 *
 * The variables are the owner's settings and secrets (tokens, passwords: the API seals them at rest and redacts them in
 * logs). They must not be on a command line: the wrapper, `unshare` and the sandbox init live as long as the workspace,
 * and the host's `/proc/<pid>/cmdline` is readable by every user of the node (red team round 14 read every owner's
 * secrets as `nobody`). A process's environment is readable only by its own user and root, so they travel in it,
 * base64-encoded in variables of ours that no tool on the way interprets (`LD_PRELOAD` or `BASH_ENV` of a workspace must
 * never reach the root tools), and Perl, at the very end and without privileges, turns them into the command's
 * environment and execs it. Perl is in every Debian system (`perl-base` is Essential); without it, `env -i`
 * gets them as arguments (the old way, which the README names).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';

/** Names of the variables carrying the encoded environment: `WORKBAY_WORKSPACE_ENV_0`, `_1`, … */
const carrierPrefix = 'WORKBAY_WORKSPACE_ENV_';

/**
 * Characters per carrier variable: one environment string may hold at most 128 KiB (`MAX_ARG_STRLEN`), so a large
 * environment is spread over several. Base64 (a third more than the text), not hex (twice as much): the API takes up
 * to 1 MiB of variables, and the whole of a process's arguments and environment must stay within `ARG_MAX` (2 MiB);
 * hex made a 1 MiB environment `E2BIG` (red team round 14b, R2).
 */
const carrierChars = 120 * 1024;

const envNamePattern = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/**
 * Reads the carriers in order, clears the environment, sets each `NAME=VALUE` of their NUL-separated text and execs
 * its arguments (searched on the new `PATH`, as `env` does); 127 when the program is not found, 126 otherwise. Base64
 * is decoded with `unpack("u")` (a uuencoded line is base64 in another alphabet, its length in front), a builtin:
 * `perl-base` alone has no MIME::Base64.
 */
const perlExec = [
  'my $b64 = ""; for (my $i = 0; exists $ENV{"' +
    carrierPrefix +
    '$i"}; $i++) { $b64 .= $ENV{"' +
    carrierPrefix +
    '$i"} }',
  '$b64 =~ tr|A-Za-z0-9+/||cd; $b64 =~ tr|A-Za-z0-9+/| -_|;',
  'my $text = ""; while ($b64 =~ /(.{1,60})/gs) { $text .= unpack("u", chr(32 + length($1) * 3 / 4) . $1) }',
  '%ENV = ();',
  'for my $pair (split /\\0/, $text) { my ($name, $value) = split /=/, $pair, 2; $ENV{$name} = $value }',
  'exec { $ARGV[0] } @ARGV;',
  'print STDERR "workbay: cannot run $ARGV[0]: $!\\n"; exit($!{ENOENT} ? 127 : 126);',
].join(' ');

/** The trusted path's Perl, looked for once. */
export function findPerl(searchPath: string): string | undefined {
  return searchPath
    .split(':')
    .map((dir) => path.join(dir, 'perl'))
    .find((candidate) => existsSync(candidate));
}

export interface WorkspaceExec {
  /** The argv that runs the command (after the wrapper's and the init's own arguments). */
  readonly argv: string[];
  /** Variables to add to the wrapper's (root) environment: the carriers, or none. */
  readonly carriers: Record<string, string>;
}

function pairsOf(env: Readonly<Record<string, string>>): string[] {
  return Object.entries(env).map(([name, value]) => {
    // Names are validated at the API edge; one from elsewhere (image config) must not become an env option.
    if (!envNamePattern.test(name)) throw new Error(`invalid environment variable name '${name.slice(0, 64)}'`);
    if (value.includes('\0')) throw new Error(`environment variable '${name}' holds a NUL byte`);
    return `${name}=${value}`;
  });
}

/** `command` run by Perl (`perl`, its path) with exactly `env`, carried in the environment (see the module comment). */
export function execWithEnv(
  perl: string,
  env: Readonly<Record<string, string>>,
  command: readonly string[],
): WorkspaceExec {
  const encoded = Buffer.from(pairsOf(env).join('\0')).toString('base64');
  const carriers: Record<string, string> = {};
  for (let i = 0; i * carrierChars < encoded.length; i++) {
    carriers[`${carrierPrefix}${i}`] = encoded.slice(i * carrierChars, (i + 1) * carrierChars);
  }
  return { argv: [perl, '-e', perlExec, '--', ...command], carriers };
}

/**
 * `command` run with exactly `env` and nothing of the caller's: `env -i NAME=VALUE… command…`, `env` found on the
 * trusted path, the command on the workspace's own PATH (env sets it first). A program name with a `=` would be
 * taken for one more variable, so it goes through `sh -c 'exec "$@"'` instead. The values are on the command
 * line: only for nodes without Perl.
 */
export function withOnlyEnv(env: Readonly<Record<string, string>>, command: readonly string[]): string[] {
  const pairs = pairsOf(env);
  const program = command[0] ?? '';
  const run = program.includes('=') ? ['/bin/sh', '-c', 'exec "$@"', 'workbay-exec', ...command] : command;
  return ['env', '-i', ...pairs, ...run];
}
