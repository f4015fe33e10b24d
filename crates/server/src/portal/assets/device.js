'use strict';
const $ = (id) => document.getElementById(id);
const d = PAGE.device;
$('back').href = tenantPage('/devices');
$('title').textContent = d.report.hostname + ' — ' + d.user_name;
for (const { service, decision } of PAGE.services) {
  $('services').append(el('div', { class: 'field', 'data-service': service.id },
    el('h3', {}, service.display_name + ' ', badge(decision.enabled)),
    el('p', { 'data-explanation': service.id }, decision.explanation),
    el('p', { class: 'hint' }, 'Reason code: ', el('code', {}, decision.reason))));
}
const rows = [['User', d.user_name], ['Operating system', d.report.os], ['Ownership', d.report.ownership], ['Client version', d.report.client_version],
  ...Object.entries(d.report.posture).map(([k, v]) => ['Posture: ' + k, String(v)]), ['Enrolled', when(d.enrolled_at)], ['Last sync', when(d.last_sync_at)]];
for (const [k, v] of rows) $('report').append(el('tr', {}, el('th', { scope: 'row' }, k), el('td', {}, v)));
if (PAGE.device_groups.length === 0) $('groups').append(el('li', { class: 'hint' }, 'In no device group.'));
for (const g of PAGE.device_groups) $('groups').append(el('li', {}, g.name));
