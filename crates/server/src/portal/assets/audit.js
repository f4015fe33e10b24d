'use strict';
const $ = (id) => document.getElementById(id);
const serviceName = Object.fromEntries(PAGE.services.map((s) => [s.id, s.display_name]));
for (const s of PAGE.services) $('service').append(el('option', { value: s.id, selected: s.id === PAGE.service }, s.display_name));
$('actor').value = PAGE.actor || '';
const name = (id) => PAGE.names[id] || id;

function diff(before, after) {
  const lines = [];
  if (before.enabled_by_default !== after.enabled_by_default) lines.push(el('div', {}, 'Enabled by Default: ', el('del', {}, before.enabled_by_default ? 'on' : 'off'), ' → ', el('ins', {}, after.enabled_by_default ? 'on' : 'off')));
  for (const [key, label] of [['user_groups', 'User groups'], ['device_groups', 'Device groups']]) {
    const added = after[key].filter((g) => !before[key].includes(g));
    const removed = before[key].filter((g) => !after[key].includes(g));
    if (added.length || removed.length) {
      lines.push(el('div', {}, label + ': ', ...added.map((g) => el('ins', {}, '+' + name(g) + ' ')), ...removed.map((g) => el('del', {}, '−' + name(g) + ' '))));
    }
  }
  if (before.logout_on_enable !== after.logout_on_enable) lines.push(el('div', {}, 'Logout on enable: ', el('del', {}, before.logout_on_enable ? 'on' : 'off'), ' → ', el('ins', {}, after.logout_on_enable ? 'on' : 'off')));
  return lines.length ? el('div', { class: 'diff' }, lines) : el('span', { class: 'hint' }, 'saved without change');
}

function versionRow(v) {
  return el('tr', {},
    el('td', {}, String(v.config_version)), el('td', {}, serviceName[v.service] || v.service), el('td', {}, v.actor), el('td', {}, when(v.at)),
    el('td', {}, v.restored_from ? el('div', { class: 'hint' }, 'Restored from v' + v.restored_from) : null, diff(v.before, v.after)),
    el('td', {}, COMMON.can_write ? el('button', { type: 'button', onclick: () => rollback(v) }, deletedIn(v).length ? 'Restore without deleted groups…' : 'Restore this version') : ''));
}
for (const v of PAGE.versions) $('versions').append(versionRow(v));
// Older versions come from the API's history a page at a time (keyset cursor),
// with the page's actor filter applied the way the server applies it.
let historyCursor = PAGE.history_next_cursor;
if (historyCursor) {
  const older = el('button', { type: 'button', id: 'older-versions' }, 'Show older versions');
  older.addEventListener('click', async () => {
    older.disabled = true;
    const query = '?limit=200&cursor=' + encodeURIComponent(historyCursor) + (PAGE.service ? '&service=' + encodeURIComponent(PAGE.service) : '');
    const answer = await api('GET', tenantApi('/entitlements/history' + query));
    older.disabled = false;
    if (!answer.ok) { $('rollback-status').replaceChildren(el('span', { class: 'error' }, errorText(answer))); return; }
    Object.assign(PAGE.names, answer.body.names);
    PAGE.deleted = [...(PAGE.deleted || []), ...answer.body.deleted];
    const actor = (PAGE.actor || '').trim().toLowerCase();
    for (const v of answer.body.items.filter((v) => !actor || v.actor.toLowerCase().includes(actor))) $('versions').append(versionRow(v));
    historyCursor = answer.body.next_cursor;
    if (!historyCursor) older.remove();
  });
  $('versions').closest('section').append(older);
}
if (PAGE.versions.length === 0) $('versions').append(el('tr', {}, el('td', { colspan: 6, class: 'hint' }, 'No entitlement change matches.')));

/** The groups a version selects that have been deleted since. */
function deletedIn(v) {
  return [...v.after.user_groups, ...v.after.device_groups].filter((id) => (PAGE.deleted || []).includes(id));
}

async function rollback(v) {
  if (deletedIn(v).length) { await offerWithoutDeleted(v); return; }
  if (!confirm('Restore ' + (serviceName[v.service] || v.service) + ' as it was after version ' + v.config_version + '? This is saved as a new version.')) return;
  const answer = await api('POST', tenantApi('/entitlements/rollback'), { config_version: v.config_version });
  if (answer.ok) { location.reload(); return; }
  $('rollback-status').replaceChildren(el('span', { class: 'error' }, errorText(answer)));
}

// A version that selects a deleted group cannot come back as it was; without
// the group the service may reach more people, so the restore is previewed.
async function offerWithoutDeleted(v) {
  const gone = deletedIn(v);
  const settings = { ...v.after, user_groups: v.after.user_groups.filter((id) => !gone.includes(id)), device_groups: v.after.device_groups.filter((id) => !gone.includes(id)) };
  const status = $('rollback-status');
  status.replaceChildren(el('span', { class: 'hint' }, 'Previewing…'));
  const preview = await api('POST', tenantApi('/entitlements/' + v.service + '/preview'), settings);
  if (!preview.ok) { status.replaceChildren(el('span', { class: 'error' }, errorText(preview))); return; }
  const side = (label, data) => el('li', {}, label + ': ' + data.users + ' users on ' + data.devices + ' devices');
  const restore = async () => {
    const answer = await api('POST', tenantApi('/entitlements/rollback'), { config_version: v.config_version, without_deleted: true });
    if (answer.ok) { location.reload(); return; }
    status.replaceChildren(el('span', { class: 'error' }, errorText(answer)));
  };
  status.replaceChildren(el('div', { class: 'warning', 'data-restore': v.config_version },
    el('p', {}, 'Version ' + v.config_version + ' of ' + (serviceName[v.service] || v.service) + ' selects ' + gone.map((id) => name(id).replace(/ \(deleted\)$/, '')).join(', ') + ', deleted since, so it cannot be restored as it was. Restored without ' + (gone.length === 1 ? 'it' : 'them') + ', compared with the current settings:'),
    el('ul', {}, side('Gain the service', preview.body.gaining), side('Lose the service', preview.body.losing)),
    el('div', { class: 'actions' },
      el('button', { type: 'button', class: 'primary', onclick: restore }, 'Restore without the deleted groups'),
      el('button', { type: 'button', onclick: () => status.replaceChildren() }, 'Cancel'))));
}

// All activity: filtered by the API over the whole log, a page at a time
// ("Load more" follows next_cursor); the export links carry the same filter.
const FILTERS = ['service', 'actor', 'action', 'target', 'from', 'to', 'q'];
const KNOWN_ACTIONS = ['device.', 'device.enroll', 'device.delete', 'device.groups_changed', 'entitlement.', 'entitlement.save',
  'entitlement.rollback', 'user.', 'group.', 'group.members', 'device_group.', 'token.', 'account.', 'enrollment_key.', 'tenant.',
  'sign_in.', 'sign_out', 'audit.export'];
for (const action of KNOWN_ACTIONS) $('known-actions').append(el('option', { value: action }));

const query = new URLSearchParams(location.search);
const filter = new URLSearchParams();
for (const name of FILTERS) {
  const value = (query.get(name) || '').trim();
  if (value) filter.set(name, value);
}
for (const name of ['action', 'target', 'q']) $(name).value = filter.get(name) || '';
for (const name of ['from', 'to']) $(name).value = localInput(filter.get(name));

const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
$('time-zone').textContent = 'Times are in your time zone' + (zone ? ' (' + zone + ')' : '') + '.';

/** An RFC 3339 time as a datetime-local value, in the viewer's zone. */
function localInput(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (isNaN(date)) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return date.getFullYear() + '-' + pad(date.getMonth() + 1) + '-' + pad(date.getDate()) + 'T' +
    pad(date.getHours()) + ':' + pad(date.getMinutes()) + ':' + pad(date.getSeconds());
}

// The form's times are local; the address and the API carry them as UTC.
document.querySelector('form[role="search"]').addEventListener('submit', (event) => {
  event.preventDefault();
  const next = new URLSearchParams();
  for (const name of FILTERS) {
    let value = ($(name).value || '').trim();
    if (value && (name === 'from' || name === 'to')) {
      const date = new Date(value);
      value = isNaN(date) ? '' : date.toISOString();
    }
    if (value) next.set(name, value);
  }
  location.search = next.toString();
});

function pageLink(name, value) {
  const params = new URLSearchParams();
  params.set(name, value);
  return '?' + params.toString();
}

function exportLink(format) {
  const params = new URLSearchParams(filter);
  params.set('format', format);
  return tenantApi('/audit/export?' + params.toString());
}
$('export-csv').href = exportLink('csv');
$('export-json').href = exportLink('json');

// Settings saves and rollbacks read as the history above does: what changed,
// and which version a rollback restored; the raw record stays one click away.
function isSettings(value) {
  return value != null && Array.isArray(value.user_groups) && Array.isArray(value.device_groups);
}

function summary(e) {
  const lines = [];
  if (e.after && e.after.restored_from) lines.push(el('div', { class: 'hint' }, 'Restored from v' + e.after.restored_from));
  if (isSettings(e.before) && isSettings(e.after)) lines.push(diff(e.before, e.after));
  else if (e.before === null && isSettings(e.after)) lines.push(diff({ enabled_by_default: false, user_groups: [], device_groups: [], logout_on_enable: false }, e.after));
  return lines;
}

function details(e) {
  if (e.before == null && e.after == null) return '';
  const parts = [];
  if (e.before != null) parts.push(el('div', {}, el('strong', {}, 'Before: '), el('code', {}, JSON.stringify(e.before))));
  if (e.after != null) parts.push(el('div', {}, el('strong', {}, 'After: '), el('code', {}, JSON.stringify(e.after))));
  return [...summary(e), el('details', {}, el('summary', {}, 'Show'), parts)];
}

function row(e) {
  const who = e.principal && e.principal.id ? e.principal.id : e.actor;
  return el('tr', {},
    el('td', { title: e.at }, when(e.at)),
    el('td', {}, el('a', { href: pageLink('actor', who), title: 'Only ' + e.actor }, e.actor)),
    el('td', {}, el('a', { href: pageLink('action', e.action), title: 'Only ' + e.action }, e.action)),
    el('td', {}, el('a', { href: pageLink('target', e.target), title: 'Only ' + e.target }, e.target)),
    el('td', {}, details(e)));
}

let cursor = null;
let shown = 0;
async function loadActivity() {
  $('load-more').disabled = true;
  const params = new URLSearchParams(filter);
  params.set('limit', '50');
  if (cursor) params.set('cursor', cursor);
  const answer = await api('GET', tenantApi('/audit?' + params.toString()));
  $('load-more').disabled = false;
  if (!answer.ok) {
    $('audit-status').replaceChildren(el('span', { class: 'error' }, errorText(answer)));
    show($('load-more'), false);
    return;
  }
  for (const e of answer.body.items) $('audit').append(row(e));
  shown += answer.body.items.length;
  cursor = answer.body.next_cursor || null;
  show($('load-more'), cursor !== null);
  const filtered = [...filter.keys()].length > 0;
  let status;
  if (shown === 0) status = filtered ? 'No event matches these filters.' : 'No events yet.';
  else status = shown + (shown === 1 ? ' event' : ' events') + (cursor ? ' shown, newest first; more are older.' : (filtered ? ', every one that matches.' : ', the whole log.'));
  $('audit-status').textContent = status;
}
$('load-more').addEventListener('click', loadActivity);
loadActivity();
