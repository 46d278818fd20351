// The system tools Workbay and its tests use, and how they are installed on Debian. `npm test` and `npm start`
// run this first: as root with apt it installs what is missing; otherwise it stops at once with the list of
// missing packages and the command that installs them (a half-equipped machine gives confusing failures later).
//
//   node scripts/system-deps.mjs [test|start]     (default: test)
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';

/** command on PATH → Debian package that provides it, who needs it, and whether only isolation (root) needs it. */
export const systemTools = [
  { command: 'git', pkg: 'git', for: ['start', 'test'] },
  { rootOnly: true, command: 'ip', pkg: 'iproute2', for: ['start', 'test'] },
  { rootOnly: true, command: 'nft', pkg: 'nftables', for: ['start', 'test'] },
  { rootOnly: true, command: 'unshare', pkg: 'util-linux', for: ['start', 'test'] },
  { rootOnly: true, command: 'nsenter', pkg: 'util-linux', for: ['start', 'test'] },
  { command: 'setpriv', pkg: 'util-linux', for: ['start', 'test'] },
  // Installs an isolated workspace's syscall filter (Essential on Debian: normally there already).
  { rootOnly: true, command: 'perl', pkg: 'perl-base', for: ['start', 'test'] },
  { command: 'tar', pkg: 'tar', for: ['start', 'test'] },
  { rootOnly: true, command: 'mkfs.ext4', pkg: 'e2fsprogs', for: ['start', 'test'] },
  { command: 'getfattr', pkg: 'attr', for: ['start', 'test'] },
  { command: 'zstd', pkg: 'zstd', for: ['test'] },
  { command: 'curl', pkg: 'curl', for: ['test', 'bench'] },
  { command: 'openssl', pkg: 'openssl', for: ['test', 'bench'] },
  // The image test builds and runs the service images without a Docker engine or a registry.
  { command: 'buildah', pkg: 'buildah', for: ['test'] },
  { command: 'ssh-keygen', pkg: 'openssh-client', for: ['test'] },
  // The daemon's ssh remotes go through ssh's ProxyCommand to its git egress proxy; the specs run it.
  { command: 'ssh', pkg: 'openssh-client', for: ['test'] },
  // Specs whose attacks need a process without an event loop of its own (terminals, sockets held unread).
  { command: 'python3', pkg: 'python3', for: ['test'] },
  // A real forward proxy for the daemon's git.upstreamProxy specs.
  { command: 'tinyproxy', pkg: 'tinyproxy', for: ['test'] },
  { command: 'restic', pkg: 'restic', for: ['bench'] },
];

const has = (command) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;

/** The Debian packages missing for `purpose`, deduplicated. */
export function missingPackages(purpose) {
  // Isolation (namespaces, veths, nftables, loop-mounted quotas) is only attempted as root; a non-root
  // `npm start` runs workspaces as trusted processes and needs none of those tools. Tests always need them.
  const root = process.getuid?.() === 0;
  const missing = systemTools
    .filter((t) => t.for.includes(purpose) && (purpose !== 'start' || root || !t.rootOnly))
    .filter((t) => !has(t.command))
    .map((t) => t.pkg);
  return [...new Set(missing)];
}

/** Installs what is missing when it can; returns the packages still missing afterwards. */
export function ensureSystemPackages(purpose) {
  const missing = missingPackages(purpose);
  if (missing.length === 0) return [];
  const root = process.getuid?.() === 0;
  if (root && has('apt-get')) {
    console.log(`system-deps: installing ${missing.join(' ')} (apt-get)`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const update = spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    const install =
      update.status === 0
        ? spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
            stdio: 'inherit',
            env,
          })
        : update;
    if (install.status !== 0) console.error('system-deps: apt-get failed');
  }
  return missingPackages(purpose);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const purpose = process.argv[2] ?? 'test';
  const still = ensureSystemPackages(purpose);
  if (still.length > 0) {
    console.error(`system-deps: missing system packages for 'npm ${purpose}': ${still.join(' ')}`);
    console.error(`system-deps: install them with: sudo apt-get install -y ${still.join(' ')}`);
    process.exit(1);
  }
}
