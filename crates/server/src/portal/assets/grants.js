'use strict';
// The grants page: time-bound grants (list, create, revoke) and scheduled
// entitlement changes (list, cancel). Every change is a call of /api/v1; the
// lists are read again from the API after each one.
const $ = (id) => document.getElementById(id);
const SERVICES = PAGE.services || [];
const state = { grants: PAGE.grants || [], changes: PAGE.changes || [] };

function serviceName(id) {
  const found = SERVICES.find((s) => s.id === id);
  return found ? found.display_name : id;
}

function fail(answer) {
  const text = errorText(answer);
  $('page-error').textContent = text.charAt(0).toUpperCase() + text.slice(1) + '.';
  show($('page-error'), true);
}

let toastTimer = null;
function toast(text) {
  $('page-status').textContent = text;
  show($('page-status'), true);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => show($('page-status'), false), 4000);
}

async function refresh() {
  const [grants, changes] = await Promise.all([api('GET', tenantApi('/grants')), api('GET', tenantApi('/scheduled-changes'))]);
  if (grants.status === 401) { location.href = '/login'; return; }
  for (const answer of [grants, changes]) if (!answer.ok) { fail(answer); return; }
  state.grants = grants.body.items;
  state.changes = changes.body.items;
  render();
}

const STATE_BADGE = { active: 'on', upcoming: 'pending', pending: 'pending', applied: 'on' };
function stateBadge(text) {
  return el('span', { class: 'badge ' + (STATE_BADGE[text] || 'off') }, text);
}

function grantRow(g) {
  const actions = [];
  if (COMMON.can_write && (g.state === 'active' || g.state === 'upcoming')) {
    actions.push(el('button', { type: 'button', class: 'danger', 'aria-label': 'Revoke the grant of ' + serviceName(g.service) + ' to ' + g.user_name, onclick: async () => {
      if (!confirm('Revoke the grant of ' + serviceName(g.service) + ' to ' + g.user_name + ' now? Their devices lose it within seconds.')) return;
      show($('page-error'), false);
      const answer = await api('DELETE', tenantApi('/grants/' + encodeURIComponent(g.id)));
      if (!answer.ok) { fail(answer); return; }
      toast('Revoked the grant to ' + g.user_name + '.');
      await refresh();
    } }, 'Revoke'));
  }
  return el('tr', {},
    el('td', {}, el('a', { href: tenantPage('/users/' + encodeURIComponent(g.user_name)) }, g.user_name)),
    el('td', {}, serviceName(g.service), g.overrides_exclusions ? el('span', { class: 'hint' }, ' (overrides exclusions)') : null),
    el('td', {}, g.device_id ? el('a', { href: tenantPage('/devices/' + encodeURIComponent(g.device_id)) }, 'one device') : 'every device'),
    el('td', {}, when(g.starts_at)),
    el('td', {}, when(g.ends_at)),
    el('td', {}, stateBadge(g.state)),
    el('td', {}, g.justification, el('div', { class: 'hint' }, 'by ' + g.created_by.name)),
    el('td', {}, actions));
}

function describe(settings) {
  const parts = [settings.enabled_by_default ? 'enabled by default' : 'groups only'];
  parts.push((settings.user_groups || []).length + ' user group(s)');
  parts.push((settings.device_groups || []).length + ' device group(s)');
  return parts.join(', ');
}

function changeRow(c) {
  const actions = [];
  if (COMMON.can_write && c.status === 'pending') {
    actions.push(el('button', { type: 'button', class: 'danger', 'aria-label': 'Cancel the change of ' + serviceName(c.service) + ' due ' + when(c.apply_at), onclick: async () => {
      if (!confirm('Cancel the change of ' + serviceName(c.service) + ' due ' + when(c.apply_at) + '?')) return;
      show($('page-error'), false);
      const answer = await api('DELETE', tenantApi('/scheduled-changes/' + encodeURIComponent(c.id)));
      if (!answer.ok) { fail(answer); return; }
      toast('Cancelled the change of ' + serviceName(c.service) + '.');
      await refresh();
    } }, 'Cancel'));
  }
  const outcome = [c.message, c.config_version ? 'version ' + c.config_version : null].filter(Boolean).join('; ');
  return el('tr', {},
    el('td', {}, el('a', { href: tenantPage('/entitlements/' + encodeURIComponent(c.service)) }, serviceName(c.service))),
    el('td', {}, when(c.apply_at)),
    el('td', {}, stateBadge(c.status)),
    el('td', {}, c.created_by.name),
    el('td', {}, describe(c.settings)),
    el('td', {}, outcome),
    el('td', {}, actions));
}

function render() {
  $('grants').replaceChildren(...(state.grants.length ? state.grants.map(grantRow)
    : [el('tr', {}, el('td', { colspan: 8, class: 'hint' }, 'No grants yet.'))]));
  $('changes').replaceChildren(...(state.changes.length ? state.changes.map(changeRow)
    : [el('tr', {}, el('td', { colspan: 7, class: 'hint' }, 'No scheduled changes.'))]));
}

const FIELDS = ['user', 'service', 'duration', 'starts_at', 'justification'];
function clearErrors() {
  for (const field of FIELDS) show($('grant-' + field + '-error'), false);
  show($('grant-error'), false);
}

async function createGrant(event) {
  event.preventDefault();
  clearErrors();
  const starts = $('grant-starts').value;
  const body = {
    user: $('grant-user').value.trim(),
    service: $('grant-service').value,
    duration: $('grant-hours').value + 'h',
    justification: $('grant-justification').value,
    overrides_exclusions: $('grant-override').checked,
  };
  if (starts) body.starts_at = new Date(starts).toISOString();
  const answer = await api('POST', tenantApi('/grants'), body);
  if (!answer.ok) {
    const field = answer.body && answer.body.error && answer.body.error.field;
    const target = field === 'ends_at' ? 'duration' : field;
    const node = target && $('grant-' + target + '-error');
    if (node) { node.textContent = errorText(answer); show(node, true); } else {
      $('grant-error').textContent = answer.status === 404 ? 'No such user (or device) in this tenant.' : errorText(answer);
      show($('grant-error'), true);
    }
    return;
  }
  toast('Granted ' + serviceName(answer.body.service) + ' to ' + answer.body.user_name + ' until ' + when(answer.body.ends_at) + '.');
  $('grant-justification').value = '';
  await refresh();
}

const findUsers = debounce(async () => {
  const search = $('grant-user').value.trim();
  const answer = await api('GET', tenantApi('/users?limit=20&search=' + encodeURIComponent(search)));
  if (!answer.ok) return;
  $('grant-users').replaceChildren(...answer.body.items.map((u) => el('option', { value: u.user_name }, u.display_name || u.user_name)));
}, 250);

$('grant-service').replaceChildren(...SERVICES.map((s) => el('option', { value: s.id }, s.display_name)));
if (COMMON.can_write) {
  show($('grant-form'), true);
  $('grant-form').addEventListener('submit', createGrant);
  $('grant-user').addEventListener('input', findUsers);
}
render();
