'use strict';
// The entitlement form of one service: toggle, group pickers, logout option,
// a live impact preview, and Save with If-Match.
const service = PAGE.service;
const canWrite = COMMON.can_write;
let etag = PAGE.etag;
let saved = structuredClone(PAGE.settings);
const form = structuredClone(PAGE.settings);
const names = Object.assign({}, PAGE.group_names);
const deviceGroups = PAGE.device_groups;
const deviceGroupName = (id) => (deviceGroups.find((g) => g.id === id) || {}).name || PAGE.deleted_device_groups[id] || id;

const $ = (id) => document.getElementById(id);

// Tabs, one per service.
for (const s of PAGE.services) {
  $('tabs').append(el('a', { href: tenantPage('/entitlements/' + s.id), 'aria-current': s.id === service.id ? 'page' : false }, s.display_name + ' (' + s.short + ')'));
}
$('service-title').textContent = service.display_name;
$('enabled-label').textContent = service.label;
$('logout-label').textContent = 'Logout client when ' + service.display_name + ' entitlement is enabled';
$('legacy-help').textContent = 'Clients older than ' + service.min_version + ' do not honour group settings for ' + service.display_name + '; the preview counts them separately.';

if (!canWrite) {
  show($('readonly-note'), true);
  $('save').remove();
}

function render() {
  $('enabled-by-default').checked = form.enabled_by_default;
  $('logout-on-enable').checked = form.logout_on_enable;
  const locked = !canWrite || form.enabled_by_default;
  $('user-groups-field').disabled = locked;
  $('device-groups-field').disabled = locked;
  $('enabled-by-default').disabled = !canWrite;
  $('logout-on-enable').disabled = !canWrite;
  show($('groups-disabled-note'), canWrite && form.enabled_by_default);
  renderChips($('ug-chips'), form.user_groups, (id) => names[id] || id, (id) => { form.user_groups = form.user_groups.filter((g) => g !== id); changed(); });
  renderChips($('dg-chips'), form.device_groups, deviceGroupName, (id) => { form.device_groups = form.device_groups.filter((g) => g !== id); changed(); });
  if (PAGE.group_count === 0) {
    $('ug-help').replaceChildren('No user groups yet. Groups come from your company directory: connect your identity provider over SCIM on the ', el('a', { href: tenantPage('/directory') }, 'Directory page'), '.');
  } else {
    $('ug-help').textContent = form.user_groups.length ? '' : 'None selected.';
  }
  if (deviceGroups.length === 0) {
    $('dg-help').replaceChildren('No device groups yet. Define them on the ', el('a', { href: tenantPage('/device-groups') }, 'Device groups page'), '.');
  } else {
    $('dg-help').textContent = form.device_groups.length ? '' : 'None selected.';
  }
  const dirty = JSON.stringify(normalise(form)) !== JSON.stringify(normalise(saved));
  $('dirty-hint').textContent = dirty ? 'Unsaved changes' : '';
}

function normalise(s) {
  return { enabled_by_default: s.enabled_by_default, user_groups: [...s.user_groups].sort(), device_groups: [...s.device_groups].sort(), logout_on_enable: s.logout_on_enable };
}

function renderChips(list, ids, label, remove) {
  list.replaceChildren(...ids.map((id) => el('li', {}, label(id),
    el('button', { type: 'button', 'aria-label': 'Remove ' + label(id), onclick: () => remove(id) }, '×'))));
}

function changed() {
  $('save-status').textContent = '';
  show($('save-error'), false);
  render();
  refreshPreview();
}

$('enabled-by-default').addEventListener('change', (e) => { form.enabled_by_default = e.target.checked; changed(); });
$('logout-on-enable').addEventListener('change', (e) => { form.logout_on_enable = e.target.checked; changed(); });

// User-group picker: the server searches, so it stays fast with thousands of groups.
const searchUserGroups = debounce(async (text) => {
  const results = $('ug-results');
  if (!text.trim()) { results.replaceChildren(); show(results, false); return; }
  const answer = await api('GET', tenantApi('/groups?limit=20&search=' + encodeURIComponent(text.trim())));
  if (!answer.ok) { results.replaceChildren(el('li', { class: 'error' }, errorText(answer))); show(results, true); return; }
  const items = answer.body.items.filter((g) => !form.user_groups.includes(g.id));
  results.replaceChildren(...(items.length ? items.map((g) => el('li', {}, el('button', {
    type: 'button',
    onclick: () => { names[g.id] = g.display_name; form.user_groups.push(g.id); $('ug-search').value = ''; results.replaceChildren(); show(results, false); changed(); $('ug-search').focus(); },
  }, g.display_name + ' (' + g.member_count + ' members)'))) : [el('li', { class: 'hint' }, 'No group matches “' + text.trim() + '”.')]));
  show(results, true);
}, 150);
$('ug-search').addEventListener('input', (e) => searchUserGroups(e.target.value));

// Device-group picker: device groups are few, so they are filtered here.
$('dg-search').addEventListener('input', (e) => {
  const text = e.target.value.trim().toLowerCase();
  const results = $('dg-results');
  if (!text) { results.replaceChildren(); show(results, false); return; }
  const items = deviceGroups.filter((g) => g.name.toLowerCase().includes(text) && !form.device_groups.includes(g.id));
  results.replaceChildren(...(items.length ? items.map((g) => el('li', {}, el('button', {
    type: 'button',
    onclick: () => { form.device_groups.push(g.id); e.target.value = ''; results.replaceChildren(); show(results, false); changed(); e.target.focus(); },
  }, g.name + ' (' + g.matching_devices + ' devices)'))) : [el('li', { class: 'hint' }, 'No device group matches.')]));
  show(results, true);
});
for (const id of ['ug-search', 'dg-search']) {
  $(id).addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { $(id.replace('search', 'results')).hidden = true; }
    if (e.key === 'ArrowDown') { const first = $(id.replace('search', 'results')).querySelector('button'); if (first) { e.preventDefault(); first.focus(); } }
    if (e.key === 'Enter') { e.preventDefault(); const first = $(id.replace('search', 'results')).querySelector('button'); if (first) first.click(); }
  });
}

// Live impact preview.
let previewRun = 0;
const refreshPreview = debounce(async () => {
  const run = ++previewRun;
  $('preview-status').textContent = 'Updating the preview…';
  const answer = await api('POST', tenantApi('/entitlements/' + service.id + '/preview'), form);
  if (run !== previewRun) return;
  if (!answer.ok) {
    $('preview-status').textContent = '';
    $('preview-body').replaceChildren(el('p', { class: 'error' }, errorText(answer)));
    return;
  }
  const impact = answer.body;
  $('preview-status').textContent = 'Compared with the saved settings, over ' + PAGE.device_count + ' enrolled devices:';
  const side = (title, data, kind) => [
    el('h3', {}, title),
    el('p', { 'data-preview': kind }, el('span', { class: 'metric' }, String(data.users)), ' users on ', el('strong', {}, String(data.devices)), ' devices'),
    data.sample.length ? el('ul', { class: 'sample' }, data.sample.map((s) => el('li', {}, s))) : null,
  ];
  $('preview-body').replaceChildren(...[
    ...side('Gain the service', impact.gaining, 'gaining'),
    ...side('Lose the service', impact.losing, 'losing'),
    ...side('Run a client too old to honour this (min ' + service.min_version + ')', impact.legacy_clients, 'legacy'),
  ].filter(Boolean));
}, 250);

// Save with If-Match; a conflict offers to reload the server's version and keep the edits.
$('settings-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!canWrite) return;
  show($('save-error'), false);
  show($('conflict'), false);
  $('save').disabled = true;
  $('save-status').textContent = 'Saving…';
  const answer = await api('PUT', tenantApi('/entitlements/' + service.id), form, { 'If-Match': etag });
  $('save').disabled = false;
  $('save-status').textContent = '';
  if (answer.ok) {
    etag = answer.etag;
    saved = structuredClone(answer.body);
    $('save-status').textContent = 'Saved as config version ' + etag.replaceAll('"', '') + '. Connected devices get it within seconds.';
    render();
    refreshPreview();
  } else if (answer.status === 412) {
    show($('conflict'), true);
    $('conflict-detail').textContent = 'Reload to see their version; your changes stay in the form so you can check them and save again.';
  } else {
    $('save-error').textContent = errorText(answer);
    show($('save-error'), true);
  }
});

$('reapply').addEventListener('click', async () => {
  const answer = await api('GET', tenantApi('/entitlements/' + service.id));
  if (!answer.ok) { $('conflict-detail').textContent = errorText(answer); return; }
  etag = answer.etag;
  saved = answer.body;
  show($('conflict'), false);
  const theirs = describe(answer.body);
  $('save-status').textContent = 'Reloaded version ' + etag.replaceAll('"', '') + ' (' + theirs + '). Your changes are still in the form: Save to apply them on top.';
  render();
  refreshPreview();
});

function describe(s) {
  if (s.enabled_by_default) return 'on for everyone';
  const parts = [];
  if (s.user_groups.length) parts.push(s.user_groups.length + ' user group(s)');
  if (s.device_groups.length) parts.push(s.device_groups.length + ' device group(s)');
  return parts.length ? 'restricted to ' + parts.join(' and ') : 'off for everyone';
}

render();
