'use strict';
const $ = (id) => document.getElementById(id);
$('last').textContent = PAGE.last_scim_request_at ? when(PAGE.last_scim_request_at) : 'never';
$('users').replaceChildren(el('a', { href: tenantPage('/users'), id: 'users-link' }, String(PAGE.users)), ' ', el('a', { href: tenantPage('/users'), class: 'hint' }, 'See every user'));
$('groups').textContent = String(PAGE.groups);
$('scim-url').textContent = location.origin + PAGE.scim_base_path;
const serviceName = Object.fromEntries(PAGE.services.map((s) => [s.id, s.display_name]));
for (const g of PAGE.group_items) {
  $('rows').append(el('tr', { 'data-group': g.id }, el('td', {}, el('a', { href: tenantPage('/groups/' + encodeURIComponent(g.id)) }, g.display_name)), el('td', {}, String(g.member_count)), el('td', { 'data-effective': g.id }, String(g.effective_members)), el('td', {}, g.nested.join(', ') || '—'), el('td', {}, g.source),
    el('td', { class: 'used-by' }, g.used_by.length ? g.used_by.map((id) => serviceName[id] || id).join(', ') : el('span', { class: 'hint' }, 'Not used'))));
}
if (PAGE.group_items.length === 0) $('rows').append(el('tr', {}, el('td', { colspan: 6, class: 'hint' }, 'No groups yet: they appear as soon as your identity provider pushes them.')));
if (PAGE.more_groups) $('rows').append(el('tr', {}, el('td', { colspan: 6, class: 'hint' }, 'Showing the first 200 groups by name.')));
for (const e of PAGE.recent_errors) $('errors').append(el('tr', {}, el('td', {}, when(e.at)), el('td', {}, e.request), el('td', {}, String(e.status)), el('td', {}, e.detail)));
if (PAGE.recent_errors.length === 0) $('errors').append(el('tr', {}, el('td', { colspan: 4, class: 'hint' }, 'None: every recent request from the identity provider succeeded.')));
