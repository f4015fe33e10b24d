'use strict';
// The SCIM setup page: base URL, tokens (rotation with a grace period, the new
// token shown once), step-by-step tabs with copy buttons, and the last request
// and recent errors, polled while the page is visible.
const $ = (id) => document.getElementById(id);
const POLL_MS = 5000;
// The new token lives only in this page's memory, from its rotation on.
let newToken = null;

/** The SCIM base URL: the server's --public-url, or the address of this page. */
function baseUrl() {
  return PAGE.scim_base_url || (location.origin + PAGE.scim_base_path);
}

for (const node of document.querySelectorAll('.base-url')) node.textContent = baseUrl();
if (PAGE.scim_base_url) $('base-url-hint').textContent = 'From the server\'s --public-url setting.';

// Copy buttons: the clipboard where the browser allows it (https or
// localhost), or else the text is selected for Ctrl+C.
function copyText(button) {
  if (button.dataset.copy === 'base-url') return baseUrl();
  if (button.dataset.copy === 'token') return newToken;
  return button.dataset.copyText;
}

function select(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

function say(button, text) {
  $('copy-status').textContent = text;
  const label = button.textContent;
  button.textContent = text.startsWith('Copied') ? 'Copied' : 'Selected';
  setTimeout(() => { button.textContent = label; }, 2000);
}

async function copy(button) {
  const text = copyText(button);
  if (!text) return;
  // The token's text shows only in its own box; other values beside their button.
  const shown = button.dataset.copy === 'token' ? $('new-token') : button.parentElement.querySelector('code');
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard here');
    await navigator.clipboard.writeText(text);
    say(button, 'Copied to the clipboard');
  } catch (error) {
    if (shown) select(shown);
    say(button, 'Selected: press Ctrl+C (⌘C on a Mac) to copy');
  }
}

for (const button of document.querySelectorAll('button.copy')) button.addEventListener('click', () => copy(button));

// Tabs: arrow keys move between them, as for any tab list.
const tabs = [...document.querySelectorAll('[role="tab"]')];
function choose(tab, focus) {
  for (const other of tabs) {
    const on = other === tab;
    other.setAttribute('aria-selected', String(on));
    other.tabIndex = on ? 0 : -1;
    $(other.getAttribute('aria-controls')).hidden = !on;
  }
  if (focus) tab.focus();
}
tabs.forEach((tab, i) => {
  tab.addEventListener('click', () => choose(tab, false));
  tab.addEventListener('keydown', (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) { event.preventDefault(); choose(tabs[(i + step + tabs.length) % tabs.length], true); }
    if (event.key === 'Home') { event.preventDefault(); choose(tabs[0], true); }
    if (event.key === 'End') { event.preventDefault(); choose(tabs[tabs.length - 1], true); }
  });
});
// Open on the identity provider that last called, if it is Okta.
if (PAGE.last_request && PAGE.last_request.identity_provider === 'Okta') choose($('tab-okta'), false);

function duration(seconds) {
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  if (hours >= 48) return Math.floor(hours / 24) + ' days ' + (hours % 24) + ' h';
  return (hours ? hours + ' h ' : '') + minutes + ' min';
}

function tokenStatus(token) {
  switch (token.status) {
    case 'current': return el('span', { class: 'badge on' }, 'Current');
    case 'grace': return el('span', {}, el('span', { class: 'badge pending' }, 'Grace period'), ' works ' + duration(token.grace_seconds_left || 0) + ' more, until ' + when(token.expires_at));
    case 'expired': return el('span', {}, el('span', { class: 'badge off' }, 'Expired'), ' ' + when(token.expires_at));
    default: return el('span', {}, el('span', { class: 'badge off' }, 'Revoked'), ' ' + when(token.revoked_at));
  }
}

function tokenName(token) {
  if (token.status === 'current') return 'Current token';
  if (token.status === 'grace') return 'Previous token';
  return 'Older token';
}

async function endGrace(token, button) {
  if (!confirm('End the previous token\'s grace period now? An identity provider still using it is refused from now on.')) return;
  button.disabled = true;
  const answer = await api('DELETE', tenantApi('/scim-tokens/' + encodeURIComponent(token.id)));
  if (!answer.ok) showError(errorText(answer));
  await refresh();
}

function renderTokens(tokens) {
  const working = tokens.filter((t) => t.status === 'current' || t.status === 'grace');
  const ended = tokens.filter((t) => t.status !== 'current' && t.status !== 'grace').slice(0, 3);
  const rows = working.concat(ended).map((token) => el('tr', { 'data-token': token.status },
    el('th', { scope: 'row' }, tokenName(token)),
    el('td', {}, when(token.created_at)),
    el('td', {}, token.last_used_at ? when(token.last_used_at) : 'never'),
    el('td', {}, tokenStatus(token)),
    COMMON.can_write ? el('td', {}, token.status === 'grace'
      ? el('button', { type: 'button', class: 'danger', onclick: (event) => endGrace(token, event.currentTarget) }, 'End grace period now')
      : '') : null));
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 5, class: 'hint' }, 'No SCIM token: create one.')));
  $('tokens').replaceChildren(...rows);
}

function renderLast(last) {
  if (!last) {
    $('last-request').replaceChildren(el('p', { class: 'hint', 'data-last': 'none' }, 'No request from your identity provider has reached this server yet. Run its test connection, then watch here.'));
    return;
  }
  const ok = last.status < 400;
  $('last-request').replaceChildren(el('dl', { class: 'last', 'data-last': 'seen' },
    el('dt', {}, 'When'), el('dd', {}, when(last.at)),
    el('dt', {}, 'Request'), el('dd', {}, el('code', {}, last.method + ' ' + last.path)),
    el('dt', {}, 'Answer'), el('dd', {}, el('span', { class: 'badge ' + (ok ? 'on' : 'off') }, String(last.status)), ok ? ' succeeded' : ' refused (see the recent errors)'),
    el('dt', {}, 'Client'), el('dd', { id: 'last-client' }, last.identity_provider ? el('strong', {}, last.identity_provider) : 'not a known identity provider', last.user_agent ? ' (' + last.user_agent + ')' : ' (no user agent)')));
}

function renderErrors(errors) {
  const rows = errors.map((e) => el('tr', {}, el('td', {}, when(e.at)), el('td', {}, el('code', {}, e.request)), el('td', {}, String(e.status)), el('td', {}, e.detail)));
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 4, class: 'hint' }, 'None: every recent request from the identity provider succeeded.')));
  $('errors').replaceChildren(...rows);
}

function render(setup) {
  renderTokens(setup.tokens);
  renderLast(setup.last_request);
  renderErrors(setup.recent_errors);
}

let polling = false;
async function refresh() {
  if (polling) return;
  polling = true;
  try {
    const answer = await api('GET', tenantApi('/scim-setup'));
    if (answer.ok) render(answer.body);
  } finally {
    polling = false;
  }
}
render(PAGE);
setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });

function showError(text) {
  const node = $('rotate-error');
  if (!node) return;
  node.textContent = text;
  show(node, Boolean(text));
}

$('rotate-form')?.addEventListener('submit', async (event) => {
  event.preventDefault();
  const hours = Number($('grace').value);
  if (hours === 0 && !confirm('Create a new SCIM token and end the current one at once? Your identity provider is refused until it has the new token.')) return;
  showError('');
  $('rotate').disabled = true;
  const answer = await api('POST', tenantApi('/scim-token'), { grace_period_hours: hours });
  $('rotate').disabled = false;
  if (!answer.ok) { showError(errorText(answer)); return; }
  newToken = answer.body.scim_token;
  $('new-token').textContent = newToken;
  for (const slot of document.querySelectorAll('.token-slot')) slot.textContent = 'the new SCIM token (shown above, under SCIM token)';
  for (const button of document.querySelectorAll('button.copy[data-copy="token"]')) button.disabled = false;
  const previous = answer.body.previous;
  $('grace-note').textContent = previous
    ? 'The previous token keeps working until ' + when(previous.expires_at) + ', so provisioning goes on while you paste this one.'
    : 'The previous token stopped working: your identity provider needs this one now.';
  show($('new-token-box'), true);
  $('new-token-box').scrollIntoView({ block: 'nearest' });
  await refresh();
});

$('check').addEventListener('click', async () => {
  $('check').disabled = true;
  $('check-result').replaceChildren(el('p', { class: 'hint' }, 'Checking…'));
  const answer = await api('GET', tenantApi('/scim-setup/check'));
  $('check').disabled = false;
  if (!answer.ok) { $('check-result').replaceChildren(el('p', { class: 'error' }, errorText(answer))); return; }
  const result = answer.body;
  $('check-result').replaceChildren(
    el('ul', { class: 'checks' }, result.steps.map((step) => el('li', { 'data-ok': String(step.ok) },
      el('span', { class: 'badge ' + (step.ok ? 'on' : 'off') }, step.ok ? 'Passed' : (step.name === 'Identity provider' ? 'Not yet' : 'Failed')), ' ', el('strong', {}, step.name), ': ', step.detail))),
    el('p', { class: 'note' }, result.limits));
});
