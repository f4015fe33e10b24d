'use strict';
// The user list: searched and paged by the server (keyset cursor), one page
// of 50 at a time; each user links to their page.
const $ = (id) => document.getElementById(id);
$('back').href = tenantPage('/directory');
$('search').value = PAGE.search;
const one = PAGE.total === 1;
$('caption').textContent = PAGE.total + (one ? ' user' : ' users') + (PAGE.search ? (one ? ' matches “' : ' match “') + PAGE.search + '”' : ' in the directory') + '.';

function status(active) {
  return active ? el('span', { class: 'badge on' }, 'Active') : el('span', { class: 'badge off' }, 'Deactivated');
}

for (const u of PAGE.items) {
  $('rows').append(el('tr', { 'data-user': u.user_name },
    el('td', {}, el('a', { href: tenantPage('/users/' + encodeURIComponent(u.user_name)) }, u.user_name)),
    el('td', {}, u.display_name || '—'),
    el('td', {}, status(u.active)),
    el('td', {}, u.groups.length ? u.groups.join(', ') : el('span', { class: 'hint' }, 'None'))));
}
if (PAGE.items.length === 0) {
  $('rows').append(el('tr', {}, el('td', { colspan: 4, class: 'hint' },
    PAGE.search ? 'No user matches “' + PAGE.search + '”.' : 'No users yet: they appear as soon as your identity provider pushes them.')));
}

const query = (cursor) => {
  const params = new URLSearchParams();
  if (PAGE.search) params.set('search', PAGE.search);
  if (cursor) params.set('cursor', cursor);
  const text = params.toString();
  return tenantPage('/users') + (text ? '?' + text : '');
};
if (!PAGE.first_page) $('pager').append(el('a', { href: query(null) }, '← First page'));
if (PAGE.next_cursor) $('pager').append(el('a', { href: query(PAGE.next_cursor), id: 'next-page' }, 'Next page →'));
