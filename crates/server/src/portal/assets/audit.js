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
for (const e of PAGE.audit) $('audit').append(el('tr', {}, el('td', {}, when(e.at)), el('td', {}, e.actor), el('td', {}, e.action), el('td', {}, e.target)));

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
