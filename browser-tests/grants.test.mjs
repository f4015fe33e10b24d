// Grants and scheduled changes in a real browser: an admin grants a user a
// service for 8 hours with a justification, sees it active, and revokes it;
// schedules an entitlement save for tomorrow from the entitlement tab, finds
// it pending on the Grants page, and cancels it. Nothing changes the settings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { base, session, shots, signIn } from './harness.mjs';

const ADMIN_EMAIL = 'admin@acme.example';

test('an admin grants a service for 8 hours and revokes it', async () => {
  const { context, page } = await session();
  await signIn(page, ADMIN_EMAIL);
  await page.getByRole('link', { name: 'Grants', exact: true }).click();
  await page.getByRole('heading', { name: 'Grants and scheduled changes', level: 1 }).waitFor();
  assert.match(await page.locator('#grants').textContent(), /No grants yet/);

  // A justification is required: the error sits beside its field.
  await page.getByLabel('User', { exact: true }).fill('ada@acme.example');
  await page.getByLabel('Service').selectOption('private_access');
  await page.getByRole('button', { name: 'Grant', exact: true }).click();
  await page.locator('#grant-justification-error').waitFor();
  assert.match(await page.locator('#grant-justification-error').textContent(), /justification/);

  await page.getByLabel('Justification').fill('incident 4711: <b>on call</b>');
  await page.getByRole('button', { name: 'Grant', exact: true }).click();
  const row = page.locator('#grants tr', { hasText: 'ada@acme.example' });
  await row.locator('.badge', { hasText: 'active' }).waitFor();
  // Hostile-looking text stays text.
  assert.match(await row.textContent(), /incident 4711: <b>on call<\/b>/);
  assert.equal(await page.locator('#grants b').count(), 0);
  await page.screenshot({ path: join(shots, 'grants.png'), fullPage: true });

  page.once('dialog', (dialog) => dialog.accept());
  await row.getByRole('button', { name: /Revoke the grant/ }).click();
  await page.locator('#grants tr .badge', { hasText: 'revoked' }).waitFor();
  assert.equal(await page.locator('#grants tr').first().getByRole('button').count(), 0);
  await context.close();
});

test('a save scheduled from the entitlement tab is pending on the Grants page and can be cancelled', async () => {
  const { context, page } = await session();
  await signIn(page, ADMIN_EMAIL);
  await page.goto(base + '/t/acme/entitlements/digital_experience');
  const before = await page.locator('#enabled-by-default').isChecked();
  await page.locator('#enabled-by-default').setChecked(!before);
  const tomorrow = new Date(Date.now() + 24 * 3600 * 1000);
  const local = new Date(tomorrow.getTime() - tomorrow.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  await page.getByLabel('Apply at (empty: now)').fill(local);
  await page.getByRole('button', { name: 'Save' }).click();
  await page.locator('#save-status', { hasText: 'Scheduled for' }).waitFor();

  // Nothing changed yet.
  await page.reload();
  assert.equal(await page.locator('#enabled-by-default').isChecked(), before);

  await page.getByRole('link', { name: 'Grants', exact: true }).click();
  const row = page.locator('#changes tr', { hasText: 'pending' });
  await row.waitFor();
  assert.match(await row.textContent(), /admin@acme\.example/);
  await page.screenshot({ path: join(shots, 'scheduled-changes.png'), fullPage: true });
  page.once('dialog', (dialog) => dialog.accept());
  await row.getByRole('button', { name: /Cancel the change/ }).click();
  await page.locator('#changes tr .badge', { hasText: 'cancelled' }).waitFor();
  await context.close();
});
