// Test certificates made per run with openssl (EC P-256, valid one day): a
// CA, a server certificate for 127.0.0.1 and "pyexec.test", a client
// certificate "client-1" from the same CA, and a self-signed "rogue" one.

import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export interface Certs {
  dir: string;
  /** PEM contents by file name: ca.pem, server.pem/.key, client.pem/.key, rogue.pem/.key. */
  pem: Record<string, Buffer>;
  /** Absolute path of a file in dir. */
  file(name: string): string;
  remove(): void;
}

export function makeCerts(): Certs {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pyexec-node-tls-'));
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=pyexec-test-ca');
  for (const [name, cn, ext] of [
    ['server', 'pyexec.test', 'subjectAltName=DNS:pyexec.test,IP:127.0.0.1'],
    ['client', 'client-1', 'extendedKeyUsage=clientAuth'],
  ]) {
    fs.writeFileSync(path.join(dir, `${name}.ext`), `${ext}\n`);
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`);
  }
  openssl('req', '-x509', ...ec, '-keyout', 'rogue.key', '-out', 'rogue.pem', '-days', '1', '-subj', '/CN=rogue');
  const pem: Record<string, Buffer> = {};
  for (const f of ['ca.pem', 'server.pem', 'server.key', 'client.pem', 'client.key', 'rogue.pem', 'rogue.key']) {
    pem[f] = fs.readFileSync(path.join(dir, f));
  }
  return {
    dir,
    pem,
    file: (name) => path.join(dir, name),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
