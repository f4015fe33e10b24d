// Configures the demo server of oidc.test.mjs for sign-in through the test
// provider. Imported before harness.mjs: this module's top-level await
// finishes before the harness registers the hook that starts the server, so
// the server sees these variables when it starts.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

export const CLIENT_ID = 'entitle-portal';
export const CLIENT_SECRET = 'a-test-client-secret-made-for-this-run';

export const idpPort = await new Promise((resolve, reject) => {
  const probe = net.createServer();
  probe.listen(0, '127.0.0.1', () => { const { port } = probe.address(); probe.close(() => resolve(port)); });
  probe.on('error', reject);
});
const dir = mkdtempSync(join(tmpdir(), 'entitle-oidc-'));
writeFileSync(join(dir, 'secret'), CLIENT_SECRET + '\n');
writeFileSync(join(dir, 'map'), '# who gets what; the first rule that matches wins\ngroup:Entitle Admins=acme:admin\ndomain:acme.example=acme:viewer\n');
Object.assign(process.env, {
  ENTITLE_OIDC_ISSUER: 'http://127.0.0.1:' + idpPort,
  ENTITLE_OIDC_CLIENT_ID: CLIENT_ID,
  ENTITLE_OIDC_CLIENT_SECRET_FILE: join(dir, 'secret'),
  ENTITLE_OIDC_MAP_FILE: join(dir, 'map'),
  ENTITLE_OIDC_NAME: 'Test IdP',
});
