/**
 * TEST ONLY: shared setup of the local-runtime.*.spec.ts files: a scratch directory per file, runtimes stopped
 * after each test.
 */
import { randomBytes } from 'node:crypto';
import { chown, mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { firstValueFrom, filter, take, timeout } from 'rxjs';
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { RuntimeEvent, RuntimeWorkspaceSpec } from '@workbay/api';
import { LocalRuntime } from '../runtime/local/local-runtime.js';
import type { LocalRuntimeConfigInput } from '../runtime/local/config.js';
import { readProcStat } from '../runtime/local/proc.js';

export const isRoot = process.getuid?.() === 0;
/** The spec file's scratch directory, made by its beforeAll. */
export let base: string;
let counter = 0;
/** Runtimes that the next afterEach stops and closes (newRuntime() adds its own). */
export const runtimes: LocalRuntime[] = [];
/**
 * Spec files run in parallel and a workspace's veth alias ends in its bare instance id: a tag per file keeps
 * their ids apart.
 */
const fileTag = randomBytes(3).toString('hex');

/** Registers the hooks every local-runtime spec file needs; call once at its top level. */
export function useLocalRuntimeFixtures(): void {
  beforeAll(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), 'workbay-local-rt-'));
  });

  afterAll(async () => {
    await rm(base, { recursive: true, force: true });
  });

  afterEach(async () => {
    // Stop whatever a test left running, then close its runtimes.
    for (const runtime of runtimes.splice(0)) {
      for (const state of await runtime.list()) await runtime.stop(state.instanceId, { gracePeriodMs: 0 });
      await runtime.close();
    }
  });
}

export async function newRuntime(config: LocalRuntimeConfigInput = {}): Promise<LocalRuntime> {
  const runtime = await LocalRuntime.create({ config: { stateDir: path.join(base, 'state'), ...config } });
  runtimes.push(runtime);
  return runtime;
}

/**
 * A content directory. As root it is owned by a workspace uid of its own, as the daemon's would be (the owner is the
 * workspace's host identity), so that isolated workspaces can write to it.
 */
export async function contentDir(files: Record<string, string> = {}): Promise<string> {
  const dir = path.join(base, `content-${++counter}`);
  await mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  if (isRoot) await chown(dir, 210_000 + counter, 210_000 + counter);
  return dir;
}

/** Where an isolated workspace sees its content. */
export const cwdOf = (dir: string): string => (isRoot ? '/workspace' : dir);

export function spec(overrides: Partial<RuntimeWorkspaceSpec> & { contentDir: string }): RuntimeWorkspaceSpec {
  const n = ++counter;
  return {
    instanceId: `inst-${fileTag}-${n}`,
    workspaceId: `ws-${n}`,
    owner: 'owner-1',
    image: 'workbay/default',
    url: `http://ws-${n}.example`,
    headless: false,
    type: 'regular',
    env: { WORKBAY_WORKSPACE_ID: `ws-${n}` },
    ports: [0],
    className: 'default',
    resources: {},
    ...overrides,
  };
}

export function nextEvent(
  runtime: LocalRuntime,
  type: RuntimeEvent['type'],
  instanceId: string,
  ms = 20_000,
): Promise<RuntimeEvent> {
  return firstValueFrom(
    runtime.events$.pipe(
      filter((e) => e.type === type && e.instanceId === instanceId),
      take(1),
      timeout(ms),
    ),
  );
}

export async function waitForFile(file: string, ms = 15_000): Promise<string> {
  const until = Date.now() + ms;
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text !== undefined && text.endsWith('\n')) return text;
    if (Date.now() > until) throw new Error(`timed out waiting for ${file}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const alive = async (pid: number): Promise<boolean> => {
  const st = await readProcStat(pid);
  return st !== undefined && st.state !== 'Z';
};

/** A shell workspace: `script` runs with cwd = content and the workspace env. */
export const shellImages = (scripts: Record<string, string>): LocalRuntimeConfigInput['images'] =>
  Object.fromEntries(
    Object.entries(scripts).map(([image, script]) => [
      image,
      { command: ['/bin/sh', '-c', script], readiness: { kind: 'none' as const } },
    ]),
  );
