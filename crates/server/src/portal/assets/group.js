'use strict';
// A group's page: its members directly and through nested groups (paged
// through the API, so a group of thousands loads a page at a time), the
// groups nested inside it and around it, and the entitlements that reach it.
const $ = (id) => document.getElementById(id);
const g = PAGE.group;
const serviceName = Object.fromEntries(PAGE.services.map((s) => [s.id, s.display_name]));
const groupLink = (x) => el('a', { href: tenantPage('/groups/' + encodeURIComponent(x.id)) }, x.display_name);
let cursor = PAGE.next_cursor;

$('back').href = tenantPage('/directory');
$('title').textContent = g.display_name;
$('counts').textContent = PAGE.active + (PAGE.active === 1 ? ' active member' : ' active members') + ', directly or through nested groups, each counted once'
  + (PAGE.total !== PAGE.active ? ' (' + (PAGE.total - PAGE.active) + ' deactivated not counted)' : '') + '. This is the number the group pickers show.';

function memberRow(m) {
  return el('tr', { 'data-user': m.user_name },
    el('td', {}, el('a', { href: tenantPage('/users/' + encodeURIComponent(m.user_name)) }, m.user_name)),
    el('td', {}, m.display_name || '—'),
    el('td', { class: m.via.length ? '' : 'hint' }, m.via.length ? 'via ' + m.via.map((v) => v.display_name).join(' → ') : 'Direct'),
    el('td', {}, m.active ? el('span', { class: 'badge on' }, 'Active') : el('span', { class: 'badge off' }, 'Deactivated')));
}
$('members').append(...PAGE.members.map(memberRow));
if (PAGE.members.length === 0) $('members').append(el('tr', {}, el('td', { colspan: 4, class: 'hint' }, 'No members, directly or through nested groups.')));
show($('more'), Boolean(cursor));
$('more').addEventListener('click', async () => {
  $('more').disabled = true;
  const path = tenantApi('/groups/' + encodeURIComponent(g.id) + '/members?limit=' + PAGE.page_size + '&cursor=' + encodeURIComponent(cursor));
  const answer = await api('GET', path);
  $('more').disabled = false;
  if (!answer.ok) { $('more-status').replaceChildren(el('span', { class: 'error' }, errorText(answer))); return; }
  $('members').append(...answer.body.items.map(memberRow));
  cursor = answer.body.next_cursor;
  $('more-status').textContent = 'Showing ' + $('members').children.length + ' of ' + PAGE.total + '.';
  show($('more'), Boolean(cursor));
});

function nestedItem(x) {
  const between = x.path.slice(1, -1);
  return el('li', { 'data-group': x.id }, groupLink(x), between.length ? ' (through ' + between.map((p) => p.display_name).join(' → ') + ')' : '');
}
$('inside').append(...g.inside.map(nestedItem));
if (g.inside.length === 0) $('inside').append(el('li', { class: 'hint' }, 'None.'));
$('around').append(...g.around.map(nestedItem));
if (g.around.length === 0) $('around').append(el('li', { class: 'hint' }, 'None: it is a top-level group.'));
for (const s of g.selected_by) {
  $('selected').append(el('li', { 'data-service': s.service },
    el('a', { href: tenantPage('/entitlements/' + s.service) }, serviceName[s.service] || s.service),
    s.through.id === g.id ? ' selects this group.' : [' reaches it through ', groupLink(s.through), '.']));
}
if (g.selected_by.length === 0) $('selected').append(el('li', { class: 'hint' }, 'No entitlement selects it or a group around it.'));
