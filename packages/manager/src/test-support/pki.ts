/**
 * TEST ONLY: a throw-away PKI made with the openssl CLI: a CA, and a server and a client certificate signed by it
 * (both valid for 127.0.0.1 and localhost), for the TLS and mutual-TLS tests.
 *
 * @module
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPki {
  readonly dir: string;
  /** Path of a file in the PKI's directory: `ca.pem`, `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem`. */
  pem(name: string): string;
  remove(): Promise<void>;
}

export async function createTestPki(prefix = 'workbay-pki-'): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const ssl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  };
  const x509 = ['-nodes', '-days', '1'];
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    ...x509,
    '-subj',
    '/CN=test-ca',
    '-keyout',
    'ca-key.pem',
    '-out',
    'ca.pem',
  );
  await writeFile(join(dir, 'san.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const name of ['server', 'client']) {
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${name}-key.pem`,
      '-out',
      `${name}.csr`,
    );
    const signedByCa = ['-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', '1'];
    ssl('x509', '-req', '-in', `${name}.csr`, ...signedByCa, '-extfile', 'san.cnf', '-out', `${name}.pem`);
  }
  return {
    dir,
    pem: (name) => join(dir, name),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
