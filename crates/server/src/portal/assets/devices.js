'use strict';
const $ = (id) => document.getElementById(id);
$('search').value = PAGE.search || '';
for (const s of PAGE.services) $('service').append(el('option', { value: s.id, selected: s.id === PAGE.service }, s.display_name));
$('state').value = PAGE.state || '';
$('head').append(el('tr', {}, el('th', { scope: 'col' }, 'Host'), el('th', { scope: 'col' }, 'User'), el('th', { scope: 'col' }, 'Device'),
  el('th', { scope: 'col' }, 'Client'), ...PAGE.services.map((s) => el('th', { scope: 'col', title: s.display_name }, s.short)), el('th', { scope: 'col' }, 'Last sync')));
for (const d of PAGE.items) {
  $('rows').append(el('tr', {},
    el('td', {}, el('a', { href: tenantPage('/devices/' + encodeURIComponent(d.id)) }, d.hostname)),
    el('td', {}, d.user_name),
    el('td', {}, d.ownership + ' ' + d.os),
    el('td', {}, d.client_version),
    ...PAGE.services.map((s) => el('td', {}, badge(d.services[s.id] && d.services[s.id].enabled))),
    el('td', {}, when(d.last_sync_at))));
}
$('caption').textContent = PAGE.items.length
  ? PAGE.items.length + ' device(s)' + (PAGE.more ? ' (the first 200; narrow the search to see others)' : '')
  : 'No device matches. Devices appear here once their agent enrolls.';
