// The portal's everyday manners in a real browser: a page opened while signed
// out is where sign-in lands, an unknown address gets a page with a way back,
// the theme follows the operating system, and times name their zone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { api, base, session, shots, signIn } from './harness.mjs';

test('a page opened while signed out is the page shown after signing in', async () => {
  const { context, page } = await session();
  await page.goto(base + '/t/acme/devices?q=laptop');
  await page.waitForURL(/\/login\?next=/);
  await page.getByLabel('Email').fill('admin@acme.example');
  await page.getByLabel('Password').fill('entitle-demo');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/\/t\/acme\/devices\?q=laptop$/);
  await page.getByRole('heading', { name: 'Devices' }).waitFor();
  await context.close();
});

test('a sign-in never sends the browser to another site', async () => {
  const { context, page } = await session();
  await page.goto(base + '/login?next=' + encodeURIComponent('//evil.example/t/acme'));
  await page.getByLabel('Email').fill('admin@acme.example');
  await page.getByLabel('Password').fill('entitle-demo');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/\/t\/acme\/entitlements\//);
  assert.equal(new URL(page.url()).host, new URL(base).host);
  await context.close();
});

test('an unknown portal address shows a page with a way back, not a bare 404', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  const response = await page.goto(base + '/t/acme/no-such-page');
  assert.equal(response.status(), 404);
  await page.getByRole('heading', { name: 'Page not found' }).waitFor();
  await page.getByRole('link', { name: 'Back to entitle' }).click();
  await page.waitForURL(/\/t\/acme\/entitlements\//);
  await context.close();
});

const background = (page) => page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
const brightness = (rgb) => { const [r, g, b] = rgb.match(/\d+/g).map(Number); return (r + g + b) / 3; };

test('the portal follows the operating system\'s dark theme', async () => {
  const light = await session(1280, { colorScheme: 'light' });
  await signIn(light.page, 'admin@acme.example');
  assert.ok(brightness(await background(light.page)) > 200, 'light theme on a light system');
  await light.context.close();

  const dark = await session(1280, { colorScheme: 'dark' });
  await signIn(dark.page, 'admin@acme.example');
  assert.ok(brightness(await background(dark.page)) < 60, 'dark theme on a dark system');
  // Cards, fields and text follow too, so nothing is dark on dark.
  const card = await dark.page.locator('.card').first().evaluate((node) => getComputedStyle(node).backgroundColor);
  assert.ok(brightness(card) < 60, 'cards are dark');
  const ink = await dark.page.locator('h1').evaluate((node) => getComputedStyle(node).color);
  assert.ok(brightness(ink) > 180, 'headings are light');
  await dark.page.screenshot({ path: join(shots, 'entitlements-dark.png'), fullPage: true });
  await dark.page.goto(base + '/t/acme/devices');
  await dark.page.screenshot({ path: join(shots, 'devices-dark.png'), fullPage: true });
  await dark.context.close();
});

test('times are shown in the viewer\'s time zone, with the zone named', async () => {
  const devices = await api('GET', '/api/v1/tenants/acme/devices?hostname=niklaus-laptop', 'demo-acme-admin');
  const laptop = devices.body.items[0];
  const { context, page } = await session(1280, { timezoneId: 'Asia/Tokyo', locale: 'en-US' });
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices/' + laptop.id);
  const enrolled = await page.locator('#report tr', { hasText: 'Enrolled' }).locator('td').textContent();
  assert.match(enrolled, /GMT\+9/, 'the zone is named');
  const expected = new Date(laptop.enrolled_at).toLocaleString('en-US', { timeZone: 'Asia/Tokyo', hour: '2-digit', minute: '2-digit' });
  assert.ok(enrolled.includes(expected.replace(/\s?[AP]M$/, '')), 'the time is in the viewer\'s zone: ' + enrolled + ' vs ' + expected);
  await context.close();
});

test('a rollback in "All activity" says which version it restored', async () => {
  const path = '/api/v1/tenants/acme/entitlements/digital_experience';
  const current = await api('GET', path, 'demo-acme-admin');
  const flipped = await api('PUT', path, 'demo-acme-admin', { ...current.body, enabled_by_default: !current.body.enabled_by_default }, { 'If-Match': current.etag });
  assert.equal(flipped.status, 200);
  const flippedVersion = (await api('GET', '/api/v1/tenants/acme/entitlements', 'demo-acme-admin')).body.config_version;
  const back = await api('PUT', path, 'demo-acme-admin', { ...current.body, enabled_by_default: current.body.enabled_by_default }, { 'If-Match': flipped.etag });
  assert.equal(back.status, 200);
  const restored = await api('POST', '/api/v1/tenants/acme/entitlements/rollback', 'demo-acme-admin', { config_version: flippedVersion });
  assert.equal(restored.status, 200, JSON.stringify(restored.body));

  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/audit?action=entitlement.rollback');
  const row = page.locator('#audit tr').first();
  await row.waitFor();
  assert.match(await row.textContent(), new RegExp('Restored from v' + flippedVersion));
  assert.match(await row.textContent(), /Enabled by Default: (on|off) → (on|off)/);
  await context.close();
});
