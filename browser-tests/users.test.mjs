// The directory's people in a real browser: the user list links to a user's
// page, which shows groups through nesting with their path and each device's
// decision with its explanation; a group's page lists members direct and
// through nesting, a page at a time; the picker counts effective members.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { api, base, session, shots, signIn } from './harness.mjs';

const admin = (method, path, body) => api(method, '/api/v1/tenants/acme' + path, 'demo-acme-admin', body);

test('a user page shows a nested group with its path and each service per device', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/directory');
  await Promise.all([page.waitForURL(/\/t\/acme\/users$/), page.locator('#users-link').click()]);
  await page.getByLabel('Login or display name').fill('ada');
  await Promise.all([page.waitForURL(/search=ada/), page.getByRole('button', { name: 'Search' }).click()]);
  await page.screenshot({ path: join(shots, 'users.png'), fullPage: true });
  await Promise.all([page.waitForURL(/\/users\/ada%40acme\.example$/), page.getByRole('link', { name: 'ada@acme.example' }).click()]);

  // Ada is in Platform, which Engineering contains.
  const nested = await page.locator('#nested li').allTextContents();
  assert.ok(nested.includes('Engineering via Platform → Engineering'), JSON.stringify(nested));
  const direct = await page.locator('#direct li').allTextContents();
  assert.ok(direct.includes('Platform'), JSON.stringify(direct));
  // ZPA selects Engineering and Corporate laptops: her MacBook gets it, and says why.
  const mbp = page.locator('#explanations [data-device]').filter({ hasText: 'Why, on ada-mbp' });
  const zpa = await mbp.locator('[data-explanation="private_access"]').textContent();
  assert.match(zpa, /Engineering/);
  assert.equal(await mbp.locator('[data-service="private_access"] .badge').textContent(), 'On');
  assert.equal(await page.locator('#devices tr').count() >= 1, true);
  await page.screenshot({ path: join(shots, 'user.png'), fullPage: true });

  // Every device links to its page.
  await Promise.all([page.waitForURL(/\/t\/acme\/devices\//), page.locator('#devices a', { hasText: 'ada-mbp' }).click()]);

  // A phone-width view of the same page stays readable.
  const phone = await session(390);
  await signIn(phone.page, 'admin@acme.example');
  await phone.page.goto(base + '/t/acme/users/ada%40acme.example');
  await phone.page.locator('#nested li').first().waitFor();
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 1, 'no sideways scrolling of the page at 390 px: ' + overflow);
  await phone.page.screenshot({ path: join(shots, 'user-phone.png'), fullPage: true });
  await phone.context.close();
  await context.close();
});

test('a deprovisioned user is shown as such, every service off', async () => {
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/users/mallory%40acme.example');
  assert.match(await page.locator('[data-field="Status"]').textContent(), /Deactivated.*no service/);
  const lines = await page.locator('#explanations [data-explanation]').allTextContents();
  assert.ok(lines.length > 0);
  for (const line of lines) assert.match(line, /deactivated/);
  await context.close();
});

test('a group page lists members direct and through nesting, a page at a time', async () => {
  // 130 users in Big Team (some through Big Team Inner), more than a page of 100.
  const inner = await admin('POST', '/groups', { display_name: 'Big Team Inner' });
  assert.equal(inner.status, 201, JSON.stringify(inner.body));
  const big = await admin('POST', '/groups', { display_name: 'Big Team', member_groups: [inner.body.id] });
  assert.equal(big.status, 201, JSON.stringify(big.body));
  for (let i = 0; i < 130; i += 10) {
    await Promise.all(Array.from({ length: 10 }, async (_, j) => {
      const n = i + j;
      const made = await admin('POST', '/users', { user_name: 'big' + String(n).padStart(3, '0') + '@acme.example', groups: [n % 3 ? big.body.id : inner.body.id] });
      assert.equal(made.status, 201, JSON.stringify(made.body));
    }));
  }
  const { context, page } = await session();
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/directory');
  await Promise.all([page.waitForURL(/\/groups\//), page.locator('#rows a', { hasText: /^Big Team$/ }).click()]);
  assert.match(await page.locator('#counts').textContent(), /^130 active members/);
  assert.equal(await page.locator('#members tr').count(), 100);
  assert.equal(await page.locator('#members tr[data-user="big000@acme.example"] td').nth(2).textContent(), 'via Big Team Inner');
  assert.equal(await page.locator('#members tr[data-user="big001@acme.example"] td').nth(2).textContent(), 'Direct');
  assert.deepEqual(await page.locator('#inside li').allTextContents(), ['Big Team Inner']);
  await page.getByRole('button', { name: 'Show more members' }).click();
  await page.locator('#members tr').nth(129).waitFor();
  const users = await page.locator('#members tr').evaluateAll((rows) => rows.map((r) => r.dataset.user));
  assert.equal(new Set(users).size, 130, 'each member once');
  assert.equal(await page.getByRole('button', { name: 'Show more members' }).isHidden(), true);
  await page.screenshot({ path: join(shots, 'group.png'), fullPage: true });

  // Engineering: members through Platform and Mobile; ZPA selects it.
  await page.goto(base + '/t/acme/directory');
  await Promise.all([page.waitForURL(/\/groups\//), page.locator('#rows a', { hasText: /^Engineering$/ }).click()]);
  assert.match(await page.locator('#members tr[data-user="ada@acme.example"]').textContent(), /via Platform/);
  assert.match(await page.locator('#selected').textContent(), /Private Applications selects this group/);

  // The picker counts Engineering's effective active members, not its direct entries.
  const engineering = (await admin('GET', '/groups?search=Engineering')).body.items[0];
  assert.notEqual(engineering.effective_members, engineering.member_count, 'the demo nests groups in Engineering');
  await page.goto(base + '/t/acme/entitlements/digital_experience');
  await page.getByLabel('Add a user group').fill('Engineering');
  await page.locator('#ug-results button', { hasText: 'Engineering' }).waitFor();
  assert.equal(await page.locator('#ug-results button', { hasText: 'Engineering' }).textContent(), 'Engineering (' + engineering.effective_members + ' active members)');

  // The identity provider may push a group named like a local one: the picker says which is which.
  const pushed = await api('POST', '/scim/v2/acme/Groups', 'demo-acme-scim', { schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], displayName: 'Finance' });
  assert.equal(pushed.status, 201, JSON.stringify(pushed.body));
  await page.getByLabel('Add a user group').fill('Finance');
  await page.locator('#ug-results button', { hasText: 'from the directory' }).waitFor();
  const labels = await page.locator('#ug-results button').allTextContents();
  assert.ok(labels.includes('Finance (from the directory, 0 active members)'), JSON.stringify(labels));
  assert.ok(labels.some((label) => /^Finance \(\d+ active members?\)$/.test(label)), JSON.stringify(labels));
  await context.close();
});

test('names from the directory are text on the user and group pages, never markup', async () => {
  const hostile = '<img src=x onerror=alert(1)>"\'</script>';
  const group = await admin('POST', '/groups', { display_name: 'Team ' + hostile });
  assert.equal(group.status, 201, JSON.stringify(group.body));
  const outer = await admin('POST', '/groups', { display_name: 'Outer ' + hostile, member_groups: [group.body.id] });
  assert.equal(outer.status, 201, JSON.stringify(outer.body));
  const user = await admin('POST', '/users', { user_name: 'hostile@acme.example', display_name: hostile, groups: [group.body.id] });
  assert.equal(user.status, 201, JSON.stringify(user.body));
  const { context, page } = await session();
  const dialogs = [];
  page.on('dialog', async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });
  await signIn(page, 'admin@acme.example');
  await page.goto(base + '/t/acme/users/hostile%40acme.example');
  assert.equal(await page.locator('h1').textContent(), hostile + ' (hostile@acme.example)');
  assert.equal(await page.locator('#nested li').textContent(), 'Outer ' + hostile + ' via Team ' + hostile + ' → Outer ' + hostile);
  await page.goto(base + '/t/acme/groups/' + outer.body.id);
  assert.equal(await page.locator('#members tr td').nth(2).textContent(), 'via Team ' + hostile);
  await page.goto(base + '/t/acme/users?search=' + encodeURIComponent(hostile));
  assert.match(await page.locator('#caption').textContent(), /matche?s? “<img/);
  assert.equal(await page.locator('img').count(), 0);
  assert.deepEqual(dialogs, []);
  await context.close();
});
