// Safe entitlement edits in a real browser: a stale save is merged three-way
// instead of reverting the other administrator, unsaved changes are never lost
// by accident, a save that takes the service from many devices asks first, and
// the small things of the entitlement page (issue 12).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { api, base, previewNumber, session, shots, signIn } from './harness.mjs';

const ADMIN = 'demo-acme-admin';
const ZDX = '/api/v1/tenants/acme/entitlements/digital_experience';

async function reset(path, settings) {
  const current = await api('GET', path, ADMIN);
  const answer = await api('PUT', path, ADMIN, settings, { 'If-Match': current.etag });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

async function pick(page, label, text, name) {
  await page.getByLabel(label).fill(text);
  await page.getByRole('button', { name }).click();
}

test('a stale save is merged with the other administrator\'s change, not over it', async () => {
  await reset(ZDX, { enabled_by_default: false, user_groups: [], device_groups: [], logout_on_enable: false });
  const a = await session();
  const b = await session();
  await signIn(a.page, 'admin@acme.example');
  await signIn(b.page, 'admin@acme.example');
  for (const { page } of [a, b]) await page.goto(base + '/t/acme/entitlements/digital_experience');

  await pick(a.page, 'Add a user group', 'Finance', /^Finance/);
  await a.page.getByRole('button', { name: 'Save' }).click();
  await a.page.getByText(/Saved as config version/).waitFor();

  await pick(b.page, 'Add a user group', 'Mobile', /^Mobile/);
  await b.page.getByRole('button', { name: 'Save' }).click();
  await b.page.getByText('Another administrator saved these settings').waitFor();
  const theirs = await b.page.locator('#conflict-theirs').textContent();
  assert.match(theirs, /Demo Admin|admin@acme\.example/, 'who saved it');
  assert.match(theirs, /saved version \d+ at .+: User groups \+Finance/, 'what they changed and when');
  assert.match(await b.page.locator('#conflict-mine').textContent(), /Your changes: User groups \+Mobile/);
  assert.equal(await b.page.getByRole('button', { name: 'Reload and keep my changes' }).count(), 0);
  await b.page.screenshot({ path: join(shots, 'conflict-merge.png'), fullPage: true });
  await b.page.getByRole('button', { name: 'Merge my changes into theirs' }).click();
  await b.page.locator('#ug-chips').getByText('Finance').waitFor();
  await b.page.locator('#ug-chips').getByText('Mobile').waitFor();
  await b.page.getByRole('button', { name: 'Save' }).click();
  await b.page.getByText(/Saved as config version/).waitFor();

  const saved = await api('GET', ZDX, ADMIN);
  const groups = await api('GET', '/api/v1/tenants/acme/groups?limit=200', ADMIN);
  const name = (id) => groups.body.items.find((g) => g.id === id).display_name;
  assert.deepEqual(saved.body.user_groups.map(name).sort(), ['Finance', 'Mobile']);

  // The audit shows B's save as "+Mobile" only, never "−Finance".
  await b.page.goto(base + '/t/acme/audit?service=digital_experience');
  const newest = await b.page.locator('#versions tr').first().textContent();
  assert.match(newest, /\+Mobile/);
  assert.doesNotMatch(newest, /Finance/);
  await a.context.close();
  await b.context.close();
});

test('a merge asks only when the two changes cannot both apply', async () => {
  await reset(ZDX, { enabled_by_default: false, user_groups: [], device_groups: [], logout_on_enable: false });
  const a = await session();
  const b = await session();
  await signIn(a.page, 'admin@acme.example');
  await signIn(b.page, 'admin@acme.example');
  for (const { page } of [a, b]) await page.goto(base + '/t/acme/entitlements/digital_experience');

  // A turns the service on for everyone; B, stale, adds a group and the logout option.
  await a.page.getByLabel(/Enabled by Default/).check();
  await a.page.getByRole('button', { name: 'Save' }).click();
  await a.page.getByText(/Saved as config version/).waitFor();
  await pick(b.page, 'Add a user group', 'Mobile', /^Mobile/);
  await b.page.getByLabel(/Logout client when/).check();
  await b.page.getByRole('button', { name: 'Save' }).click();
  await b.page.getByText('Another administrator saved these settings').waitFor();
  // Only the toggle against the groups is asked; the logout option just applies.
  assert.equal(await b.page.locator('#conflict-choices fieldset').count(), 1);
  await b.page.getByLabel(/mine \(off, with your group changes\)/).check();
  await b.page.getByRole('button', { name: 'Merge my changes into theirs' }).click();
  await b.page.getByRole('button', { name: 'Save' }).click();
  // Off again for all but Mobile: the merged form is checked against what is stored now.
  await b.page.getByRole('dialog').getByRole('button', { name: 'Save anyway' }).click();
  await b.page.getByText(/Saved as config version/).waitFor();
  const saved = await api('GET', ZDX, ADMIN);
  assert.equal(saved.body.enabled_by_default, false);
  assert.equal(saved.body.logout_on_enable, true);
  assert.equal(saved.body.user_groups.length, 1);
  await a.context.close();
  await b.context.close();
});

test('unsaved changes are not lost by a link or a reload, and a save names its version', async () => {
  await reset(ZDX, { enabled_by_default: false, user_groups: [], device_groups: [], logout_on_enable: false });
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/entitlements/digital_experience');
  await page.getByLabel(/Logout client when/).check();

  // The skip link stays on the page: no question, and the edit stays guarded.
  let early = null;
  page.once('dialog', (dialog) => { early = dialog.message(); dialog.dismiss(); });
  await page.locator('a.skip').focus();
  await page.keyboard.press('Enter');
  assert.equal(early, null);
  page.removeAllListeners('dialog');
  assert.equal(await page.locator('#dirty-hint').textContent(), 'Unsaved changes');

  // An in-portal link asks; staying keeps the edit.
  let asked = null;
  page.once('dialog', (dialog) => { asked = dialog.message(); dialog.dismiss(); });
  await page.getByRole('link', { name: 'Devices', exact: true }).click();
  assert.match(asked || '', /unsaved changes/);
  assert.match(page.url(), /entitlements\/digital_experience/);
  assert.equal(await page.getByLabel(/Logout client when/).isChecked(), true);

  // A reload asks through the browser's own warning.
  let kind = null;
  page.once('dialog', (dialog) => { kind = dialog.type(); dialog.dismiss(); });
  await page.reload({ timeout: 3000 }).catch(() => {});
  assert.equal(kind, 'beforeunload');
  assert.equal(await page.getByLabel(/Logout client when/).isChecked(), true);

  // Saved, nothing asks any more, and a toast names the new version.
  await page.getByRole('button', { name: 'Save' }).click();
  const toast = page.locator('#toast');
  await toast.waitFor();
  const version = (await api('GET', ZDX, ADMIN)).etag.replaceAll('"', '');
  assert.equal(await toast.textContent(), 'Saved Digital Experience Monitoring as config version ' + version + '.');
  await page.screenshot({ path: join(shots, 'entitlements-saved-toast.png') });
  let bothered = false;
  page.on('dialog', (dialog) => { bothered = true; dialog.dismiss(); });
  await page.getByRole('link', { name: 'Devices', exact: true }).click();
  await page.waitForURL(/\/devices/);
  assert.equal(bothered, false);
  await context.close();
});

test('a save that takes the service from more than a tenth of the devices asks first, with the numbers', async () => {
  const ZIA = '/api/v1/tenants/acme/entitlements/internet_access';
  const before = await api('GET', ZIA, ADMIN);
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/entitlements/internet_access');
  await page.getByLabel(/Enabled by Default/).uncheck();
  await page.locator('[data-preview="losing"]').waitFor();
  const losing = await previewNumber(page, 'losing');
  await page.getByRole('button', { name: 'Save' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  const text = await dialog.textContent();
  assert.match(text, /takes Internet & SaaS from \d+ of \d+ enrolled devices \(\d+ %\), used by \d+ users/);
  assert.match(text, new RegExp('used by ' + losing + ' users'));
  await page.screenshot({ path: join(shots, 'entitlements-confirm-loss.png') });
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  assert.equal((await api('GET', ZIA, ADMIN)).etag, before.etag, 'cancel saves nothing');

  await page.getByRole('button', { name: 'Save' }).click();
  await dialog.getByRole('button', { name: 'Save anyway' }).click();
  await page.getByText(/Saved as config version/).waitFor();
  assert.equal((await api('GET', ZIA, ADMIN)).body.enabled_by_default, false);
  await reset(ZIA, before.body);
  await context.close();
});

test('the preview says how many more, and shows old clients only when they matter', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/entitlements/internet_access');
  // Only the logout option: nothing old clients ignore is changing.
  await page.getByLabel(/Logout client when/).check();
  await page.locator('[data-preview="losing"]').waitFor();
  assert.equal(await page.locator('[data-preview="legacy"]').count(), 0);
  // Turning the default off: every device loses it, more than ten.
  await page.getByLabel(/Logout client when/).uncheck();
  await page.getByLabel(/Enabled by Default/).uncheck();
  await page.waitForFunction(() => Number(document.querySelector('[data-preview="losing"] .metric')?.textContent) > 0);
  await page.locator('[data-preview="legacy"]').waitFor();
  const devices = Number(await page.locator('[data-preview="losing"] strong').textContent());
  assert.ok(devices > 10, devices + ' devices lose it');
  assert.equal(await page.locator('[data-more="losing"]').textContent(), 'and ' + (devices - 10) + ' more');
  await context.close();
});

test('viewers see no invitation to change anything, and disabled inputs look disabled', async () => {
  const { context, page } = await session();
  await signIn(page, 'viewer@acme.example');
  await page.goto(base + '/t/acme/entitlements/private_access');
  assert.doesNotMatch(await page.locator('#preview').textContent(), /Change a setting/);
  const search = page.getByLabel('Add a user group');
  assert.equal(await search.isDisabled(), true);
  const style = await search.evaluate((node) => getComputedStyle(node).backgroundColor);
  assert.notEqual(style, 'rgb(255, 255, 255)', 'a disabled input is not white like an active one');
  await context.close();
});

test('the picker says a match is already selected, its focused option shows, and the On badge is readable', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/entitlements/private_access');
  // ZPA selects Engineering in the demo.
  await page.getByLabel('Add a user group').fill('Engineering');
  const results = page.locator('#ug-results');
  await results.getByText(/already selected/).waitFor();
  assert.doesNotMatch(await results.textContent(), /No group matches/);

  await page.getByLabel('Add a user group').fill('Mob');
  await results.getByRole('button').first().waitFor();
  await page.getByLabel('Add a user group').press('ArrowDown');
  const [focused, list] = await page.evaluate(() => [getComputedStyle(document.activeElement).backgroundColor, getComputedStyle(document.getElementById('ug-results')).backgroundColor]);
  assert.notEqual(focused, list, 'the focused option stands out from the list');

  await page.goto(base + '/t/acme/devices');
  const ratio = await page.locator('.badge.on').first().evaluate((node) => {
    const rgb = (text) => text.match(/\d+/g).slice(0, 3).map(Number);
    const lum = ([r, g, b]) => {
      const c = [r, g, b].map((v) => v / 255).map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
      return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    };
    const style = getComputedStyle(node);
    const [a, b] = [lum(rgb(style.color)), lum(rgb(style.backgroundColor))];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  });
  assert.ok(ratio >= 4.5, 'contrast ' + ratio.toFixed(2));
  await context.close();
});

test('restoring a version that selects a deleted group names it and offers a previewed restore without it', async () => {
  const ZPA = '/api/v1/tenants/acme/entitlements/private_access';
  const original = await api('GET', ZPA, ADMIN);
  const temp = await api('POST', '/api/v1/tenants/acme/device-groups', ADMIN, { name: 'Temp laptops', os: ['macos'], ownership: [], posture: [] });
  assert.equal(temp.status, 201);
  const withTemp = { ...original.body, user_groups: original.body.user_groups.slice(0, 1), device_groups: [...original.body.device_groups, temp.body.id] };
  await reset(ZPA, withTemp);
  const version = Number((await api('GET', ZPA, ADMIN)).etag.replaceAll('"', ''));
  await reset(ZPA, original.body);
  const removed = await api('DELETE', '/api/v1/tenants/acme/device-groups/' + temp.body.id, ADMIN);
  assert.ok(removed.status < 300, JSON.stringify(removed.body));

  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/audit?service=private_access');
  const row = page.locator('#versions tr').filter({ has: page.getByRole('cell', { name: String(version), exact: true }) });
  assert.match(await row.textContent(), /\+Temp laptops \(deleted\)/, 'history names the deleted group');
  await row.getByRole('button', { name: 'Restore without deleted groups…' }).click();
  const offer = page.locator('[data-restore="' + version + '"]');
  await offer.waitFor();
  const text = await offer.textContent();
  assert.match(text, /selects Temp laptops, deleted since/);
  assert.match(text, /Gain the service: \d+ users on \d+ devices/);
  await page.screenshot({ path: join(shots, 'restore-without-deleted.png'), fullPage: true });
  await offer.getByRole('button', { name: 'Restore without the deleted groups' }).click();
  await page.waitForLoadState('load');
  await page.locator('#versions tr').first().filter({ hasText: 'Restored from v' + version }).waitFor();
  const now = await api('GET', ZPA, ADMIN);
  assert.deepEqual(now.body.user_groups, withTemp.user_groups);
  assert.deepEqual(now.body.device_groups, original.body.device_groups);
  await reset(ZPA, original.body);
  await context.close();
});

test('the audit page shows older entitlement versions page by page', async () => {
  const LOGOUT = '/api/v1/tenants/acme/entitlements/digital_experience';
  const start = await api('GET', LOGOUT, ADMIN);
  // 205 more versions: more than the audit page shows at first.
  let etag = start.etag;
  for (let i = 0; i < 205; i++) {
    const answer = await api('PUT', LOGOUT, ADMIN, { ...start.body, logout_on_enable: i % 2 === 0 ? !start.body.logout_on_enable : start.body.logout_on_enable }, { 'If-Match': etag });
    assert.equal(answer.status, 200);
    etag = answer.etag;
  }
  const all = [];
  for (let cursor = ''; ;) {
    const page = await api('GET', '/api/v1/tenants/acme/entitlements/history?limit=200' + (cursor ? '&cursor=' + cursor : ''), ADMIN);
    all.push(...page.body.items.map((v) => v.config_version));
    if (!page.body.next_cursor) break;
    cursor = page.body.next_cursor;
  }
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/audit');
  assert.equal(await page.locator('#versions tr').count(), 200);
  await page.getByRole('button', { name: 'Show older versions' }).click();
  await page.waitForFunction((n) => document.querySelectorAll('#versions tr').length === n, all.length);
  const shown = (await page.locator('#versions tr td:first-child').allTextContents()).map(Number);
  assert.deepEqual(shown, all, 'every version once, newest first');
  assert.equal(await page.getByRole('button', { name: 'Show older versions' }).count(), 0);
  await context.close();
});
