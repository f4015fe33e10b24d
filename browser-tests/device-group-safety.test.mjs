// Device groups in a real browser: an edit shows which devices lose which
// service before it is saved and asks before taking services away; a delete
// says it fails closed; an error from the API is shown once, beside its
// field, in words an administrator understands.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { api, base, session, shots, signIn } from './harness.mjs';

const admin = (method, path, body) => api(method, '/api/v1/tenants/acme' + path, 'demo-acme-admin', body);
const groupNamed = async (name) => (await admin('GET', '/device-groups')).body.items.find((g) => g.name === name);

async function editing(page, name) {
  await page.goto(base + '/t/acme/device-groups');
  await page.locator('#rows tr', { hasText: name }).getByRole('button', { name: 'Edit' }).click();
  await page.locator('#editor-title', { hasText: 'Edit ' + name }).waitFor();
}

const visibleErrors = (page) => page.locator('#main .error:visible').allTextContents();

test('an error is shown once, beside its field, in words an administrator understands', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await editing(page, 'Phones');
  await page.getByRole('button', { name: 'Add a fact' }).click();
  const row = page.locator('#posture .row').last();
  await row.getByLabel('Fact').fill('os_version');
  await row.getByLabel('Test').selectOption('gte');
  await row.getByLabel('Value').fill('newest');
  await row.locator('.field-error:visible').waitFor();
  await page.getByRole('button', { name: 'Save' }).click();
  await page.waitForTimeout(300);
  let errors = await visibleErrors(page);
  assert.deepEqual(errors, ['“At least (version)” compares versions: enter a version such as 14.5.'], 'once, in plain words');
  assert.equal(await row.getByLabel('Value').getAttribute('aria-invalid'), 'true');
  assert.doesNotMatch(await page.locator('#match-count').textContent(), /posture requirement/);
  await page.screenshot({ path: join(shots, 'device-group-error.png'), fullPage: true });

  // A taken name: beside the name, once.
  await row.getByRole('button', { name: 'Remove' }).click();
  await page.getByLabel('Name').fill('corporate laptops');
  await page.waitForTimeout(400);
  await page.getByRole('button', { name: 'Save' }).click();
  await page.locator('#name-error:visible').waitFor();
  errors = await visibleErrors(page);
  assert.deepEqual(errors, ['Another device group is already called “corporate laptops”. Choose a different name.']);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'name', 'focus moves to the field');
  await context.close();
});

test('deleting a used device group says it fails closed and shows who loses what', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/device-groups');
  await page.locator('#rows tr', { hasText: 'Corporate laptops' }).getByRole('button', { name: 'Delete' }).click();
  const dialog = page.locator('#confirm-change');
  await dialog.waitFor();
  assert.match(await dialog.textContent(), /fails closed/);
  assert.match(await dialog.locator('[data-impact="private_access:losing"]').textContent(), /would lose Private Applications/);
  assert.match(await dialog.locator('[data-more="losing"]').textContent(), /^and \d+ more$/);
  await page.screenshot({ path: join(shots, 'device-group-delete.png') });
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  assert.ok(await groupNamed('Corporate laptops'), 'Cancel deletes nothing');
  await context.close();
});

test('an edit that takes a service from devices shows the impact and needs a confirmation', async () => {
  const before = await groupNamed('Corporate laptops');
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await editing(page, 'Corporate laptops');
  await page.locator('#os-macos').uncheck();
  await page.locator('#os-linux').uncheck();
  const losing = page.locator('#impact [data-impact="private_access:losing"]');
  await losing.waitFor();
  assert.match(await losing.textContent(), /^\d+ devices? \(\d+ users?\) would lose Private Applications:$/);
  await page.screenshot({ path: join(shots, 'device-group-impact.png'), fullPage: true });

  await page.getByRole('button', { name: 'Save' }).click();
  const dialog = page.locator('#confirm-change');
  await dialog.waitFor();
  assert.match(await dialog.locator('h2').textContent(), /^Take services from \d+ devices?\?$/);
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  assert.deepEqual((await groupNamed('Corporate laptops')).os, before.os, 'Cancel saves nothing');

  await page.getByRole('button', { name: 'Save' }).click();
  await dialog.waitFor();
  await Promise.all([page.waitForEvent('load'), dialog.getByRole('button', { name: 'Save anyway' }).click()]);
  assert.deepEqual((await groupNamed('Corporate laptops')).os, ['windows']);
  await context.close();
});
