// Sign-in through the company's identity provider: a real OpenID provider
// (npm's oidc-provider, see oidc-provider.mjs) on a loopback port, Chromium
// doing the whole redirect flow, and the refusals: an unmapped person, and ID
// tokens with a wrong audience, a wrong nonce or past their expiry.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
// First: it sets the server's OpenID Connect settings before harness.mjs starts it.
import { CLIENT_ID, CLIENT_SECRET, idpPort } from './oidc-env.mjs';
import { api, base, session, shots } from './harness.mjs';
import { startProvider, PASSWORD } from './oidc-provider.mjs';

// Started at first use: the server's address (and so the redirect URI to
// register) is known only once the harness's own hook has run.
let idp;
async function provider() {
  idp ??= await startProvider({ port: idpPort, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUri: base + '/portal/oidc/callback' });
  return idp;
}
after(async () => { await idp?.close(); });

// From the portal's sign-in page to the provider's form and back.
async function signInThroughIdp(page, login) {
  await provider();
  await page.goto(base + '/login');
  await page.getByRole('link', { name: 'Sign in with Test IdP' }).click();
  await page.getByLabel('Username').fill(login);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in to Test IdP' }).click();
  await page.waitForURL((url) => url.origin === base);
}

test('an admin of the IdP group signs in through the whole redirect flow with the mapped tenant and role', async () => {
  const { context, page } = await session();
  await page.goto(base + '/login');
  await page.screenshot({ path: join(shots, 'login-sso.png') });
  await signInThroughIdp(page, 'sso-admin');
  await page.waitForURL(/\/t\/acme\//);
  assert.equal(new URL(page.url()).pathname, '/t/acme/entitlements/private_access');
  assert.equal(await page.locator('.who').textContent(), 'sso-admin@acme.example · admin');
  // The session is the same as a password sign-in's: the API answers with it.
  const audit = await api('GET', '/api/v1/tenants/acme/audit', 'demo-acme-admin');
  const entry = audit.body.items.find((e) => e.action === 'sign_in.success' && e.target === 'sso-admin@acme.example');
  assert.ok(entry, 'the sign-in is audited: ' + JSON.stringify(audit.body.items.slice(0, 3)));
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(base + '/login');
  await context.close();
});

test('a page opened while signed out is where the IdP sign-in lands', async () => {
  await provider();
  const { context, page } = await session();
  await page.goto(base + '/t/acme/audit?action=device.');
  await page.waitForURL(/\/login\?next=/);
  await page.getByRole('link', { name: 'Sign in with Test IdP' }).click();
  await page.getByLabel('Username').fill('sso-admin');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in to Test IdP' }).click();
  await page.waitForURL(/\/t\/acme\/audit\?action=device\.$/);
  await context.close();
});

test('a person of the company domain outside the admin group gets the viewer role', async () => {
  const { context, page } = await session();
  await signInThroughIdp(page, 'sso-viewer');
  await page.waitForURL(/\/t\/acme\//);
  assert.equal(await page.locator('.who').textContent(), 'sso-viewer@acme.example · viewer');
  await context.close();
});

async function refusedPage(login, mode) {
  (await provider()).tamper.mode = mode;
  const { context, page } = await session();
  try {
    await signInThroughIdp(page, login);
    await page.locator('#sso-reason').waitFor();
    const reason = await page.locator('#sso-reason').textContent();
    assert.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Sign-in refused');
    // No session was made.
    assert.equal((await context.cookies()).some((c) => c.name === 'entitle_session'), false);
    return { page, reason };
  } finally {
    idp.tamper.mode = null;
    await context.close().catch(() => {});
  }
}

test('an unmapped person is refused with a clear page, never given a tenant', async () => {
  const { context, page } = await session();
  await signInThroughIdp(page, 'stranger');
  await page.locator('#sso-reason').waitFor();
  assert.match(await page.locator('#sso-reason').textContent(), /stranger@elsewhere\.example is not given access to entitle: no mapping/);
  await page.screenshot({ path: join(shots, 'sso-refused.png') });
  await context.close();
});

test('an ID token for another audience is refused', async () => {
  const { reason } = await refusedPage('sso-admin', 'audience');
  assert.match(reason, /issued for another client \(audience\)/);
});

test('an ID token with another sign-in\'s nonce is refused', async () => {
  const { reason } = await refusedPage('sso-admin', 'nonce');
  assert.match(reason, /nonce is not this sign-in's/);
});

test('an expired ID token is refused', async () => {
  const { reason } = await refusedPage('sso-admin', 'expired');
  assert.match(reason, /it has expired/);
});

test('a callback not started in this browser is refused', async () => {
  const response = await fetch(base + '/portal/oidc/callback?code=stolen&state=guessed');
  assert.equal(response.status, 400);
  assert.match(await response.text(), /not started in this browser/);
});
