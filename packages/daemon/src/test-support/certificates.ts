/** TEST ONLY: a self-signed certificate made with the openssl CLI (scripts/system-deps.mjs installs it). */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

export interface TestCertificate {
  readonly certFile: string;
  readonly keyFile: string;
}

/** A one-day self-signed certificate in `dir`, for `commonName` and the `subjectAltName` given (if any). */
export function makeSelfSignedCertificate(dir: string, commonName: string, subjectAltName?: string): TestCertificate {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      `/CN=${commonName}`,
      ...(subjectAltName ? ['-addext', `subjectAltName=${subjectAltName}`] : []),
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: 'ignore' },
  );
  return { certFile, keyFile };
}
