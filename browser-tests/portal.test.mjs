// The portal in a real browser: Debian's Chromium, driven by playwright-core,
// against the real `entitle demo` server on a loopback port (see harness.mjs).
// Screenshots of each page land in ../docs/screenshots/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { api, base, browser, previewNumber, session, shots, signIn } from './harness.mjs';

test('a wrong password is refused in words', async () => {
  const { context, page } = await session();
  await page.goto(base + '/login');
  await page.screenshot({ path: join(shots, 'login.png') });
  await page.getByLabel('Email').fill('admin@acme.example');
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'wrong' }).waitFor();
  await context.close();
});

test('an admin restricts Private Applications, previews, saves, and the device page explains it', async () => {
  // Start from ZPA on for everyone, its stored groups greyed out.
  const current = await api('GET', '/api/v1/tenants/acme/entitlements/private_access', 'demo-acme-admin');
  const on = await api('PUT', '/api/v1/tenants/acme/entitlements/private_access', 'demo-acme-admin', { ...current.body, enabled_by_default: true }, { 'If-Match': current.etag });
  assert.equal(on.status, 200);

  const devices = await api('GET', '/api/v1/tenants/acme/devices?hostname=niklaus-laptop', 'demo-acme-admin');
  const laptop = devices.body.items[0].id;

  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices/' + laptop);
  const zpaBefore = await page.locator('[data-explanation="private_access"]').textContent();
  assert.match(zpaBefore, /Enabled by Default for User Tunnel" is on/);

  await page.goto(base + '/t/acme/entitlements/private_access');
  const toggle = page.getByLabel('ZPA Enabled by Default for User Tunnel');
  assert.equal(await toggle.isChecked(), true);
  assert.equal(await page.getByLabel('Add a user group').isDisabled(), true, 'pickers are greyed out while the toggle is on');
  await page.screenshot({ path: join(shots, 'entitlements-enabled-by-default.png'), fullPage: true });

  await toggle.uncheck();
  assert.equal(await page.getByLabel('Add a user group').isDisabled(), false);
  await page.locator('[data-preview="losing"]').waitFor();
  const losingBefore = await previewNumber(page, 'losing');
  assert.ok(losingBefore > 0, 'turning the default off takes the service from someone');

  // Pick a group by typing part of its name.
  await page.getByLabel('Add a user group').fill('pilot');
  await page.getByRole('button', { name: /ZDX Pilot/ }).click();
  await page.locator('#ug-chips').getByText('ZDX Pilot').waitFor();
  await page.waitForFunction((before) => {
    const node = document.querySelector('[data-preview="losing"] .metric');
    return node && Number(node.textContent) < before;
  }, losingBefore);
  const losingAfter = await previewNumber(page, 'losing');
  assert.ok(losingAfter < losingBefore, `the preview changes: ${losingBefore} -> ${losingAfter}`);
  await page.screenshot({ path: join(shots, 'entitlements.png'), fullPage: true });

  await page.getByRole('button', { name: 'Save' }).click();
  // Off for all but the pilot on laptops: more than a tenth of the devices lose it, so Save asks.
  await page.getByRole('dialog').getByRole('button', { name: 'Save anyway' }).click();
  await page.getByText(/Saved as config version/).waitFor();

  await page.goto(base + '/t/acme/devices/' + laptop);
  const zpaAfter = await page.locator('[data-explanation="private_access"]').textContent();
  assert.match(zpaAfter, /is in ZDX Pilot and the device is in Corporate laptops/);
  await page.screenshot({ path: join(shots, 'device.png'), fullPage: true });

  const phone = await api('GET', '/api/v1/tenants/acme/devices?hostname=ada-phone', 'demo-acme-admin');
  await page.goto(base + '/t/acme/devices/' + phone.body.items[0].id);
  assert.match(await page.locator('[data-explanation="private_access"]').textContent(), /none of the selected device groups/);
  await context.close();
});

test('a second administrator saving a stale form gets the conflict message and can merge', async () => {
  const first = await session();
  const second = await session();
  await signIn(first.page, 'admin@acme.example');
  await signIn(second.page, 'admin@acme.example');
  for (const { page } of [first, second]) await page.goto(base + '/t/acme/entitlements/digital_experience');

  await first.page.getByLabel('Add a user group').fill('Finance');
  await first.page.getByRole('button', { name: /^Finance/ }).click();
  await first.page.getByRole('button', { name: 'Save' }).click();
  await first.page.getByText(/Saved as config version/).waitFor();

  await second.page.getByLabel(/Logout client when/).check();
  await second.page.getByRole('button', { name: 'Save' }).click();
  await second.page.getByText('Another administrator saved these settings').waitFor();
  await second.page.screenshot({ path: join(shots, 'conflict.png'), fullPage: true });
  await second.page.getByRole('button', { name: 'Merge my changes into theirs' }).click();
  await second.page.getByText(/Merged into version/).waitFor();
  await second.page.getByRole('button', { name: 'Save' }).click();
  await second.page.getByText(/Saved as config version/).waitFor();
  const saved = await api('GET', '/api/v1/tenants/acme/entitlements/digital_experience', 'demo-acme-admin');
  assert.equal(saved.body.logout_on_enable, true);
  await first.context.close();
  await second.context.close();
});

test('a viewer sees no Save button and a forged save is refused', async () => {
  const { context, page } = await session();
  await signIn(page, 'viewer@acme.example');
  await page.goto(base + '/t/acme/entitlements/private_access');
  assert.equal(await page.getByRole('button', { name: 'Save' }).count(), 0);
  assert.equal(await page.getByLabel('ZPA Enabled by Default for User Tunnel').isDisabled(), true);
  const forged = await page.evaluate(async () => {
    const data = JSON.parse(document.getElementById('page-data').textContent);
    const body = JSON.stringify({ enabled_by_default: true, user_groups: [], device_groups: [], logout_on_enable: false });
    const withToken = await fetch('/api/v1/tenants/acme/entitlements/private_access', { method: 'PUT', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': data.common.csrf }, body });
    const withoutToken = await fetch('/api/v1/tenants/acme/entitlements/private_access', { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body });
    return [withToken.status, withoutToken.status];
  });
  assert.deepEqual(forged, [403, 403]);
  await context.close();
});

test('an admin session cannot save without its CSRF token', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  const status = await page.evaluate(async () => (await fetch('/api/v1/tenants/acme/entitlements/internet_access', {
    method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ enabled_by_default: false }),
  })).status);
  assert.equal(status, 403);
  await context.close();
});

test('every page renders, at desktop and phone width', async () => {
  for (const [width, suffix] of [[1280, ''], [390, '-phone']]) {
    const { context, page } = await session(width);
    await signIn(page, 'admin@acme.example');
    for (const [path, name] of [['/t/acme/entitlements/private_access', 'entitlements'], ['/t/acme/devices', 'devices'], ['/t/acme/device-groups', 'device-groups'], ['/t/acme/directory', 'directory'], ['/t/acme/audit', 'audit']]) {
      const response = await page.goto(base + path);
      assert.equal(response.status(), 200, path);
      await page.locator('h1').first().waitFor();
      if (suffix || !['entitlements'].includes(name)) await page.screenshot({ path: join(shots, name + suffix + '.png'), fullPage: true });
    }
    await context.close();
  }
});

test('devices can be searched and filtered by service state', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices');
  await page.getByLabel('User or host name').fill('ada');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.waitForURL(/search=ada/);
  assert.equal(await page.locator('#rows tr').count(), 2);
  await page.goto(base + '/t/acme/devices?service=internet_access&state=off');
  const rows = await page.locator('#rows tr').allTextContents();
  assert.ok(rows.some((r) => r.includes('mallory')), 'the deactivated user has Internet & SaaS off');
  await context.close();
});

test('a device group rule shows how many devices match before it is saved', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/device-groups');
  await page.getByLabel('Name').fill('Linux machines');
  await page.getByLabel('linux').check();
  await page.getByText(/enrolled devices match this rule now/).waitFor();
  const text = await page.locator('#match-count').textContent();
  assert.match(text, /^[1-9]\d* of \d+ enrolled devices match/);
  await page.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('cell', { name: 'Linux machines' }).waitFor();
  await context.close();
});

// Hostile text in every field that devices, the directory and admins control.
// Each payload sets window.__xss or opens a dialog if it ever runs; a comment
// opener (`<!--<script>`) used to swallow the page's data and empty its rows.
const HOSTILE = '<!--<script>window.__xss=1</script>\u2028\u2029"><img src=x onerror="window.__xss=2;alert(2)"></title><script>window.__xss=3;alert(3)</script>';
const hostile = (field) => field + ' ' + HOSTILE;
// Posture keys are at most 128 characters: a shorter payload of the same kinds.
const HOSTILE_KEY = 'key <!--<script>window.__xss=5</script><img src=x onerror="window.__xss=6">\u2028';

test('hostile text from devices, the directory and admins never runs, and every page renders its rows', async () => {
  const scim = async (path, body) => {
    const response = await fetch(base + '/scim/v2/acme' + path, {
      method: 'POST', headers: { Authorization: 'Bearer demo-acme-scim', 'Content-Type': 'application/scim+json' }, body: JSON.stringify(body),
    });
    assert.equal(response.status, 201, path);
    return response.json();
  };
  // The directory: a user and a group, then a local group nesting it.
  const userName = hostile('user');
  const user = await scim('/Users', { schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName, displayName: hostile('display'), active: true });
  const group = await scim('/Groups', { schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], displayName: hostile('scim group'), members: [{ value: user.id }] });
  const local = await api('POST', '/api/v1/tenants/acme/groups', 'demo-acme-admin', { display_name: hostile('local group'), member_groups: [group.id] });
  assert.equal(local.status, 201);

  // Devices: one enrolled with hostile text, one that turns hostile at its next sync.
  const enroll = async (device) => {
    const answer = await api('POST', '/agent/v1/enroll', '', { enrollment_key: 'demo-acme-enroll', user_name: userName, device });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return answer.body;
  };
  const planted = await enroll({ hostname: hostile('enrolled host'), os: 'macos', client_version: '4.5.0', ownership: 'corporate', posture: { [HOSTILE_KEY]: hostile('value'), disk_encrypted: true } });
  const later = { hostname: 'later-host', os: 'windows', client_version: '4.5.0', ownership: 'personal', posture: { os_version: '10.0' } };
  const synced = await enroll(later);
  const sync = await api('POST', '/agent/v1/sync', synced.device_token, { ...later, hostname: hostile('synced host'), posture: { os_version: hostile('os version') } });
  assert.equal(sync.status, 200);

  // Admin-controlled text: a device group and a token whose name becomes an actor.
  const deviceGroup = await api('POST', '/api/v1/tenants/acme/device-groups', 'demo-acme-admin', {
    name: hostile('device group'), os: [], ownership: [], posture: [{ key: HOSTILE_KEY, op: 'eq', value: hostile('value') }],
  });
  assert.equal(deviceGroup.status, 201, JSON.stringify(deviceGroup.body));
  const enrollmentKey = await api('POST', '/api/v1/tenants/acme/enrollment-keys', 'demo-acme-admin', { name: hostile('enrollment key'), ownership: 'corporate' });
  assert.equal(enrollmentKey.status, 201, JSON.stringify(enrollmentKey.body));
  const token = await api('POST', '/api/v1/tenants/acme/tokens', 'demo-acme-admin', { name: hostile('token'), role: 'admin' });
  assert.equal(token.status, 201);
  const saved = await api('PUT', '/api/v1/tenants/acme/entitlements/digital_experience', token.body.token,
    { enabled_by_default: false, user_groups: [group.id], device_groups: [deviceGroup.body.id], logout_on_enable: false });
  assert.equal(saved.status, 200, JSON.stringify(saved.body));

  // What each page should show, from the API.
  const admin = (path) => api('GET', '/api/v1/tenants/acme' + path, 'demo-acme-admin');
  const devices = (await admin('/devices?limit=200')).body.items;
  const groups = (await admin('/groups?limit=200')).body.items;
  const deviceGroups = (await admin('/device-groups')).body.items;
  const keys = (await admin('/enrollment-keys')).body.items;
  const plantedDevice = (await admin('/devices/' + planted.device_id)).body;

  const { context, page } = await session();
  const dialogs = [];
  page.on('dialog', async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });
  await signIn(page, 'admin@acme.example');
  const rows = (selector) => page.locator(selector).count();
  const pages = [
    ['/t/acme/devices', async () => {
      assert.equal(await rows('#rows tr'), devices.length);
      assert.equal(await rows('#keys tr'), keys.length);
      assert.match(await page.locator('#keys').textContent(), /enrollment key <!--<script>window\.__xss=1/);
      return '#rows';
    }],
    ['/t/acme/devices/' + planted.device_id, async () => {
      assert.equal(await rows('#report tr'), 6 + Object.keys(plantedDevice.posture).length);
      assert.equal(await page.title(), hostile('enrolled host') + ' · acme · entitle', 'the title is the host name, as text');
      assert.equal(await rows('#groups li'), plantedDevice.device_groups.length);
      assert.ok(plantedDevice.device_groups.includes(deviceGroup.body.id));
      return 'main';
    }],
    ['/t/acme/devices/' + synced.device_id, async () => { assert.equal(await rows('#services [data-service]'), 3); return '#report'; }],
    ['/t/acme/directory', async () => { assert.equal(await rows('#rows tr'), groups.length); return '#rows'; }],
    ['/t/acme/device-groups', async () => { assert.equal(await rows('#rows tr'), deviceGroups.length); return '#rows'; }],
    ['/t/acme/audit', async () => {
      assert.ok(await rows('#versions tr') >= 1);
      await page.locator('#audit tr').first().waitFor();
      return '#versions';
    }],
    ['/t/acme/entitlements/digital_experience', async () => {
      assert.equal(await rows('#ug-chips li'), 1);
      assert.equal(await rows('#dg-chips li'), 1);
      assert.equal(await rows('#tabs a'), 3);
      return 'main';
    }],
  ];
  for (const [path, check] of pages) {
    const response = await page.goto(base + path);
    assert.equal(response.status(), 200, path);
    assert.doesNotMatch(response.headers()['content-security-policy'], /script-src[^;]*unsafe-inline/, path);
    await page.locator('h1').first().waitFor();
    const shown = await check();
    // The hostile text is on the page, as text.
    assert.match(await page.locator(shown).first().textContent(), /window\.__xss=3;alert\(3\)<\/script>/, path);
    assert.equal(await page.evaluate(() => window.__xss), undefined, path + ': no planted script ran');
  }
  assert.deepEqual(dialogs, [], 'no planted script opened a dialog');
  await context.close();
});

// Finding 4: the portal shows where a device group is used before deleting
// it, and a confirmed deletion keeps it selected as a group that matches nothing.
test('deleting a device group in use names its entitlements and keeps it as a deleted group', async () => {
  const group = await api('POST', '/api/v1/tenants/acme/device-groups', 'demo-acme-admin', { name: 'Temp laptops', os: ['macos'], ownership: [], posture: [] });
  assert.equal(group.status, 201, JSON.stringify(group.body));
  const current = await api('GET', '/api/v1/tenants/acme/entitlements/private_access', 'demo-acme-admin');
  const saved = await api('PUT', '/api/v1/tenants/acme/entitlements/private_access', 'demo-acme-admin',
    { ...current.body, enabled_by_default: false, device_groups: [...current.body.device_groups, group.body.id] }, { 'If-Match': current.etag });
  assert.equal(saved.status, 200, JSON.stringify(saved.body));

  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/device-groups');
  const row = page.locator('tr[data-group="' + group.body.id + '"]');
  assert.equal(await row.locator('.used-by').textContent(), 'Used by: Private Applications');

  // The confirmation shows the impact first. Cancelled, nothing happens;
  // confirmed, the group goes with ?force=true.
  const confirmation = page.locator('#confirm-change');
  await row.getByRole('button', { name: 'Delete' }).click();
  await confirmation.waitFor();
  const question = await confirmation.textContent();
  assert.match(question, /Temp laptops[\s\S]*used by the entitlements of Private Applications/);
  assert.match(question, /stays selected there as a deleted group that matches nothing/);
  await confirmation.getByRole('button', { name: 'Cancel' }).click();
  assert.equal(await row.count(), 1, 'cancelled: still there');
  await page.screenshot({ path: join(shots, 'device-groups-used-by.png'), fullPage: true });

  await row.getByRole('button', { name: 'Delete' }).click();
  await Promise.all([page.waitForEvent('load'), confirmation.getByRole('button', { name: 'Delete' }).click()]);
  assert.equal(await page.locator('tr[data-group="' + group.body.id + '"]').count(), 0, 'the row is gone');
  const after = await api('GET', '/api/v1/tenants/acme/entitlements/private_access', 'demo-acme-admin');
  assert.ok(after.body.device_groups.includes(group.body.id), 'still selected, as a tombstone');
  await page.goto(base + '/t/acme/entitlements/private_access');
  await page.locator('#dg-chips').getByText('Temp laptops (deleted)').waitFor();

  // An unused group deletes after a plain confirmation.
  const unused = await api('POST', '/api/v1/tenants/acme/device-groups', 'demo-acme-admin', { name: 'Unused group', os: ['linux'], ownership: [], posture: [] });
  assert.equal(unused.status, 201);
  await page.goto(base + '/t/acme/device-groups');
  await page.locator('tr[data-group="' + unused.body.id + '"]').getByRole('button', { name: 'Delete' }).click();
  await confirmation.waitFor();
  assert.match(await confirmation.textContent(), /No entitlement uses it/);
  await Promise.all([page.waitForEvent('load'), confirmation.getByRole('button', { name: 'Delete' }).click()]);
  assert.equal((await api('GET', '/api/v1/tenants/acme/device-groups/' + unused.body.id, 'demo-acme-admin')).status, 404);

  // A group an entitlement selected after the confirmation showed it unused:
  // the API refuses the plain delete with 409, and its message is shown.
  const late = await api('POST', '/api/v1/tenants/acme/device-groups', 'demo-acme-admin', { name: 'Selected meanwhile', os: ['ios'], ownership: [], posture: [] });
  assert.equal(late.status, 201);
  await page.goto(base + '/t/acme/device-groups');
  await page.locator('tr[data-group="' + late.body.id + '"]').getByRole('button', { name: 'Delete' }).click();
  await confirmation.waitFor();
  assert.match(await confirmation.textContent(), /No entitlement uses it/);
  const dx = await api('GET', '/api/v1/tenants/acme/entitlements/digital_experience', 'demo-acme-admin');
  const selected = await api('PUT', '/api/v1/tenants/acme/entitlements/digital_experience', 'demo-acme-admin',
    { ...dx.body, device_groups: [...dx.body.device_groups, late.body.id] }, { 'If-Match': dx.etag });
  assert.equal(selected.status, 200, JSON.stringify(selected.body));
  await confirmation.getByRole('button', { name: 'Delete' }).click();
  await page.locator('#delete-error').filter({ hasText: 'still selected by the entitlements of Digital Experience Monitoring' }).waitFor();
  assert.equal((await api('GET', '/api/v1/tenants/acme/device-groups/' + late.body.id, 'demo-acme-admin')).status, 200, 'not deleted');

  // User groups show where they are used too.
  await page.goto(base + '/t/acme/directory');
  assert.match(await page.locator('#rows tr').filter({ hasText: 'ZDX Pilot' }).locator('.used-by').textContent(), /Private Applications/);

  // Restore Private Applications without the tombstone for the tests after this one.
  const restore = await api('GET', '/api/v1/tenants/acme/entitlements/private_access', 'demo-acme-admin');
  await api('PUT', '/api/v1/tenants/acme/entitlements/private_access', 'demo-acme-admin',
    { ...restore.body, device_groups: restore.body.device_groups.filter((id) => id !== group.body.id) }, { 'If-Match': restore.etag });
  await context.close();
});

// Finding 5: attested ownership, the conflict warning, and bulk approval.
test('a pending device is approved in bulk, and a contradicting report is flagged on the device page', async () => {
  const ada = (await api('GET', '/api/v1/tenants/acme/devices?hostname=ada-phone', 'demo-acme-admin')).body.items[0].user_name;
  const key = await api('POST', '/api/v1/tenants/acme/enrollment-keys', 'demo-acme-admin', { name: 'BYOD phones', ownership: 'personal', max_uses: 5 });
  assert.equal(key.status, 201, JSON.stringify(key.body));
  assert.equal((await api('PUT', '/api/v1/tenants/acme/device-approval', 'demo-acme-admin', { device_approval: true })).status, 200);
  const enrolled = await api('POST', '/agent/v1/enroll', '', {
    enrollment_key: key.body.enrollment_key, user_name: ada,
    device: { hostname: 'ada-claims-corporate', os: 'macos', client_version: '4.5.0', ownership: 'corporate', posture: { disk_encrypted: true } },
  });
  assert.equal(enrolled.status, 201, JSON.stringify(enrolled.body));
  const id = enrolled.body.device_id;
  const before = (await api('GET', '/api/v1/tenants/acme/devices/' + id, 'demo-acme-admin')).body;
  assert.equal(before.pending_approval, true);
  assert.equal(before.ownership_conflict, true);

  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices/' + id);
  const warning = page.locator('#ownership-warning');
  assert.equal(await warning.isVisible(), true);
  assert.match(await warning.textContent(), /reports corporate; attested personal by enrollment key — the report is ignored/);
  assert.match(await page.locator('#ownership').textContent(), /personal, attested by enrollment key/);
  await page.screenshot({ path: join(shots, 'device-conflict.png'), fullPage: true });
  assert.equal(await page.locator('#approval .badge').textContent(), 'Pending approval');

  await page.goto(base + '/t/acme/devices');
  const row = page.locator('#rows tr[data-device="' + id + '"]');
  await row.getByText('Pending approval').waitFor();
  assert.match(await row.textContent(), /personal \(attested by key\) ⚠ reports corporate/);
  await page.locator('#enrollment').getByText('BYOD phones').waitFor();
  await page.screenshot({ path: join(shots, 'devices-pending.png'), fullPage: true });
  await page.locator('#enrollment').screenshot({ path: join(shots, 'enrollment.png') });
  await row.screenshot({ path: join(shots, 'devices-pending-row.png') });
  // A viewer sees the warning and the pending badge but no button or box that
  // changes the device.
  const viewer = await session();
  await signIn(viewer.page, 'viewer@acme.example');
  await viewer.page.goto(base + '/t/acme/devices/' + id);
  assert.equal(await viewer.page.locator('#ownership-warning').isVisible(), true);
  assert.equal(await viewer.page.locator('#trust-actions button').count(), 0);
  await viewer.page.goto(base + '/t/acme/devices');
  await viewer.page.locator('#rows tr[data-device="' + id + '"]').getByText('Pending approval').waitFor();
  assert.equal(await viewer.page.locator('#rows input[type=checkbox]').count(), 0);
  assert.equal(await viewer.page.getByRole('button', { name: /Approve selected|Revoke|Create key/ }).count(), 0);
  await viewer.context.close();

  assert.equal(await page.getByRole('button', { name: /Approve selected/ }).isDisabled(), true);
  await row.getByRole('checkbox').check();
  await Promise.all([page.waitForEvent('load'), page.getByRole('button', { name: 'Approve selected (1)' }).click()]);
  assert.equal(await page.locator('#rows tr[data-device="' + id + '"]').getByText('Pending approval').count(), 0);
  const after = (await api('GET', '/api/v1/tenants/acme/devices/' + id, 'demo-acme-admin')).body;
  assert.equal(after.pending_approval, false, 'approved');

  // An admin attests what the device says: the conflict is gone.
  await page.goto(base + '/t/acme/devices/' + id);
  await Promise.all([page.waitForEvent('load'), page.getByRole('button', { name: 'Attest corporate' }).click()]);
  assert.match(await page.locator('#ownership').textContent(), /corporate, attested by an administrator/);
  assert.equal(await page.locator('#ownership-warning').isVisible(), false);
  assert.equal((await api('GET', '/api/v1/tenants/acme/devices/' + id, 'demo-acme-admin')).body.ownership_attested_by, 'admin');

  assert.equal((await api('PUT', '/api/v1/tenants/acme/device-approval', 'demo-acme-admin', { device_approval: false })).status, 200);
  await context.close();
});

test('an admin creates an enrollment key, sees its secret once, and revokes it', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/devices');
  await page.getByLabel('Name', { exact: true }).fill('Autopilot laptops');
  await page.getByLabel('Attested ownership').selectOption('corporate');
  await page.getByLabel(/Maximum enrollments/).fill('10');
  await page.getByRole('button', { name: 'Create key' }).click();
  const secret = await page.locator('#new-key-secret').textContent();
  assert.ok(secret.length >= 20, 'the secret is shown');
  await page.getByText('it is shown only once').waitFor();
  await page.reload();
  const row = page.locator('#keys tr').filter({ hasText: 'Autopilot laptops' });
  assert.match(await row.textContent(), /corporate0 \/ 10neverActive/);
  assert.equal(await page.getByText(secret).count(), 0, 'never shown again');
  page.once('dialog', (dialog) => dialog.accept());
  await Promise.all([page.waitForEvent('load'), row.getByRole('button', { name: 'Revoke' }).click()]);
  assert.match(await page.locator('#keys tr').filter({ hasText: 'Autopilot laptops' }).textContent(), /Revoked/);
  await context.close();
});
