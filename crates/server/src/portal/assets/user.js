'use strict';
// A user's page: identity, groups (direct, and through nesting with the path
// that makes it so), each device with every service's decision and its
// explanation, and the user's side of each decision.
const $ = (id) => document.getElementById(id);
const u = PAGE.user;
const serviceName = Object.fromEntries(PAGE.services.map((s) => [s.id, s.display_name]));
const groupLink = (g) => el('a', { href: tenantPage('/groups/' + encodeURIComponent(g.id)) }, g.display_name);

$('back').href = tenantPage('/users');
$('title').textContent = u.display_name ? u.display_name + ' (' + u.user_name + ')' : u.user_name;

const identity = [
  ['Login name', u.user_name],
  ['Display name', u.display_name || '—'],
  ['Email', u.email || '—'],
  ['Status', u.active
    ? el('span', { class: 'badge on' }, 'Active')
    : el('span', {}, el('span', { class: 'badge off' }, 'Deactivated'), ' Deprovisioned in the directory: every device of this user gets no service.')],
  ['Identity provider id (SCIM externalId)', u.external_id || '—'],
];
for (const [k, v] of identity) $('identity').append(el('tr', {}, el('th', { scope: 'row' }, k), el('td', { 'data-field': k }, v)));

const direct = u.groups.filter((g) => g.direct);
const nested = u.groups.filter((g) => !g.direct);
for (const g of direct) $('direct').append(el('li', { 'data-group': g.id }, groupLink(g)));
if (direct.length === 0) $('direct').append(el('li', { class: 'hint' }, 'In no group.'));
// "Engineering via Platform → Engineering": the user's own group first.
for (const g of nested) {
  $('nested').append(el('li', { 'data-group': g.id }, groupLink(g), ' via ', g.path.map((p) => p.display_name).join(' → ')));
}
if (nested.length === 0) $('nested').append(el('li', { class: 'hint' }, 'None.'));

function decisionLine(serviceId, decision) {
  return el('li', { 'data-service': serviceId },
    el('strong', {}, serviceName[serviceId] || serviceId), ' ', badge(decision.enabled), ' ',
    el('span', { 'data-explanation': serviceId }, decision.explanation));
}

if (u.devices.length === 0) {
  $('no-devices').textContent = (u.display_name || u.user_name) + ' has no enrolled device, so no service runs anywhere for them yet. Below is what a device of theirs would get.';
  show($('no-devices'), true);
  $('device-table').remove();
} else {
  $('device-head').append(el('tr', {}, el('th', { scope: 'col' }, 'Device'), el('th', { scope: 'col' }, 'OS'), el('th', { scope: 'col' }, 'Client'),
    ...PAGE.services.map((s) => el('th', { scope: 'col' }, s.short))));
  for (const d of u.devices) {
    $('devices').append(el('tr', { 'data-device': d.id },
      el('td', {}, el('a', { href: tenantPage('/devices/' + encodeURIComponent(d.id)) }, d.hostname)),
      el('td', {}, d.os), el('td', {}, d.client_version),
      ...PAGE.services.map((s) => el('td', {}, d.decisions[s.id] ? badge(d.decisions[s.id].enabled) : '—'))));
    $('explanations').append(el('div', { class: 'field', 'data-device': d.id },
      el('h3', {}, 'Why, on ' + d.hostname),
      el('p', { class: 'hint' }, 'Device groups: ' + (d.device_groups.length ? d.device_groups.map((g) => g.display_name).join(', ') : 'none') +
        (d.pending_approval ? '. Waits for approval.' : '.')),
      el('ul', {}, ...PAGE.services.filter((s) => d.decisions[s.id]).map((s) => decisionLine(s.id, d.decisions[s.id])))));
  }
  if (u.more_devices) $('explanations').append(el('p', { class: 'hint' }, 'Showing the first 200 devices.'));
}
$('user-side').append(el('ul', {}, ...PAGE.services.filter((s) => u.user_side[s.id]).map((s) => decisionLine(s.id, u.user_side[s.id]))));
