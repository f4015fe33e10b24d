// Device lists and device actions in a real browser: filters apply to the
// whole fleet before paging (312 devices, "ZDX On" shows every match across
// pages), columns sort, the filtered list exports as CSV, and an admin can
// ask a device to sync now or remove it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { api, base, session, shots, signIn } from './harness.mjs';

const FLEET = 312;
const admin = (method, path, body) => api(method, '/api/v1/tenants/acme' + path, 'demo-acme-admin', body);

/** The whole device list as the export gives it: one object per device. */
async function exported(query = '') {
  const response = await fetch(base + '/api/v1/tenants/acme/devices/export.csv' + query, { headers: { Authorization: 'Bearer demo-acme-admin' } });
  assert.equal(response.status, 200);
  return csvRows(await response.text());
}

function csvRows(text) {
  const [head, ...lines] = text.split('\r\n').filter((l) => l);
  const names = head.split(',');
  return lines.map((line) => Object.fromEntries(line.split(',').map((v, i) => [names[i], v])));
}

// Seeded once, by the first test that needs it (after the harness started the server).
let seeding = null;
const seeded = () => (seeding ??= seed());
async function seed() {
  // Digital Experience for Windows devices only, so that "On" is a third of the fleet.
  const group = await admin('POST', '/device-groups', { name: 'Fleet Windows', os: ['windows'] });
  assert.equal(group.status, 201, JSON.stringify(group.body));
  const saved = await admin('PUT', '/entitlements/digital_experience', { enabled_by_default: false, user_groups: [], device_groups: [group.body.id], logout_on_enable: false });
  assert.equal(saved.status, 200, JSON.stringify(saved.body));
  // Enrollments are limited per key and address (60 a minute): one key per 50 devices.
  const keys = [];
  for (let k = 0; k * 50 < FLEET; k++) {
    const key = await admin('POST', '/enrollment-keys', { name: 'fleet ' + k });
    assert.equal(key.status, 201, JSON.stringify(key.body));
    keys.push(key.body.enrollment_key);
  }
  const oses = ['windows', 'macos', 'linux'];
  for (let i = 0; i < FLEET; i += 24) {
    await Promise.all(Array.from({ length: Math.min(24, FLEET - i) }, async (_, j) => {
      const n = i + j;
      const device = { hostname: 'fleet-' + String(n).padStart(3, '0'), os: oses[n % 3], client_version: '4.' + (n % 5) + '.0', ownership: n % 4 ? 'corporate' : 'personal', posture: { os_version: '14.5' } };
      const answer = await api('POST', '/agent/v1/enroll', '', { enrollment_key: keys[Math.floor(n / 50)], user_name: 'ada@acme.example', device });
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
    }));
  }
}

/** Every host name the list shows, following "Next page" to the end. */
async function allPages(page) {
  const hosts = [];
  for (;;) {
    hosts.push(...(await page.locator('#rows tr td:first-child a, #rows tr td:nth-child(2) a').allTextContents()));
    const next = page.locator('#next-page');
    if (await next.count() === 0) return hosts;
    // Waits for this very page: every later URL also holds a cursor.
    const target = new URL(await next.getAttribute('href'), page.url()).toString();
    await Promise.all([page.waitForURL(target), next.click()]);
  }
}

test('"ZDX On" shows every matching device of 312, across pages; State alone means any service', async () => {
  await seeded();
  const rows = await exported();
  assert.ok(rows.length >= FLEET);
  const zdxOn = rows.filter((r) => r.digital_experience === 'on').map((r) => r.hostname).sort();
  assert.ok(zdxOn.length > 100, 'more matches than one page (100) holds');
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices');
  await page.locator('#service').selectOption('digital_experience');
  await page.locator('#state').selectOption('on');
  await Promise.all([page.waitForURL(/state=on/), page.getByRole('button', { name: 'Show' }).click()]);
  assert.equal(await page.locator('#rows tr').count(), 100, 'a full first page');
  await page.screenshot({ path: join(shots, 'devices-filtered.png'), fullPage: true });
  const shown = await allPages(page);
  assert.equal(new Set(shown).size, shown.length, 'no device on two pages');
  assert.deepEqual([...shown].sort(), zdxOn);

  // State with Service "Any": devices with any service off.
  await page.goto(base + '/t/acme/devices?state=off');
  const services = ['internet_access', 'private_access', 'digital_experience'];
  const anyOff = rows.filter((r) => services.some((s) => r[s] === 'off')).map((r) => r.hostname).sort();
  assert.ok(anyOff.length < rows.length, 'the filter narrows the list');
  assert.deepEqual([...(await allPages(page))].sort(), anyOff);

  // An empty result says which kind of empty it is.
  await page.goto(base + '/t/acme/devices?search=%20no-such-host%20');
  assert.equal(await page.locator('#caption').textContent(), 'No device matches these filters.');
  await context.close();
});

test('columns sort the whole list, and the export follows the filters', async () => {
  await seeded();
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices?os=linux&search=fleet');
  assert.match(await page.locator('#caption').textContent(), /^104 device\(s\)/);
  await Promise.all([page.waitForURL(/sort=hostname&order=desc|order=desc/), page.locator('[data-sort="hostname"]').click()]);
  const first = await page.locator('#rows tr').first().locator('a').first().textContent();
  assert.equal(first, 'fleet-311', 'the last host name of the whole set comes first');
  assert.equal(await page.locator('th[aria-sort="descending"]').count(), 1);
  await Promise.all([page.waitForURL(/sort=last_seen/), page.locator('[data-sort="last_seen"]').click()]);
  assert.equal(await page.locator('th[aria-sort="ascending"]').count(), 1);

  const href = await page.locator('#export').getAttribute('href');
  assert.match(href, /export\.csv\?.*os=linux/);
  assert.ok(!href.includes('cursor'), 'the export is of the whole filtered list');
  const csv = await page.request.get(base + href);
  assert.equal(csv.status(), 200);
  const rows = csvRows(await csv.text());
  assert.equal(rows.length, 104);
  assert.ok(rows.every((r) => r.os === 'linux'));
  await context.close();
});

test('an admin asks a device to sync now and removes it; a viewer sees neither button', async () => {
  await seeded();
  const list = await admin('GET', '/devices?search=fleet-007');
  const device = list.body.items[0];
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices/' + device.id);
  await page.getByRole('button', { name: 'Sync now' }).click();
  await page.getByText(/Asked fleet-007 to sync now/).waitFor();
  await page.screenshot({ path: join(shots, 'device-actions.png'), fullPage: true });
  const audit = await admin('GET', '/audit?limit=5');
  assert.ok(audit.body.items.some((e) => e.action === 'device.resync' && e.target === 'fleet-007'));

  page.once('dialog', (dialog) => dialog.accept());
  await Promise.all([page.waitForURL(/removed=fleet-007/), page.getByRole('button', { name: 'Remove device' }).click()]);
  await page.getByText('Removed fleet-007.').waitFor();
  assert.equal((await admin('GET', '/devices/' + device.id)).status, 404);
  await context.close();

  const viewer = await session();
  await signIn(viewer.page, 'viewer@acme.example');
  const other = (await admin('GET', '/devices?search=fleet-008')).body.items[0];
  await viewer.page.goto(base + '/t/acme/devices/' + other.id);
  assert.equal(await viewer.page.getByRole('button', { name: 'Sync now' }).count(), 0);
  assert.equal(await viewer.page.getByRole('button', { name: 'Remove device' }).count(), 0);
  await viewer.context.close();
});
