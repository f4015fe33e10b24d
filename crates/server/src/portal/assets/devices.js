'use strict';
const $ = (id) => document.getElementById(id);
$('search').value = PAGE.search || '';
for (const s of PAGE.services) $('service').append(el('option', { value: s.id, selected: s.id === PAGE.service }, s.display_name));
$('state').value = PAGE.state || '';
$('os').value = PAGE.os || '';
$('ownership').value = PAGE.ownership || '';
$('client_version_below').value = PAGE.client_version_below || '';
$('applied').value = PAGE.applied || '';
$('sort').value = PAGE.sort;
$('order').value = PAGE.order;

/** This page's filters and order as query parameters, without the cursor. */
function listParams(changes) {
  const params = new URLSearchParams(location.search);
  params.delete('cursor');
  params.delete('removed');
  for (const [k, v] of Object.entries(changes || {})) {
    if (v === null) params.delete(k); else params.set(k, v);
  }
  return params;
}
$('export').href = tenantApi('/devices/export.csv') + '?' + listParams();
const removed = new URLSearchParams(location.search).get('removed');
if (removed) $('list-actions').prepend(el('span', { class: 'success', role: 'status' }, 'Removed ' + removed + '.'));

/** "personal (attested by key)", "corporate (attested by admin)" or "corporate (reported)". */
function ownershipText(o) {
  const by = { enrollment_key: 'attested by key', admin: 'attested by admin' }[o.ownership_attested_by] || 'reported';
  return o.ownership + ' (' + by + ')';
}

/** The config version a device applied, or why it is not the current one. */
function appliedBadge(a) {
  if (!a) return el('span', { class: 'badge pending', title: 'Its agent has not reported what it applied.' }, 'Not reported');
  const failed = Object.values(a.services).some((s) => s.state === 'failed');
  const version = el('span', { class: 'badge ' + (a.current ? 'on' : 'pending'), title: a.summary },
    a.current ? 'v' + a.config_version : 'v' + a.config_version + ', behind');
  return failed ? [version, ' ', el('span', { class: 'warn-mark', title: a.summary }, '⚠ failed')] : [version];
}

// Admins tick pending devices and approve them in one request; viewers see
// neither the boxes nor the button.
const selectable = COMMON.can_write && PAGE.items.some((d) => d.ownership.pending_approval);
const chosen = new Set();
function updateBulk() {
  $('approve-selected').disabled = chosen.size === 0;
  $('approve-selected').textContent = 'Approve selected' + (chosen.size ? ' (' + chosen.size + ')' : '');
}
show($('bulk'), selectable);

/** A column heading that orders the list by it; a second click reverses it. */
function sortable(label, key) {
  const current = PAGE.sort === key;
  const order = current && PAGE.order === 'asc' ? 'desc' : 'asc';
  const mark = current ? (PAGE.order === 'asc' ? ' ▲' : ' ▼') : '';
  return el('th', { scope: 'col', 'aria-sort': current ? (PAGE.order === 'asc' ? 'ascending' : 'descending') : null },
    el('a', { href: '?' + listParams({ sort: key, order }), 'data-sort': key }, label + mark));
}
$('head').append(el('tr', {}, selectable ? el('th', { scope: 'col' }, el('span', { class: 'hint' }, 'Select')) : null,
  sortable('Host', 'hostname'), sortable('User', 'user_name'), sortable('OS', 'os'), el('th', { scope: 'col' }, 'Ownership'),
  el('th', { scope: 'col' }, 'Client'), el('th', { scope: 'col' }, 'Applied'), ...PAGE.services.map((s) => el('th', { scope: 'col', title: s.display_name }, s.short)), sortable('Last sync', 'last_seen')));
for (const d of PAGE.items) {
  const o = d.ownership;
  const box = selectable && o.pending_approval
    ? el('input', { type: 'checkbox', 'aria-label': 'Select ' + d.hostname, 'data-device': d.id, onchange: (e) => { if (e.target.checked) chosen.add(d.id); else chosen.delete(d.id); updateBulk(); } })
    : null;
  $('rows').append(el('tr', { 'data-device': d.id },
    selectable ? el('td', {}, box) : null,
    el('td', {}, el('a', { href: tenantPage('/devices/' + encodeURIComponent(d.id)) }, d.hostname),
      o.pending_approval ? [' ', el('span', { class: 'badge pending' }, 'Pending approval')] : null),
    el('td', {}, d.user_name),
    el('td', {}, d.os),
    el('td', {}, ownershipText(o),
      o.ownership_conflict ? [' ', el('span', { class: 'warn-mark', title: 'The device reports ' + o.reported_ownership + '; the report is ignored.' }, '⚠ reports ' + o.reported_ownership)] : null),
    el('td', {}, d.client_version),
    el('td', { 'data-applied': d.id }, appliedBadge(d.applied)),
    ...PAGE.services.map((s) => el('td', {}, badge(d.services[s.id] && d.services[s.id].enabled))),
    el('td', {}, when(d.last_sync_at))));
}
// "No device matches" only when filters hide devices; an empty tenant says how devices arrive.
let caption;
if (PAGE.items.length) {
  caption = (PAGE.total !== null ? PAGE.total + ' device(s)' : PAGE.items.length + ' device(s) on this page' + (PAGE.more ? '; more on the next pages' : ''))
    + (PAGE.total !== null && PAGE.more ? ', ' + PAGE.items.length + ' on this page' : '');
} else if (PAGE.filtered) {
  caption = PAGE.more ? 'No device matches on this page; the next page goes on looking.' : 'No device matches these filters.';
} else {
  caption = 'No devices yet. Devices appear here once their agent enrolls.';
}
$('caption').textContent = caption;
if (!PAGE.first_page) $('pager').append(el('a', { href: '?' + listParams(), id: 'first-page' }, '« First page'));
if (PAGE.next_cursor) $('pager').append(el('a', { href: '?' + listParams({ cursor: PAGE.next_cursor }), id: 'next-page', rel: 'next' }, 'Next page »'));
updateBulk();

$('approve-selected').addEventListener('click', async () => {
  const ids = [...chosen];
  const answer = await api('POST', tenantApi('/devices/approve'), { ids });
  if (answer.ok && answer.body.not_found.length === 0) { location.reload(); return; }
  $('bulk-status').replaceChildren(answer.ok
    ? el('span', { class: 'error' }, answer.body.approved.length + ' approved; ' + answer.body.not_found.length + ' no longer exist. Reload to see the list as it is now.')
    : el('span', { class: 'error' }, errorText(answer)));
});

// Enrollment: the approval mode and the scoped keys.
$('device-approval').checked = PAGE.device_approval;
$('device-approval').disabled = !COMMON.can_write;
$('device-approval').addEventListener('change', async (e) => {
  const wanted = e.target.checked;
  const answer = await api('PUT', tenantApi('/device-approval'), { device_approval: wanted });
  if (answer.ok) {
    $('approval-status').replaceChildren(el('span', { class: 'success' }, answer.body.device_approval ? 'New devices now wait for approval.' : 'New devices are no longer held for approval.'));
  } else {
    e.target.checked = !wanted;
    $('approval-status').replaceChildren(el('span', { class: 'error' }, errorText(answer)));
  }
});

function keyState(k) {
  if (k.revoked_at) return 'Revoked ' + when(k.revoked_at);
  if (k.expires_at && new Date(k.expires_at) <= new Date()) return 'Expired';
  if (k.max_uses !== null && k.uses >= k.max_uses) return 'Used up';
  return k.usable ? 'Active' : 'Unusable';
}
for (const k of PAGE.keys) {
  $('keys').append(el('tr', { 'data-key': k.id }, el('td', {}, k.name), el('td', {}, k.ownership || '—'),
    el('td', {}, String(k.uses) + ' / ' + (k.max_uses === null ? 'unlimited' : String(k.max_uses))),
    el('td', {}, k.expires_at ? when(k.expires_at) : 'never'), el('td', {}, keyState(k)),
    el('td', {}, COMMON.can_write && !k.revoked_at ? el('button', { type: 'button', class: 'danger', onclick: () => revoke(k) }, 'Revoke') : '')));
}
if (PAGE.keys.length === 0) $('keys').append(el('tr', {}, el('td', { colspan: 6, class: 'hint' }, 'No scoped key yet.')));

async function revoke(k) {
  if (!confirm('Revoke enrollment key “' + k.name + '”? No device can enroll with it any more; devices already enrolled stay.')) return;
  const answer = await api('DELETE', tenantApi('/enrollment-keys/' + encodeURIComponent(k.id)));
  if (answer.ok) { location.reload(); return; }
  $('keys-error').textContent = errorText(answer);
  show($('keys-error'), true);
}

if (!COMMON.can_write) $('new-key').remove();
$('new-key')?.addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = { name: $('key-name').value };
  if ($('key-ownership').value) body.ownership = $('key-ownership').value;
  if ($('key-days').value) body.expires_in_days = Number($('key-days').value);
  if ($('key-max').value) body.max_uses = Number($('key-max').value);
  const answer = await api('POST', tenantApi('/enrollment-keys'), body);
  if (!answer.ok) { $('new-key-result').replaceChildren(el('p', { class: 'error' }, errorText(answer))); return; }
  // The secret is shown once, here; the server keeps only its hash.
  const secret = el('code', { id: 'new-key-secret' }, answer.body.enrollment_key);
  const copy = el('button', { type: 'button', onclick: async () => {
    try { await navigator.clipboard.writeText(answer.body.enrollment_key); copy.textContent = 'Copied'; } catch { copy.textContent = 'Select the key and copy it'; }
  } }, 'Copy');
  $('new-key-result').replaceChildren(el('div', { class: 'note' },
    el('p', {}, 'Enrollment key “' + answer.body.name + '” created. Copy it now: it is shown only once and cannot be read again.'),
    el('p', { class: 'actions' }, secret, copy),
    el('p', {}, el('a', { href: location.pathname + location.search }, 'Reload the list'))));
});
