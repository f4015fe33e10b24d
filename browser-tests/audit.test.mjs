// The audit log page in a real browser: filters run over the whole log (an
// event older than the newest 200 is found), "Load more" follows the cursor,
// times are the viewer's with the zone named, and the export links download
// exactly the filtered rows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, base, browser, shots, signIn } from './harness.mjs';

const ADMIN = 'demo-acme-admin';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Every item of a filtered audit list, through all its pages. */
async function listAll(filter) {
  const items = [];
  let cursor = null;
  do {
    const params = new URLSearchParams(filter);
    params.set('limit', '200');
    if (cursor) params.set('cursor', cursor);
    const page = await api('GET', '/api/v1/tenants/acme/audit?' + params, ADMIN);
    assert.equal(page.status, 200);
    items.push(...page.body.items);
    cursor = page.body.next_cursor;
  } while (cursor);
  return items;
}

/** RFC 4180 with every field quoted, as the export writes it. */
function parseCsv(text) {
  const records = [];
  let record = [];
  let i = 0;
  while (i < text.length) {
    assert.equal(text[i], '"', 'a field opens with a quote at ' + i);
    i++;
    let field = '';
    for (;;) {
      if (text[i] === '"' && text[i + 1] === '"') { field += '"'; i += 2; } else if (text[i] === '"') { i++; break; } else { field += text[i++]; }
    }
    record.push(field);
    if (text[i] === ',') i++;
    else { assert.equal(text.slice(i, i + 2), '\r\n'); i += 2; records.push(record); record = []; }
  }
  return records;
}

// Kolkata is UTC+05:30: a time shown there cannot be mistaken for UTC.
async function kolkataSession() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: 'Asia/Kolkata', locale: 'en-GB' });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()); });
  return { context, page, errors };
}

let needleAt;

test('filters find an event older than the newest 200, in the viewer\'s time zone', async () => {
  // A second of quiet on each side of the event, as the inputs have whole seconds.
  await sleep(1100);
  const from = new Date();
  const needle = await api('POST', '/api/v1/tenants/acme/device-groups', ADMIN, { name: 'Needle laptops', os: ['macos'], ownership: [], posture: [] });
  assert.equal(needle.status, 201);
  const to = new Date(Date.now() + 1000);
  await sleep(2100);
  // 250 later events bury it below the newest 200.
  const churn = await api('POST', '/api/v1/tenants/acme/device-groups', ADMIN, { name: 'Churn', os: ['windows'], ownership: [], posture: [] });
  for (let i = 0; i < 250; i++) {
    const answer = await api('PUT', '/api/v1/tenants/acme/device-groups/' + churn.body.id, ADMIN, { name: 'Churn ' + (i % 2), os: ['windows'], ownership: [], posture: [] });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  }
  const newest = await api('GET', '/api/v1/tenants/acme/audit?limit=200', ADMIN);
  assert.ok(!JSON.stringify(newest.body).includes('Needle laptops'), 'the event is older than the newest 200');
  needleAt = (await listAll({ action: 'device_group.create', target: 'Needle laptops' }))[0].at;

  const { context, page, errors } = await kolkataSession();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/audit');
  await page.locator('#audit tr').first().waitFor();
  assert.equal(await page.locator('#audit tr').count(), 50);
  assert.match(await page.locator('#time-zone').textContent(), /Asia\/Calcutta|Asia\/Kolkata/);
  assert.doesNotMatch(await page.locator('#audit').textContent(), /Needle laptops/);
  // "Load more" follows the cursor.
  await page.getByRole('button', { name: 'Load more' }).click();
  await page.waitForFunction(() => document.querySelectorAll('#audit tr').length === 100);

  // Free text, case-insensitive.
  await page.getByLabel('Text').fill('NEEDLE');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/q=NEEDLE/);
  await page.locator('#audit tr').first().waitFor();
  assert.equal(await page.locator('#audit tr').count(), 1);
  const cells = await page.locator('#audit tr td').allTextContents();
  assert.equal(cells[2], 'device_group.create');
  assert.equal(cells[3], 'Needle laptops');
  // Shown in Kolkata time (+05:30), with the zone named.
  const expected = new Date(needleAt).toLocaleString('en-GB', { timeZone: 'Asia/Kolkata', year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short' });
  assert.equal(cells[0], expected);
  assert.match(cells[0], /GMT\+5:30|IST/);
  assert.match(await page.locator('#audit-status').textContent(), /1 event/);

  // A time range in the viewer's local time, with an action prefix.
  const local = (date) => page.evaluate((iso) => {
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + 'T' + pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }, date.toISOString());
  await page.getByLabel('Text').fill('');
  await page.getByLabel('Action').fill('device_group.');
  await page.getByLabel('From').fill(await local(from));
  await page.getByLabel('To').fill(await local(to));
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/action=device_group/);
  const url = new URL(page.url());
  assert.equal(new Date(url.searchParams.get('from')).getTime(), Math.floor(from.getTime() / 1000) * 1000, 'the address carries UTC');
  await page.locator('#audit tr').first().waitFor();
  assert.deepEqual(await page.locator('#audit tr td:nth-child(4)').allTextContents(), ['Needle laptops']);
  // Compared as times: Chromium shows "13:24" for "13:24:00", dropping zero seconds.
  const shown = await page.getByLabel('From').inputValue();
  assert.equal(new Date(shown).getTime(), new Date(await local(from)).getTime(), 'the filter is shown as it was set: ' + shown);
  await page.screenshot({ path: join(shots, 'audit-filtered.png'), fullPage: true });

  // A filter that matches nothing says so.
  await page.goto(base + '/t/acme/audit?q=' + encodeURIComponent('no such thing anywhere'));
  await page.getByText('No event matches these filters.').waitFor();
  // A bad time is refused in words, not a blank table.
  await page.goto(base + '/t/acme/audit?from=yesterday');
  await page.locator('#audit-status .error').filter({ hasText: 'RFC 3339' }).waitFor();
  assert.deepEqual(errors.filter((e) => !/status of 400/.test(e)), []);
  await context.close();
});

test('the export links download exactly the filtered rows', async () => {
  const { context, page, errors } = await kolkataSession();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/audit?action=device_group.update&q=churn%201');
  await page.locator('#audit tr').first().waitFor();
  const expected = await listAll({ action: 'device_group.update', q: 'churn 1' });
  assert.ok(expected.length > 100, 'more rows than one page: ' + expected.length);

  const [csvDownload] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Export CSV' }).click()]);
  assert.match(csvDownload.suggestedFilename(), /^audit-acme-\d{4}-\d{2}-\d{2}\.csv$/);
  const records = parseCsv(readFileSync(await csvDownload.path(), 'utf8'));
  assert.deepEqual(records[0], ['at', 'actor', 'actor_kind', 'actor_id', 'action', 'target', 'before', 'after']);
  assert.equal(records.length - 1, expected.length);
  assert.deepEqual(records.slice(1).map((r) => [r[0], r[4], r[5]]), expected.map((e) => [e.at, e.action, e.target]));

  const [jsonDownload] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Export JSON' }).click()]);
  assert.match(jsonDownload.suggestedFilename(), /^audit-acme-\d{4}-\d{2}-\d{2}\.json$/);
  const exported = JSON.parse(readFileSync(await jsonDownload.path(), 'utf8'));
  // The CSV export's own audit entry is newer than every row and does not match the filter.
  assert.deepEqual(exported, expected);

  // Each export is audited with who asked.
  const exports = await listAll({ action: 'audit.export' });
  assert.equal(exports.length, 2);
  assert.equal(exports[0].actor, 'admin@acme.example');
  assert.deepEqual(errors, []);
  await context.close();
});
