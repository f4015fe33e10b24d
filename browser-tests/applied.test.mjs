// What agents applied, in a real browser: the device page shows the server's
// sentence ("policy of config version N applied … after the save; Private
// Applications failed to start (exit 3)") and the failed hook's output as
// text in a <pre>; the devices list's Applied filter shows only the devices
// that have not applied the current version, or only those that have.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { api, base, session, shots, signIn } from './harness.mjs';

const admin = (method, path, body) => api(method, '/api/v1/tenants/acme' + path, 'demo-acme-admin', body);
const OUTPUT = 'starting tunnel\n<b>not bold</b>\n\terror: no route to gateway';

async function enroll(key, hostname) {
  const device = { hostname, os: 'macos', client_version: '4.2.0', ownership: 'corporate', posture: { os_version: '14.5' } };
  const answer = await api('POST', '/agent/v1/enroll', '', { enrollment_key: key, user_name: 'ada@acme.example', device });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return { id: answer.body.device_id, token: answer.body.device_token, device };
}

async function syncApplied(d, applied) {
  const answer = await api('POST', '/agent/v1/sync', d.token, { ...d.device, applied });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

/** Saves a change and returns the new config version. */
async function bump() {
  const before = await admin('GET', '/entitlements');
  const settings = { ...before.body.services.internet_access };
  settings.logout_on_enable = !settings.logout_on_enable;
  const saved = await admin('PUT', '/entitlements/internet_access', settings);
  assert.equal(saved.status, 200, JSON.stringify(saved.body));
  const after = await admin('GET', '/entitlements');
  assert.ok(after.body.config_version > before.body.config_version);
  return after.body.config_version;
}

let seeding = null;
const seeded = () => (seeding ??= seed());
async function seed() {
  const key = await admin('POST', '/enrollment-keys', { name: 'applied' });
  assert.equal(key.status, 201, JSON.stringify(key.body));
  const applied = await enroll(key.body.enrollment_key, 'applied-current');
  const behind = await enroll(key.body.enrollment_key, 'applied-behind');
  const silent = await enroll(key.body.enrollment_key, 'applied-silent');
  const old = await bump();
  await syncApplied(behind, { config_version: old, services: { internet_access: { state: 'running' } } });
  const current = await bump();
  await syncApplied(applied, { config_version: current, services: {
    internet_access: { state: 'running' },
    private_access: { state: 'failed', exit_status: 3, output: OUTPUT },
  } });
  return { applied, behind, silent, current };
}

test('the device page says which version was applied and shows the failed hook output as text', async () => {
  const { applied, current } = await seeded();
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices/' + applied.id);
  const summary = await page.locator('#applied-summary').textContent();
  assert.match(summary, new RegExp('policy of config version ' + current + ' applied \\d+(\\.\\d)? (s|min) after the save'));
  assert.match(summary, /Private Applications failed to start \(exit 3\)/);
  const failed = page.locator('[data-failed="private_access"]');
  assert.match(await failed.locator('h3').textContent(), /Private Applications failed to start \(exit 3\)/);
  assert.equal(await failed.locator('pre').textContent(), OUTPUT);
  assert.equal(await failed.locator('pre b').count(), 0, 'output is text, never markup');
  await page.screenshot({ path: join(shots, 'applied-device.png'), fullPage: true });
  await context.close();
});

test('the Applied filter shows only devices that have not applied the current version, or only those that have', async () => {
  await seeded();
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices');
  await page.locator('#applied').selectOption('stale');
  await Promise.all([page.waitForURL(/applied=stale/), page.getByRole('button', { name: 'Show' }).click()]);
  const stale = await page.locator('#rows tr td:first-child a').allTextContents();
  assert.ok(stale.includes('applied-behind'), stale.join(', '));
  assert.ok(stale.includes('applied-silent'), stale.join(', '));
  assert.ok(!stale.includes('applied-current'), stale.join(', '));
  assert.equal(await page.locator('#applied').inputValue(), 'stale', 'the filter stays chosen');
  assert.match(await page.locator('#caption').textContent(), new RegExp('^' + stale.length + ' device'));
  await page.screenshot({ path: join(shots, 'applied-list-stale.png'), fullPage: true });

  await page.locator('#applied').selectOption('current');
  await Promise.all([page.waitForURL(/applied=current/), page.getByRole('button', { name: 'Show' }).click()]);
  assert.deepEqual(await page.locator('#rows tr td:first-child a').allTextContents(), ['applied-current']);
  assert.match(await page.locator('#rows tr [data-applied]').textContent(), /⚠ failed/);

  // "Any" sends an empty value, which is no filter.
  await page.locator('#applied').selectOption('');
  await Promise.all([page.waitForURL(/applied=&|applied=$/), page.getByRole('button', { name: 'Show' }).click()]);
  const all = await page.locator('#rows tr td:first-child a').allTextContents();
  assert.ok(all.includes('applied-current') && all.includes('applied-behind'), all.join(', '));
  await context.close();
});
