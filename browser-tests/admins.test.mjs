// The Admins page in a real browser: an admin invites a viewer, who opens the
// link in a fresh browser, chooses a password, is signed in and sees no admin
// action; a used link shows a page that says so; an API token's secret is
// shown once and dies when revoked; "Sign out everywhere" signs out a second
// browser of the same account.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { api, base, browser, session, shots, signIn } from './harness.mjs';

const ADMIN_EMAIL = 'admin@acme.example';
const INVITEE = 'new.viewer@acme.example';
const PASSWORD = 'a long invitee passphrase';
let link;

async function openAdmins(page) {
  await page.goto(base + '/t/acme/admins');
  await page.getByRole('heading', { name: 'Admins', level: 1 }).waitFor();
}

test('an admin invites a viewer, who sets a password and sees no admin action', async () => {
  const { context, page } = await session();
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  await signIn(page, ADMIN_EMAIL);
  await page.getByRole('link', { name: 'Admins' }).click();
  await page.getByRole('heading', { name: 'Admins', level: 1 }).waitFor();
  await page.screenshot({ path: join(shots, 'admins.png'), fullPage: true });

  await page.getByLabel('Email').fill(INVITEE);
  await page.getByLabel('Role', { exact: true }).first().selectOption('viewer');
  await page.getByRole('button', { name: 'Invite', exact: true }).click();
  await page.locator('#invite-result').waitFor();
  link = await page.locator('#invite-link').inputValue();
  assert.match(link, /^http:\/\/127\.0\.0\.1:\d+\/portal\/invitation#ent_invite_[0-9a-f]{64}$/);
  assert.match(await page.locator('#invite-for').textContent(), /Send this link to new\.viewer@acme\.example/);
  await page.getByRole('button', { name: 'Copy link' }).click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), link);
  const row = page.locator('tr[data-account="' + INVITEE + '"]');
  assert.match(await row.textContent(), /invited/);
  await page.screenshot({ path: join(shots, 'admins-invited.png'), fullPage: true });

  // The invitee, in a browser that has never seen entitle, on a phone.
  const invitee = await session(390);
  await invitee.page.goto(link);
  await invitee.page.getByRole('heading', { name: 'Welcome to entitle' }).waitFor();
  assert.equal(new URL(invitee.page.url()).hash, '', 'the secret leaves the address bar');
  assert.match(await invitee.page.locator('#invitation-status').textContent(), /new\.viewer@acme\.example/);
  await invitee.page.getByLabel('Choose a password').fill('short');
  await invitee.page.getByLabel('Type it again').fill('short');
  await invitee.page.getByRole('button', { name: 'Set password and sign in' }).click();
  assert.match(await invitee.page.locator('#invitation-error').textContent(), /12 characters/);
  await invitee.page.getByLabel('Choose a password').fill(PASSWORD);
  await invitee.page.getByLabel('Type it again').fill(PASSWORD);
  await invitee.page.screenshot({ path: join(shots, 'invitation.png'), fullPage: true });
  await invitee.page.getByRole('button', { name: 'Set password and sign in' }).click();
  await invitee.page.waitForURL(/\/t\/acme\/entitlements\//);

  // A viewer sees their own sessions and nothing to change.
  await openAdmins(invitee.page);
  for (const name of ['Invite', 'Create token', 'Disable', 'Enable', 'Revoke', 'Make admin', 'Make viewer', 'New link']) {
    assert.equal(await invitee.page.getByRole('button', { name }).count(), 0, name + ' is not offered to a viewer');
  }
  assert.equal(await invitee.page.locator('#accounts, #tokens').count(), 0);
  assert.ok(await invitee.page.locator('#viewer-note').isVisible());
  assert.equal(await invitee.page.locator('#session-rows tr').count(), 1);
  assert.match(await invitee.page.locator('#session-rows').textContent(), /this session/);
  await invitee.page.screenshot({ path: join(shots, 'admins-viewer-phone.png'), fullPage: true });
  await invitee.context.close();

  // The admin's list now shows the account active, signed in once.
  await page.reload();
  assert.match(await page.locator('tr[data-account="' + INVITEE + '"]').textContent(), /active/);
  await context.close();
});

test('a used invitation link says so, on a page, not an error dump', async () => {
  // Not through `session()`: the 410 this provokes is logged by Chromium.
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(link);
  await page.getByRole('heading', { name: 'This invitation link does not work' }).waitFor();
  assert.match(await page.locator('#invitation-status').textContent(), /already used/);
  assert.ok(await page.getByRole('link', { name: 'Go to sign-in' }).isVisible());
  assert.equal(await page.locator('#invitation').isVisible(), false);
  await page.screenshot({ path: join(shots, 'invitation-used.png') });
  await context.close();
});

test('a new token is shown once, works, and stops at once when revoked', async () => {
  const { context, page } = await session();
  await signIn(page, ADMIN_EMAIL);
  await openAdmins(page);
  await page.getByLabel('Name').fill('ci-pipeline');
  await page.locator('#token-role').selectOption('viewer');
  await page.getByLabel('Expires').selectOption('30');
  await page.getByRole('button', { name: 'Create token' }).click();
  await page.locator('#token-result').waitFor();
  const secret = await page.locator('#token-secret').inputValue();
  assert.match(secret, /^ent_viewer_[0-9a-f]{64}$/);
  assert.equal((await api('GET', '/api/v1/tenants/acme', secret)).status, 200);
  await page.screenshot({ path: join(shots, 'admins-token-created.png'), fullPage: true });

  await page.reload();
  assert.ok(!(await page.content()).includes(secret), 'the secret is never shown again');
  const row = page.locator('tr[data-token="ci-pipeline"]');
  assert.match(await row.textContent(), /viewer/);
  assert.match(await row.textContent(), /active/);
  assert.notEqual(await row.locator('td').nth(4).textContent(), 'never', 'it expires');
  assert.notEqual(await row.locator('td').nth(5).textContent(), 'never', 'its use above is noted');
  assert.equal(await row.locator('td').nth(2).textContent(), ADMIN_EMAIL);

  page.once('dialog', (dialog) => dialog.accept());
  await row.getByRole('button', { name: 'Revoke ci-pipeline' }).click();
  await page.locator('tr[data-token="ci-pipeline"] .badge', { hasText: 'revoked' }).waitFor();
  assert.equal(await row.getByRole('button').count(), 0);
  const refused = await api('GET', '/api/v1/tenants/acme', secret);
  assert.equal(refused.status, 401);
  assert.match(refused.body.error.message, /revoked/);
  await context.close();
});

test('sign out everywhere signs out a second browser of the same account', async () => {
  const first = await session();
  const second = await session();
  await signIn(first.page, ADMIN_EMAIL);
  await signIn(second.page, ADMIN_EMAIL);
  await openAdmins(first.page);
  const mine = first.page.locator('#session-rows tr', { hasText: ADMIN_EMAIL });
  assert.ok(await mine.count() >= 2, 'both browsers are listed');
  assert.equal(await first.page.locator('#session-rows .current-mark').count(), 1);
  await first.page.screenshot({ path: join(shots, 'admins-sessions.png'), fullPage: true });

  first.page.once('dialog', (dialog) => dialog.accept());
  await Promise.all([first.page.waitForURL(/\/login$/), first.page.getByRole('button', { name: 'Sign out everywhere' }).click()]);
  await second.page.goto(base + '/t/acme/admins');
  await second.page.waitForURL(/\/login\?next=%2Ft%2Facme%2Fadmins$/);
  await first.context.close();
  await second.context.close();
});
