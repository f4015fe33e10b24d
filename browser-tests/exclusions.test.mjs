// Exclusion groups and staged rollout in the entitlement form (issue 15): pick
// an excluded group with the same picker as the selected groups, move the
// rollout slider, see the preview's steps, save, and find it all in the API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { api, base, previewNumber, session, shots, signIn } from './harness.mjs';

const ADMIN = 'demo-acme-admin';
const ZDX = '/api/v1/tenants/acme/entitlements/digital_experience';

async function groupId(name) {
  const groups = await api('GET', '/api/v1/tenants/acme/groups?limit=200', ADMIN);
  return groups.body.items.find((g) => g.display_name === name).id;
}

async function reset(settings) {
  const current = await api('GET', ZDX, ADMIN);
  const answer = await api('PUT', ZDX, ADMIN, settings, { 'If-Match': current.etag });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

test('exclude a group, stage a rollout with the preview, save', async () => {
  const engineering = await groupId('Engineering');
  await reset({ enabled_by_default: false, user_groups: [engineering], device_groups: [], logout_on_enable: false, exclude_user_groups: [], exclude_device_groups: [], rollout_percent: 100 });
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/entitlements/digital_experience');

  // Platform is nested in Engineering: excluding it takes its members' devices away.
  await page.getByLabel('Exclude a user group').fill('Platf');
  await page.locator('#xug-results').getByRole('button', { name: /^Platform/ }).click();
  await page.locator('#xug-chips').getByText('Platform').waitFor();
  await page.locator('[data-preview="losing"]').waitFor();
  await page.waitForFunction(() => !/Updating/.test(document.getElementById('preview-status').textContent));
  assert.ok(await previewNumber(page, 'losing') > 0, 'Platform\'s devices lose the service');
  assert.equal(await previewNumber(page, 'gaining'), 0);

  // The rollout slider: the preview shows every step and marks the chosen one.
  await page.getByLabel(/of the devices that would get it/).fill('25');
  assert.equal(await page.locator('#rollout-value').textContent(), '25 %');
  await page.locator('#rollout-steps tr[data-rollout-step="25"].current').waitFor();
  const steps = await page.locator('#rollout-steps tbody tr').evaluateAll((rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
  assert.deepEqual(steps.map((s) => s[0]), ['1 %', '5 %', '10 %', '25 % (chosen)', '50 %', '75 %', '100 %']);
  const devices = steps.map((s) => Number(s[1]));
  for (let i = 1; i < devices.length; i++) assert.ok(devices[i] >= devices[i - 1], 'raising the rollout never removes a device: ' + devices);
  const added = steps.map((s) => Number(s[2].replace('+', '')));
  assert.equal(added.reduce((a, b) => a + b, 0), devices[devices.length - 1], 'the steps add up');

  // A percentage that is not a step is added to the table.
  await page.getByLabel(/of the devices that would get it/).fill('33');
  await page.locator('#rollout-steps tr[data-rollout-step="33"].current').waitFor();
  await page.screenshot({ path: join(shots, 'entitlements-exclusions-rollout.png'), fullPage: true });

  // Excluding Platform and holding back two thirds takes the service from
  // many devices: the page asks first, with the preview's numbers.
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('button', { name: 'Save anyway' }).click();
  await page.getByText(/Saved as config version/).waitFor();
  const saved = await api('GET', ZDX, ADMIN);
  assert.deepEqual(saved.body.exclude_user_groups, [await groupId('Platform')]);
  assert.equal(saved.body.rollout_percent, 33);
  assert.deepEqual(saved.body.user_groups, [engineering]);

  // Exclusions stay editable while "Enabled by Default" is on (they narrow it);
  // the selected groups do not.
  await page.getByLabel(/Enabled by Default/).check();
  assert.equal(await page.locator('#ug-search').isDisabled(), true);
  assert.equal(await page.locator('#xug-search').isDisabled(), false);
  assert.equal(await page.locator('#xdg-search').isDisabled(), false);
  assert.equal(await page.locator('#rollout').isDisabled(), false);
  await page.getByLabel(/Enabled by Default/).uncheck();

  // After a reload the form shows what was saved, the excluded group by name.
  await page.reload();
  await page.locator('#xug-chips').getByText('Platform').waitFor();
  assert.equal(await page.locator('#rollout-value').textContent(), '33 %');
  await page.locator('#xug-chips').getByRole('button', { name: 'Remove Platform' }).click();
  await page.getByText('Unsaved changes').waitFor();
  await context.close();
  await reset({ enabled_by_default: false, user_groups: [], device_groups: [], logout_on_enable: false });
});
