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
  if (before.logout_on_enable !== after.logout_on_enable) lines.push(el('div', {}, 'Logout on enable: ', el('del', {}, String(before.logout_on_enable)), ' → ', el('ins', {}, String(after.logout_on_enable))));
  return lines.length ? el('div', { class: 'diff' }, lines) : el('span', { class: 'hint' }, 'saved without change');
}

for (const v of PAGE.versions) {
  $('versions').append(el('tr', {},
    el('td', {}, String(v.config_version)), el('td', {}, serviceName[v.service] || v.service), el('td', {}, v.actor), el('td', {}, when(v.at)),
    el('td', {}, diff(v.before, v.after)),
    el('td', {}, COMMON.can_write ? el('button', { type: 'button', onclick: () => rollback(v) }, 'Restore this version') : '')));
}
if (PAGE.versions.length === 0) $('versions').append(el('tr', {}, el('td', { colspan: 6, class: 'hint' }, 'No entitlement change matches.')));
for (const e of PAGE.audit) $('audit').append(el('tr', {}, el('td', {}, when(e.at)), el('td', {}, e.actor), el('td', {}, e.action), el('td', {}, e.target)));

async function rollback(v) {
  if (!confirm('Restore ' + (serviceName[v.service] || v.service) + ' as it was after version ' + v.config_version + '? This is saved as a new version.')) return;
  const answer = await api('POST', tenantApi('/entitlements/rollback'), { config_version: v.config_version });
  if (answer.ok) { location.reload(); return; }
  $('rollback-status').replaceChildren(el('span', { class: 'error' }, errorText(answer)));
}
