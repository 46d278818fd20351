/**
 * TEST ONLY: what the daemon-*.spec.ts files that drive one daemon over gRPC share: the daemon and its test git
 * repository (`daemonWithRepo`, which registers a `beforeAll` and an `afterAll`), and two assertions.
 */
import { afterAll, beforeAll, expect } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { createRepo, scratch } from './git-server.js';
import type { TestRepo } from './git-server.js';
import { startTestDaemon } from './daemon-harness.js';
import type { TestDaemon } from './daemon-harness.js';

export { exists } from './outcomes.js';

export async function expectError(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isWorkbayError(error, code as never), `expected ${code}, got ${String(error)}`).toBe(true);
  if (pattern) expect((error as Error).message).toMatch(pattern);
  return error as Error;
}

/**
 * Call at the top of a describe. Before its tests: a scratch directory with a test repository (`createRepo`) and a
 * daemon; after them, both removed. `t` is filled in by that `beforeAll` (use it inside tests and hooks only);
 * `gitInit` makes an initializer cloning the repository, with `extra` fields in its spec.
 */
export function daemonWithRepo() {
  const t = {} as TestDaemon;
  let repos: Awaited<ReturnType<typeof scratch>>;
  let repo: TestRepo;

  beforeAll(async () => {
    repos = await scratch();
    repo = await createRepo(repos.path);
    Object.assign(t, await startTestDaemon());
  });
  afterAll(async () => {
    await t.cleanup();
    await repos.cleanup();
  });

  const gitInit = (extra: Record<string, unknown> = {}) => ({
    spec: { $case: 'git' as const, value: { remoteUri: repo.url, ...extra } },
  });
  return { t, gitInit };
}
