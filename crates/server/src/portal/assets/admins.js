'use strict';
// The Admins page: accounts (invite, role, disable, sign out), API tokens
// (create with the secret shown once, revoke) and sessions. Every change is a
// call of /api/v1; after one, the three lists are read again from the API,
// so that a secret just shown stays on screen.
const $ = (id) => document.getElementById(id);
const ME = PAGE.me;
const state = { accounts: PAGE.accounts || [], tokens: PAGE.tokens || [], sessions: PAGE.sessions || [] };

function fail(answer) {
  const text = errorText(answer);
  $('page-error').textContent = text.charAt(0).toUpperCase() + text.slice(1) + '.';
  show($('page-error'), true);
  $('page-error').focus?.();
}

let toastTimer = null;
function toast(text) {
  $('page-status').textContent = text;
  show($('page-status'), true);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => show($('page-status'), false), 4000);
}

async function refresh() {
  const calls = [api('GET', tenantApi('/sessions'))];
  if (COMMON.can_write) calls.push(api('GET', tenantApi('/accounts')), api('GET', tenantApi('/tokens')));
  const [sessions, accounts, tokens] = await Promise.all(calls);
  if (sessions.status === 401) { location.href = '/login'; return; }
  for (const answer of [sessions, accounts, tokens]) if (answer && !answer.ok) { fail(answer); return; }
  state.sessions = sessions.body.items;
  if (accounts) state.accounts = accounts.body.items;
  if (tokens) state.tokens = tokens.body.items;
  render();
}

/** Runs a change after an optional confirmation; refreshes the lists after it. */
async function change(question, method, path, body, done) {
  if (question && !confirm(question)) return;
  show($('page-error'), false);
  const answer = await api(method, path, body);
  if (!answer.ok) { fail(answer); return; }
  if (done) done(answer);
  await refresh();
}

const STATUS_BADGE = { active: 'on', disabled: 'off', invited: 'pending', expired: 'off', revoked: 'off' };
function statusBadge(status) {
  return el('span', { class: 'badge ' + (STATUS_BADGE[status] || 'off') }, status);
}

function actionButton(label, name, onclick, danger) {
  return el('button', { type: 'button', class: danger ? 'danger' : null, 'aria-label': label + ' ' + name, onclick }, label);
}

function accountRow(a) {
  const own = a.id === ME.account_id;
  const path = tenantApi('/accounts/' + encodeURIComponent(a.id));
  const actions = [];
  if (a.status === 'invited') {
    actions.push(actionButton('New link', a.email, () => invite(a.email, a.role)));
  }
  if (!own) {
    const other = a.role === 'admin' ? 'viewer' : 'admin';
    actions.push(actionButton('Make ' + other, a.email, () => change(
      'Make ' + a.email + ' ' + (other === 'admin' ? 'an admin (read and change everything in this tenant)' : 'a viewer (read only)') + '?',
      'PATCH', path, { role: other })));
    actions.push(a.disabled
      ? actionButton('Enable', a.email, () => change(null, 'PATCH', path, { disabled: false }))
      : actionButton('Disable', a.email, () => change(
        'Disable ' + a.email + '? The account is signed out everywhere at once and cannot sign in until enabled again.',
        'PATCH', path, { disabled: true }), true));
  }
  if (a.sessions > 0) {
    actions.push(actionButton('Sign out', a.email, () => change(
      'Sign ' + a.email + ' out of ' + a.sessions + ' session' + (a.sessions === 1 ? '' : 's') + '?',
      'DELETE', path + '/sessions', undefined, () => { if (own) location.href = '/login'; })));
  }
  const status = a.status === 'invited' && a.invitation_expires_at
    ? [statusBadge(a.status), ' ', el('span', { class: 'hint' }, (new Date(a.invitation_expires_at) < new Date() ? 'link expired ' : 'link valid until ') + when(a.invitation_expires_at))]
    : [statusBadge(a.status)];
  return el('tr', { 'data-account': a.email },
    el('td', {}, a.email, own ? el('span', { class: 'hint' }, ' (you)') : null),
    el('td', {}, a.role), el('td', {}, status),
    el('td', {}, when(a.created_at)), el('td', {}, a.last_sign_in_at ? when(a.last_sign_in_at) : 'never'),
    el('td', {}, String(a.sessions)),
    el('td', {}, el('div', { class: 'actions' }, actions)));
}

function tokenRow(t) {
  const actions = t.status === 'active'
    ? actionButton('Revoke', t.name, () => change(
      'Revoke the token “' + t.name + '”? Programs using it are refused at once; this cannot be undone.',
      'DELETE', tenantApi('/tokens/' + encodeURIComponent(t.id)), undefined, () => toast('Token ' + t.name + ' revoked.')), true)
    : null;
  return el('tr', { 'data-token': t.name },
    el('td', {}, t.name), el('td', {}, t.role), el('td', {}, t.created_by || 'unknown'),
    el('td', {}, when(t.created_at)), el('td', {}, t.expires_at ? when(t.expires_at) : 'never'),
    el('td', {}, t.last_used_at ? when(t.last_used_at) : 'never'), el('td', {}, statusBadge(t.status)),
    el('td', {}, actions));
}

/** A short name for a browser, from its User-Agent; the whole text is the title. */
function browserName(agent) {
  if (!agent) return '';
  const browser = /Edg\//.test(agent) ? 'Edge' : /Firefox\//.test(agent) ? 'Firefox' : /Chrom(e|ium)\//.test(agent) ? 'Chrome'
    : /Safari\//.test(agent) ? 'Safari' : /curl\//.test(agent) ? 'curl' : 'browser';
  const os = /Windows/.test(agent) ? 'Windows' : /iPhone|iPad/.test(agent) ? 'iOS' : /Android/.test(agent) ? 'Android'
    : /Mac OS X|Macintosh/.test(agent) ? 'macOS' : /Linux/.test(agent) ? 'Linux' : '';
  return os ? browser + ' on ' + os : browser;
}

function sessionRow(s) {
  const mine = s.account_id === ME.account_id;
  const from = [s.address, browserName(s.user_agent)].filter(Boolean).join(' · ') || 'unknown';
  return el('tr', { 'data-session': s.id, class: s.current ? 'current' : null },
    el('td', {}, s.email, s.current ? el('span', { class: 'badge on current-mark' }, 'this session') : null),
    el('td', {}, when(s.created_at)), el('td', {}, when(s.last_seen_at)), el('td', {}, when(s.expires_at)),
    el('td', { title: s.user_agent || '' }, from),
    el('td', {}, (COMMON.can_write || mine) ? actionButton('Sign out', s.current ? 'this session' : s.email + ' ' + when(s.created_at), () => change(
      s.current ? 'Sign out of this session?' : 'End this session of ' + s.email + '? They are signed out at their next click.',
      'DELETE', tenantApi('/sessions/' + encodeURIComponent(s.id)), undefined, () => { if (s.current) location.href = '/login'; })) : null));
}

function fill(body, rows, empty, columns) {
  body.replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: columns, class: 'hint' }, empty))]));
}

function render() {
  if ($('account-rows')) fill($('account-rows'), state.accounts.map(accountRow), 'No portal account yet: invite someone.', 7);
  if ($('token-rows')) fill($('token-rows'), state.tokens.map(tokenRow), 'No API token yet.', 8);
  fill($('session-rows'), state.sessions.map(sessionRow), 'No open session.', 6);
}

async function copy(input, button) {
  input.select();
  let copied = false;
  try { await navigator.clipboard.writeText(input.value); copied = true; } catch (e) {
    try { copied = document.execCommand('copy'); } catch (ignored) { copied = false; }
  }
  button.textContent = copied ? 'Copied' : 'Select and copy it';
}

async function invite(email, role) {
  show($('page-error'), false);
  const answer = await api('POST', tenantApi('/invitations'), { email, role });
  if (!answer.ok) { fail(answer); return; }
  const link = answer.body.invitation_url || (location.origin + answer.body.invitation_path);
  $('invite-for').textContent = (answer.body.replaced ? 'New invitation link for ' : 'Send this link to ') + answer.body.account.email +
    ' (' + answer.body.account.role + '); it works once, until ' + when(answer.body.expires_at) + '.' +
    (answer.body.replaced ? ' The earlier link no longer works.' : '') +
    (PAGE.sso ? ' They may also simply sign in with ' + PAGE.sso + '.' : '');
  $('invite-link').value = link;
  $('copy-invite').textContent = 'Copy link';
  show($('invite-result'), true);
  $('invite-link').focus();
  await refresh();
}

$('invite-form')?.addEventListener('submit', async (event) => {
  event.preventDefault();
  const email = $('invite-email').value.trim();
  if (!email) { fail({ status: 422, body: { error: { message: 'enter the email of the person to invite' } } }); $('invite-email').focus(); return; }
  await invite(email, $('invite-role').value);
  if (!$('invite-result').hidden) $('invite-email').value = '';
});
$('copy-invite')?.addEventListener('click', () => copy($('invite-link'), $('copy-invite')));

const DAY = 24 * 3600 * 1000;
const isoDate = (date) => date.toISOString().slice(0, 10);
if ($('token-date')) {
  $('token-date').min = isoDate(new Date(Date.now() + DAY));
  $('token-date').max = isoDate(new Date(Date.now() + 365 * DAY));
}
$('token-expiry')?.addEventListener('change', () => show($('token-date-field'), $('token-expiry').value === 'date'));

$('token-form')?.addEventListener('submit', async (event) => {
  event.preventDefault();
  show($('page-error'), false);
  const body = { name: $('token-name').value.trim(), role: $('token-role').value };
  if (!body.name) { fail({ status: 422, body: { error: { message: 'give the token a name that says who or what uses it' } } }); $('token-name').focus(); return; }
  if ($('token-expiry').value === 'date') {
    const day = $('token-date').value;
    // The end of the chosen day, in the viewer's time zone.
    const at = day ? new Date(day + 'T23:59:59') : null;
    if (!at || isNaN(at) || at <= new Date() || at > new Date(Date.now() + 366 * DAY)) {
      fail({ status: 422, body: { error: { message: 'choose an expiry date from tomorrow to one year from now' } } });
      $('token-date').focus();
      return;
    }
    body.expires_at = at.toISOString();
  } else {
    body.expires_in_days = Number($('token-expiry').value);
  }
  const answer = await api('POST', tenantApi('/tokens'), body);
  if (!answer.ok) { fail(answer); return; }
  $('token-for').textContent = 'The ' + answer.body.role + ' token “' + answer.body.name + '”' + (answer.body.expires_at ? ', valid until ' + when(answer.body.expires_at) : '') + ':';
  $('token-secret').value = answer.body.token;
  $('copy-token').textContent = 'Copy token';
  show($('token-result'), true);
  $('token-secret').focus();
  $('token-name').value = '';
  await refresh();
});
$('copy-token')?.addEventListener('click', () => copy($('token-secret'), $('copy-token')));

$('sign-out-everywhere').addEventListener('click', async () => {
  if (!confirm('Sign out everywhere? Every session of your account ends, this one included, on every device.')) return;
  const answer = await api('DELETE', '/api/v1/me/sessions');
  if (!answer.ok && answer.status !== 401) { fail(answer); return; }
  location.href = '/login';
});

render();
