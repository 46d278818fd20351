/**
 * Helpers of the image test: a private buildah storage (vfs under a temp dir, so nothing leaks between runs or
 * into the machine's own image store), a base image made FROM scratch out of this machine's Node binary and the
 * shared libraries it needs (no registry, no pull), and long-running `buildah run` containers.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  realpathSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

export interface Buildah {
  /** Environment for every buildah call (and the build script): private storage, chroot isolation. */
  readonly env: NodeJS.ProcessEnv;
  /** Runs buildah to completion; throws with its stderr on failure. */
  run(args: readonly string[]): string;
}

/** Whether a command is on PATH. */
export function onPath(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/** A buildah whose images and containers live under `dir` (vfs: works on any filesystem, needs no fuse). */
export function privateBuildah(dir: string): Buildah {
  const conf = path.join(dir, 'storage.conf');
  mkdirSync(path.join(dir, 'root'), { recursive: true });
  mkdirSync(path.join(dir, 'run'), { recursive: true });
  writeFileSync(
    conf,
    `[storage]\ndriver = "vfs"\ngraphroot = "${path.join(dir, 'root')}"\nrunroot = "${path.join(dir, 'run')}"\n`,
  );
  const env = { ...process.env, CONTAINERS_STORAGE_CONF: conf, BUILDAH_ISOLATION: 'chroot' };
  return {
    env,
    run(args) {
      const result = spawnSync('buildah', args, { env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
      if (result.status !== 0) {
        throw new Error(
          `buildah ${args.slice(0, 2).join(' ')} failed (${result.status}): ${result.stderr.slice(-2000)}`,
        );
      }
      return result.stdout.trim();
    },
  };
}

/** The shared libraries a binary loads, as ldd resolves them on this machine. */
function sharedLibraries(binary: string): string[] {
  const out = spawnSync('ldd', [binary], { encoding: 'utf8' });
  // "not a dynamic executable" (static binary) exits 1: nothing to add.
  if (out.status !== 0) return [];
  return [...out.stdout.matchAll(/(\/\S+)/g)].map((m) => m[1]!);
}

/** Copies a file to the same path under `root`, following symlinks, keeping its mode. */
function copyInto(root: string, file: string): void {
  const target = path.join(root, file);
  if (existsSync(target)) return;
  mkdirSync(path.dirname(target), { recursive: true });
  copyFileSync(realpathSync(file), target);
}

/**
 * Builds `tag` FROM scratch: this machine's node, /bin/sh, /usr/bin/env (the npm bin shebangs), mkdir and chown
 * (the manager Dockerfile's RUN), each with its libraries, plus root in /etc/passwd and a /tmp.
 */
export function buildBaseImage(buildah: Buildah, dir: string, tag: string): void {
  const context = path.join(dir, 'base');
  const binaries = [process.execPath, '/bin/sh', '/usr/bin/env', '/bin/mkdir', '/bin/chown'];
  for (const binary of binaries) {
    const at = binary === process.execPath ? '/usr/bin/node' : binary;
    mkdirSync(path.dirname(path.join(context, at)), { recursive: true });
    copyFileSync(realpathSync(binary), path.join(context, at));
    chmodSync(path.join(context, at), 0o755);
    for (const lib of sharedLibraries(binary)) copyInto(context, lib);
  }
  mkdirSync(path.join(context, 'etc'), { recursive: true });
  writeFileSync(path.join(context, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(path.join(context, 'etc', 'group'), 'root:x:0:\n');
  mkdirSync(path.join(context, 'tmp'), { recursive: true });
  chmodSync(path.join(context, 'tmp'), 0o1777);
  mkdirSync(path.join(context, 'root'), { recursive: true });
  const containerfile = path.join(dir, 'Containerfile.base');
  writeFileSync(
    containerfile,
    'FROM scratch\nCOPY . /\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n',
  );
  buildah.run(['bud', '--quiet', '-f', containerfile, '-t', tag, context]);
}

/** The image's configured user and entrypoint (what `docker run` would use; `buildah run` takes a command). */
export function imageConfig(buildah: Buildah, image: string): { user: string; entrypoint: string[] } {
  // buildah 1.28 (Debian 12) has no `json` template function: read the whole inspect document.
  const inspected = JSON.parse(buildah.run(['inspect', '--type', 'image', image])) as {
    OCIv1: { config?: { User?: string; Entrypoint?: string[] } };
  };
  const config = inspected.OCIv1.config ?? {};
  return { user: config.User ?? '', entrypoint: config.Entrypoint ?? [] };
}

/** The size buildah reports for an image (uncompressed, human readable). */
export function imageSize(buildah: Buildah, image: string): string {
  return buildah.run(['images', '--noheading', '--format', '{{.Size}}', image]).split('\n')[0]!.trim();
}

export interface Running {
  readonly process: ChildProcess;
  /** Everything the container wrote so far (stdout and stderr). */
  output(): string;
  /** Resolves with the first stdout line that `match` accepts; rejects when the container exits first. */
  line(match: (line: string) => boolean): Promise<string>;
  /** SIGTERM (buildah passes it on), SIGKILL to its process group if it does not end. */
  stop(): Promise<void>;
}

/**
 * `buildah run` stays in the foreground for as long as the command runs: it is spawned as a child of the test and
 * ended by a signal at the end. Host network, chroot isolation; `mounts` are `host:container[:ro]`.
 */
export function runContainer(buildah: Buildah, container: string, mounts: string[], command: string[]): Running {
  const child = spawn(
    'buildah',
    ['run', '--network', 'host', ...mounts.flatMap((m) => ['-v', m]), container, '--', ...command],
    // Its own process group: if buildah does not end on SIGTERM, the group (buildah, buildah-chroot-exec and the
    // service) is killed as a whole and nothing keeps running after the test.
    { env: buildah.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  let output = '';
  const lines: string[] = [];
  const waiters: ((line: string) => void)[] = [];
  child.stderr!.on('data', (d: Buffer) => {
    output = (output + d.toString()).slice(-1_000_000);
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    output = (output + line + '\n').slice(-1_000_000);
    lines.push(line);
    for (const w of waiters) w(line);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    process: child,
    output: () => output,
    line: (match) =>
      new Promise<string>((resolve, reject) => {
        const seen = lines.find(match);
        if (seen !== undefined) return resolve(seen);
        waiters.push((line) => match(line) && resolve(line));
        void exited.then(() => reject(new Error(`${container} exited (${child.exitCode}): ${output.slice(-3000)}`)));
      }),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Last resort after the containers are stopped: SIGKILL every process whose root directory is the rootfs of one
 * of `containers`. A workspace the manager started runs in its own session there and would otherwise outlive a
 * manager that died half-way. (`buildah run` chroots into a bind mount of the rootfs under /var/tmp, so the
 * process's root is matched by device and inode, not by path.)
 */
export function killProcessesIn(buildah: Buildah, containers: readonly string[]): number[] {
  const roots = new Set<string>();
  for (const container of containers) {
    try {
      // vfs: the container's directory in the private storage (nothing is mounted)
      const rootfs = statSync(buildah.run(['mount', container]));
      roots.add(`${rootfs.dev}:${rootfs.ino}`);
    } catch {
      // never created
    }
  }
  const killed: number[] = [];
  if (roots.size === 0) return killed;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const root = statSync(`/proc/${entry}/root`);
      if (!roots.has(`${root.dev}:${root.ino}`)) continue;
      process.kill(Number(entry), 'SIGKILL');
      killed.push(Number(entry));
    } catch {
      // gone, or not ours to look at
    }
  }
  return killed;
}
