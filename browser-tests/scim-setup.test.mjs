// SCIM setup in a real browser: the page is reached from the Directory, the
// Entra ID and Okta tabs switch (by mouse and keyboard), copy buttons put the
// values on the clipboard, a rotation with a grace period shows the new token
// once while the old one keeps working, and a SCIM request made by the test
// appears as the last request without a reload; a refused token appears in
// the recent errors. Viewers see no rotation and no secret; without the
// clipboard API a copy button selects the value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { base, session, shots, signIn } from './harness.mjs';

const ENTRA = 'Microsoft.Identity.Provisioning/1.0';

async function scimGet(token, path, agent) {
  const response = await fetch(base + '/scim/v2/acme' + path, { headers: { Authorization: 'Bearer ' + token, 'User-Agent': agent } });
  return response.status;
}

test('an administrator sets up SCIM: tabs, copy buttons, rotation with grace, live last request', async () => {
  const { context, page } = await session();
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/directory');
  await page.locator('#scim-setup-link').click();
  await page.waitForURL(/\/t\/acme\/scim-setup$/);
  await page.getByRole('heading', { name: 'SCIM setup', level: 1 }).waitFor();
  const url = base + '/scim/v2/acme';
  assert.equal(await page.locator('#base-url').textContent(), url);

  // Tabs: Entra ID first; Okta by click; back by the arrow key.
  const entra = page.getByRole('tabpanel', { name: 'Microsoft Entra ID' });
  const okta = page.getByRole('tabpanel', { name: 'Okta' });
  assert.ok(await entra.isVisible());
  assert.ok(!(await okta.isVisible()));
  await page.getByRole('tab', { name: 'Okta' }).click();
  assert.ok(await okta.isVisible());
  assert.ok(!(await entra.isVisible()));
  await okta.getByText('SCIM connector base URL').waitFor();
  await okta.getByText('Unique identifier field for users').waitFor();
  await page.getByRole('tab', { name: 'Okta' }).press('ArrowLeft');
  assert.ok(await entra.isVisible());
  assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-entra');

  // Copy buttons put the values on the clipboard.
  await page.getByRole('button', { name: 'Copy the Tenant URL' }).click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), url);
  await page.getByRole('button', { name: 'Copy userName' }).click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), 'userName');
  assert.ok(await page.getByRole('button', { name: 'Copy the Secret Token' }).isDisabled(), 'no token to copy before a rotation');

  // Rotate with a 4-hour grace period: the new token is shown once, the old
  // one keeps working and its remaining grace is shown.
  await page.getByLabel('Keep the previous token working for').selectOption('4');
  await page.getByRole('button', { name: 'Create a new SCIM token' }).click();
  await page.locator('#new-token-box').waitFor();
  const token = await page.locator('#new-token').textContent();
  assert.match(token, /^ent_scim/);
  assert.match(await page.locator('#grace-note').textContent(), /keeps working until/);
  await page.locator('#tokens tr[data-token="grace"]').getByText(/works 3 h 5\d min more/).waitFor();
  await page.getByRole('button', { name: 'Copy the Secret Token' }).click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token);
  await page.screenshot({ path: join(shots, 'scim-setup.png'), fullPage: true });
  assert.equal(await scimGet('demo-acme-scim', '/Users', 'curl/8'), 200, 'the old token works during its grace');

  // Shown once: a reload has no trace of it.
  await page.reload();
  assert.ok(!(await page.content()).includes(token), 'the token is not in the page again');
  assert.ok(!(await page.locator('#new-token-box').isVisible()));

  // A SCIM request with the new token shows up as the last request, live.
  assert.equal(await scimGet(token, '/Users?filter=userName%20eq%20%22nobody%22', ENTRA), 200);
  await page.locator('#last-client').getByText('Microsoft Entra ID').waitFor({ timeout: 12000 });
  assert.equal(await page.locator('#last-request code').textContent(), 'GET /scim/v2/acme/Users');
  await page.locator('#tokens tr[data-token="current"] td').nth(1).filter({ hasNotText: 'never' }).waitFor();

  // A refused token appears in the recent errors, never the token itself.
  assert.equal(await scimGet('not-the-token', '/Users', ENTRA), 401);
  await page.locator('#errors').getByText(/unknown token/).waitFor({ timeout: 12000 });
  assert.ok(!(await page.locator('#errors').textContent()).includes('not-the-token'));

  // The server-side check says what it proves, and what it does not.
  await page.getByRole('button', { name: 'Check from the server' }).click();
  await page.locator('#check-result li[data-ok="true"]').first().waitFor();
  assert.match(await page.locator('#check-result').textContent(), /SCIM endpoint.*SCIM token.*Directory.*Identity provider.*cannot show/s);
  await context.close();
});

test('a viewer sees the setup without rotation or secrets, on a phone', async () => {
  const { context, page } = await session(390);
  // A browser without the clipboard API (plain http on a remote host) gets
  // the value selected instead.
  await page.addInitScript(() => Object.defineProperty(navigator, 'clipboard', { value: undefined }));
  await signIn(page, 'viewer@acme.example');
  await page.goto(base + '/t/acme/scim-setup');
  await page.getByRole('heading', { name: 'SCIM setup', level: 1 }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Create a new SCIM token' }).count(), 0);
  assert.equal(await page.getByRole('button', { name: 'End grace period now' }).count(), 0);
  await page.getByText('Only administrators can create SCIM tokens.').waitFor();
  assert.ok(!(await page.content()).includes('ent_scim'), 'no secret on the page');
  // Nothing wider than the phone's screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, 'no horizontal scroll: ' + overflow + ' px');
  await page.getByRole('button', { name: 'Copy the SCIM base URL' }).click();
  assert.equal(await page.evaluate(() => window.getSelection().toString()), base + '/scim/v2/acme');
  assert.match(await page.locator('#copy-status').textContent(), /press Ctrl\+C/);
  await page.getByRole('tab', { name: 'Okta' }).click();
  await page.screenshot({ path: join(shots, 'scim-setup-phone.png'), fullPage: true });
  await context.close();
});
