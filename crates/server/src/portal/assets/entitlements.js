'use strict';
// The entitlement form of one service: toggle, group pickers, exclusion
// pickers, staged rollout slider, logout option,
// a live impact preview, and Save with If-Match. A stale save is merged
// three-way (what the form loaded, what is stored now, the form), so that
// saving never reverts another administrator's change.
const service = PAGE.service;
const canWrite = COMMON.can_write;
let etag = PAGE.etag;
let saved = structuredClone(PAGE.settings);
const form = structuredClone(PAGE.settings);
const names = Object.assign({}, PAGE.group_names);
const deviceGroups = PAGE.device_groups;
const deviceGroupName = (id) => (deviceGroups.find((g) => g.id === id) || {}).name || PAGE.deleted_device_groups[id] || names[id] || id;
const userGroupName = (id) => names[id] || id;
// Above this share of enrolled devices losing the service, Save asks first.
const LOSS_CONFIRM_SHARE = 0.1;

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
  $('apply-at').closest('.field').remove();
  // A viewer cannot change a setting, so the preview never has a change to show.
  $('preview-status').textContent = 'Administrators see here who would gain and who would lose the service before they save a change.';
}

function render() {
  $('enabled-by-default').checked = form.enabled_by_default;
  $('logout-on-enable').checked = form.logout_on_enable;
  const locked = !canWrite || form.enabled_by_default;
  $('user-groups-field').disabled = locked;
  $('device-groups-field').disabled = locked;
  // Exclusions narrow "Enabled by Default" too, so they stay open while it is on.
  $('exclude-user-groups-field').disabled = !canWrite;
  $('exclude-device-groups-field').disabled = !canWrite;
  $('rollout-field').disabled = !canWrite;
  $('rollout').value = String(form.rollout_percent);
  $('rollout-value').textContent = form.rollout_percent + ' %';
  $('enabled-by-default').disabled = !canWrite;
  $('logout-on-enable').disabled = !canWrite;
  show($('groups-disabled-note'), canWrite && form.enabled_by_default);
  renderChips($('ug-chips'), form.user_groups, userGroupName, (id) => { form.user_groups = form.user_groups.filter((g) => g !== id); changed(); });
  renderChips($('dg-chips'), form.device_groups, deviceGroupName, (id) => { form.device_groups = form.device_groups.filter((g) => g !== id); changed(); });
  renderChips($('xug-chips'), form.exclude_user_groups, userGroupName, (id) => { form.exclude_user_groups = form.exclude_user_groups.filter((g) => g !== id); changed(); });
  renderChips($('xdg-chips'), form.exclude_device_groups, deviceGroupName, (id) => { form.exclude_device_groups = form.exclude_device_groups.filter((g) => g !== id); changed(); });
  $('xug-help').textContent = form.exclude_user_groups.length ? '' : 'None excluded.';
  $('xdg-help').textContent = form.exclude_device_groups.length ? '' : 'None excluded.';
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
  $('dirty-hint').textContent = isDirty() ? 'Unsaved changes' : '';
}

function normalise(s) {
  return {
    enabled_by_default: s.enabled_by_default, user_groups: [...s.user_groups].sort(), device_groups: [...s.device_groups].sort(), logout_on_enable: s.logout_on_enable,
    exclude_user_groups: [...(s.exclude_user_groups || [])].sort(), exclude_device_groups: [...(s.exclude_device_groups || [])].sort(), rollout_percent: s.rollout_percent ?? 100,
  };
}

function same(a, b) { return JSON.stringify(normalise(a)) === JSON.stringify(normalise(b)); }

function isDirty() { return canWrite && !same(form, saved); }

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
$('rollout').addEventListener('input', (e) => { form.rollout_percent = Number(e.target.value); changed(); });

/** The picker's answer when nothing can be added: a match already selected is not "no match". */
function nothingToAdd(text, matched, selectedLabels) {
  if (matched) return el('li', { class: 'hint' }, '“' + text + '” is already selected' + (selectedLabels.length ? ': ' + selectedLabels.join(', ') : '') + '.');
  return el('li', { class: 'hint' }, 'No group matches “' + text + '”.');
}

/** What a group reaches: its active users, directly or through nested groups, each once. */
function memberText(n) { return n + (n === 1 ? ' active member' : ' active members'); }

/** A picker's label: the identity provider may push a group named like a local one, so its groups say where they come from. */
function groupLabel(g) { return g.display_name + ' (' + (g.source === 'scim' ? 'from the directory, ' : '') + memberText(g.effective_members) + ')'; }

// User-group pickers (selected and excluded): the server searches, so they
// stay fast with thousands of groups.
function userGroupPicker(prefix, key) {
  const search = debounce(async (text) => {
    const results = $(prefix + '-results');
    if (!text.trim()) { results.replaceChildren(); show(results, false); return; }
    const answer = await api('GET', tenantApi('/groups?limit=20&search=' + encodeURIComponent(text.trim())));
    if (!answer.ok) { results.replaceChildren(el('li', { class: 'error' }, errorText(answer))); show(results, true); return; }
    const items = answer.body.items.filter((g) => !form[key].includes(g.id));
    const already = answer.body.items.filter((g) => form[key].includes(g.id)).map((g) => g.display_name);
    results.replaceChildren(...(items.length ? items.map((g) => el('li', {}, el('button', {
      type: 'button',
      onclick: () => { names[g.id] = g.display_name; form[key].push(g.id); $(prefix + '-search').value = ''; results.replaceChildren(); show(results, false); changed(); $(prefix + '-search').focus(); },
    }, groupLabel(g)))) : [nothingToAdd(text.trim(), already.length > 0, already)]));
    show(results, true);
  }, 150);
  $(prefix + '-search').addEventListener('input', (e) => search(e.target.value));
}

// Device-group pickers: device groups are few, so they are filtered here.
function deviceGroupPicker(prefix, key) {
  $(prefix + '-search').addEventListener('input', (e) => {
    const text = e.target.value.trim().toLowerCase();
    const results = $(prefix + '-results');
    if (!text) { results.replaceChildren(); show(results, false); return; }
    const matching = deviceGroups.filter((g) => g.name.toLowerCase().includes(text));
    const items = matching.filter((g) => !form[key].includes(g.id));
    const already = matching.filter((g) => form[key].includes(g.id)).map((g) => g.name);
    results.replaceChildren(...(items.length ? items.map((g) => el('li', {}, el('button', {
      type: 'button',
      onclick: () => { form[key].push(g.id); e.target.value = ''; results.replaceChildren(); show(results, false); changed(); e.target.focus(); },
    }, g.name + ' (' + g.matching_devices + ' devices)'))) : [nothingToAdd(e.target.value.trim(), already.length > 0, already)]));
    show(results, true);
  });
}

userGroupPicker('ug', 'user_groups');
deviceGroupPicker('dg', 'device_groups');
userGroupPicker('xug', 'exclude_user_groups');
deviceGroupPicker('xdg', 'exclude_device_groups');
for (const id of ['ug-search', 'dg-search', 'xug-search', 'xdg-search']) {
  $(id).addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { $(id.replace('search', 'results')).hidden = true; }
    if (e.key === 'ArrowDown') { const first = $(id.replace('search', 'results')).querySelector('button'); if (first) { e.preventDefault(); first.focus(); } }
    if (e.key === 'Enter') { e.preventDefault(); const first = $(id.replace('search', 'results')).querySelector('button'); if (first) first.click(); }
  });
}
// Arrow keys move between the options of an open picker.
for (const id of ['ug-results', 'dg-results', 'xug-results', 'xdg-results']) {
  $(id).addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
    const options = [...$(id).querySelectorAll('button')];
    const at = options.indexOf(document.activeElement);
    const next = options[at + (e.key === 'ArrowDown' ? 1 : -1)];
    e.preventDefault();
    if (next) next.focus(); else if (e.key === 'ArrowUp') $(id.replace('results', 'search')).focus();
  });
}

// Old clients ignore the group lists, exclusions and rollout, and for some
// services the toggle too: their block matters only when one of those is changing.
function changesWhatOldClientsIgnore() {
  const a = normalise(form);
  const b = normalise(saved);
  const ignored = (x) => [x.user_groups, x.device_groups, x.exclude_user_groups, x.exclude_device_groups, x.rollout_percent];
  return JSON.stringify(ignored(a)) !== JSON.stringify(ignored(b))
    || (service.legacy_ignores_default && a.enabled_by_default !== b.enabled_by_default);
}

// Live impact preview.
let previewRun = 0;
let lastImpact = null;
let previewPromise = null;
/** The preview of the form as it is now. A run that a newer one supersedes
 *  (the debounced refresh firing during a Save) answers with the newer run's
 *  result, never with nothing: otherwise Save would skip its loss check. */
function loadPreview() {
  previewPromise = runPreview();
  return previewPromise;
}
async function runPreview() {
  const run = ++previewRun;
  const proposed = structuredClone(form);
  $('preview-status').textContent = 'Updating the preview…';
  const answer = await api('POST', tenantApi('/entitlements/' + service.id + '/preview'), proposed);
  if (run !== previewRun) return previewPromise;
  if (!answer.ok) {
    lastImpact = null;
    $('preview-status').textContent = '';
    $('preview-body').replaceChildren(el('p', { class: 'error' }, errorText(answer)));
    return null;
  }
  lastImpact = { settings: proposed, impact: answer.body };
  renderPreview(answer.body);
  return lastImpact;
}
const refreshPreview = debounce(loadPreview, 250);

function renderPreview(impact) {
  $('preview-status').textContent = 'Compared with the saved settings, over ' + PAGE.device_count + ' enrolled devices:';
  const side = (title, data, kind) => {
    const more = data.devices - data.sample.length;
    const items = data.sample.map((s) => el('li', {}, s));
    if (more > 0) items.push(el('li', { 'data-more': kind }, 'and ' + more + ' more'));
    return [
      el('h3', {}, title),
      el('p', { 'data-preview': kind }, el('span', { class: 'metric' }, String(data.users)), ' users on ', el('strong', {}, String(data.devices)), ' devices'),
      items.length ? el('ul', { class: 'sample' }, items) : null,
    ];
  };
  $('preview-body').replaceChildren(...[
    ...side('Gain the service', impact.gaining, 'gaining'),
    ...side('Lose the service', impact.losing, 'losing'),
    ...(changesWhatOldClientsIgnore() ? side('Run a client too old to honour this (min ' + service.min_version + ')', impact.legacy_clients, 'legacy') : []),
    ...rolloutSteps(impact.rollout || []),
  ].filter(Boolean));
}

/** Devices at each step of the staged rollout of the proposed settings, and
 *  how many each step adds; the chosen step is marked. */
function rolloutSteps(steps) {
  if (!steps.length) return [];
  const rows = steps.map((step) => el('tr', { 'data-rollout-step': String(step.percent), class: step.percent === form.rollout_percent ? 'current' : '' },
    el('th', { scope: 'row' }, step.percent + ' %' + (step.percent === form.rollout_percent ? ' (chosen)' : '')),
    el('td', {}, String(step.devices)),
    el('td', {}, '+' + step.added)));
  return [
    el('h3', {}, 'Staged rollout'),
    el('p', { class: 'hint' }, 'Devices that get the service at each step of the rollout with these settings, and how many each step adds:'),
    el('div', { class: 'table-wrap' }, el('table', { id: 'rollout-steps' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Rollout'), el('th', { scope: 'col' }, 'Devices'), el('th', { scope: 'col' }, 'Added'))),
      el('tbody', {}, ...rows))),
  ];
}

// Save with If-Match. A save that takes the service from more than a tenth of
// the enrolled devices asks first, with the preview's numbers.
$('settings-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!canWrite) return;
  show($('save-error'), false);
  show($('conflict'), false);
  $('save').disabled = true;
  $('save-status').textContent = 'Checking the impact…';
  // The preview compares with the stored settings: on a stale form it would
  // count another administrator's change as a loss, so a stale save goes
  // straight to its conflict and the merged form is checked on the next Save.
  const head = await api('GET', tenantApi('/entitlements/' + service.id));
  const stale = head.ok && head.etag !== etag;
  const checked = stale ? null : (lastImpact && same(lastImpact.settings, form) ? lastImpact : await loadPreview());
  if (checked && PAGE.device_count > 0 && checked.impact.losing.devices > PAGE.device_count * LOSS_CONFIRM_SHARE) {
    $('save-status').textContent = '';
    if (!await confirmLoss(checked.impact.losing)) { $('save').disabled = false; return; }
  }
  $('save-status').textContent = 'Saving…';
  const previous = etag;
  // "Apply at": the same save, scheduled (202); the Grants page lists and cancels it.
  const applyAt = $('apply-at').value;
  const body = applyAt ? Object.assign({}, form, { apply_at: new Date(applyAt).toISOString() }) : form;
  const answer = await api('PUT', tenantApi('/entitlements/' + service.id), body, { 'If-Match': etag });
  $('save').disabled = false;
  $('save-status').textContent = '';
  if (answer.status === 202) {
    $('apply-at').value = '';
    $('save-status').textContent = 'Scheduled for ' + when(answer.body.apply_at) + '; nothing changes before then. Pending changes are on the Grants page, where you can cancel them.';
    toast('Scheduled ' + service.display_name + ' for ' + when(answer.body.apply_at) + '.');
  } else if (answer.ok) {
    etag = answer.etag;
    saved = structuredClone(answer.body);
    lastImpact = null;
    const version = etag.replaceAll('"', '');
    if (etag === previous) {
      $('save-status').textContent = 'Nothing changed: the settings are still config version ' + version + '.';
      toast('Nothing to save: still version ' + version + '.');
    } else {
      $('save-status').textContent = 'Saved as config version ' + version + '. Connected devices get it within seconds.';
      toast('Saved ' + service.display_name + ' as config version ' + version + '.');
    }
    render();
    refreshPreview();
  } else if (answer.status === 412) {
    await showConflict(answer);
  } else {
    $('save-error').textContent = errorText(answer);
    show($('save-error'), true);
  }
});

function confirmLoss(losing) {
  const dialog = $('confirm-loss');
  const share = Math.round(100 * losing.devices / PAGE.device_count);
  $('confirm-loss-text').textContent = 'This save takes ' + service.display_name + ' from ' + losing.devices + ' of ' + PAGE.device_count
    + ' enrolled devices (' + share + ' %), used by ' + losing.users + ' users. They lose it within seconds.';
  const more = losing.devices - losing.sample.length;
  $('confirm-loss-sample').replaceChildren(...losing.sample.map((s) => el('li', {}, s)), ...(more > 0 ? [el('li', {}, 'and ' + more + ' more')] : []));
  return new Promise((resolve) => {
    const done = (answer) => { dialog.close(); resolve(answer); };
    $('confirm-loss-save').onclick = () => done(true);
    $('confirm-loss-cancel').onclick = () => done(false);
    dialog.oncancel = () => resolve(false);
    dialog.showModal();
    $('confirm-loss-cancel').focus();
  });
}

let toastTimer = null;
function toast(text) {
  const node = $('toast');
  node.textContent = text;
  show(node, true);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => show(node, false), 8000);
}

// ---- Conflicts: a three-way merge of base (saved), theirs and mine (form).

let conflict = null;

/** Sets merge as changes: what I added and removed, applied to theirs. */
function mergeSet(base, theirs, mine) {
  const added = mine.filter((id) => !base.includes(id));
  const removed = base.filter((id) => !mine.includes(id));
  const result = theirs.filter((id) => !removed.includes(id));
  for (const id of added) if (!result.includes(id)) result.push(id);
  return result;
}

const SCALARS = [
  ['enabled_by_default', () => service.label],
  ['logout_on_enable', () => 'Logout client when ' + service.display_name + ' entitlement is enabled'],
  ['rollout_percent', () => 'Staged rollout'],
];
const SETS = [
  ['user_groups', 'User groups', userGroupName], ['device_groups', 'Device groups', deviceGroupName],
  ['exclude_user_groups', 'Excluded user groups', userGroupName], ['exclude_device_groups', 'Excluded device groups', deviceGroupName],
];

/** A scalar setting in words: a percentage, or on/off. */
function scalarText(value) { return typeof value === 'number' ? value + ' %' : (value ? 'on' : 'off'); }

/** What changed from `a` to `b`, in words; empty when nothing did. */
function describeChange(a, b) {
  const parts = [];
  for (const [key, label] of SCALARS) {
    if (a[key] !== b[key]) parts.push('“' + label() + '” ' + scalarText(b[key]));
  }
  for (const [key, label, name] of SETS) {
    const added = b[key].filter((id) => !a[key].includes(id)).map((id) => '+' + name(id));
    const removed = a[key].filter((id) => !b[key].includes(id)).map((id) => '−' + name(id));
    if (added.length || removed.length) parts.push(label + ' ' + [...added, ...removed].join(' '));
  }
  return parts.join('; ');
}

/** Whether both sides changed a scalar, each to something else. */
function bothChanged(key, theirs) {
  return form[key] !== saved[key] && theirs[key] !== saved[key] && form[key] !== theirs[key];
}

/** Whether the merge would change groups while "Enabled by Default" stays on
 *  (their toggle, my groups), which a save refuses: the admin picks one. */
function defaultRuleClash(theirs) {
  const groups = mergeGroups(theirs);
  // Exclusions may change while it is on: only the selected lists clash.
  return theirs.enabled_by_default && form.enabled_by_default === saved.enabled_by_default
    && SELECTED.some((key) => JSON.stringify([...groups[key]].sort()) !== JSON.stringify([...theirs[key]].sort()));
}

/** The lists that cannot change while "Enabled by Default" is on. */
const SELECTED = ['user_groups', 'device_groups'];

function mergeGroups(theirs) {
  const merged = {};
  for (const [key] of SETS) merged[key] = mergeSet(saved[key] || [], theirs[key] || [], form[key] || []);
  return merged;
}

/** Base (saved), theirs and mine (form) merged; `choices` settles the clashes. */
function threeWay(theirs, choices) {
  const merged = mergeGroups(theirs);
  for (const [key] of SCALARS) {
    if (form[key] === saved[key]) merged[key] = theirs[key];
    else if (theirs[key] === saved[key]) merged[key] = form[key];
    else merged[key] = choices[key] === 'mine' ? form[key] : theirs[key];
  }
  if (defaultRuleClash(theirs)) {
    if (choices.default_rule === 'mine') merged.enabled_by_default = false;
    else for (const key of SELECTED) merged[key] = [...theirs[key]];
  }
  return merged;
}

function choice(key, legend, theirsText, mineText) {
  return el('fieldset', { class: 'choice', 'data-choice': key },
    el('legend', {}, legend),
    el('label', {}, el('input', { type: 'radio', name: 'choice-' + key, value: 'theirs', checked: true }), ' ' + theirsText),
    ' ',
    el('label', {}, el('input', { type: 'radio', name: 'choice-' + key, value: 'mine' }), ' ' + mineText));
}

async function showConflict(answer) {
  let current = answer.body && answer.body.current;
  if (!current) {
    // A 412 without the current settings (from an older server): read them.
    const read = await api('GET', tenantApi('/entitlements/' + service.id));
    if (!read.ok) { $('save-error').textContent = errorText(read); show($('save-error'), true); return; }
    current = { settings: read.body, etag: read.etag, version: Number(read.etag.replaceAll('"', '')), names: {} };
  }
  Object.assign(names, current.names || {});
  conflict = current;
  const theirs = current.settings;
  const who = current.changed_by ? current.changed_by.name : 'Another administrator';
  const at = current.changed_at ? ' at ' + when(current.changed_at) : '';
  const theirChange = describeChange(saved, theirs);
  $('conflict-theirs').replaceChildren(el('strong', {}, who), ' saved version ' + current.version + at + ': ' + (theirChange || 'no change to what you see') + '.');
  const mine = describeChange(saved, form);
  $('conflict-mine').textContent = 'Your changes: ' + (mine || 'none') + '.';
  const choices = [];
  for (const [key, label] of SCALARS) {
    if (bothChanged(key, theirs)) {
      choices.push(choice(key, 'You both changed “' + label() + '”. Keep:', 'theirs (' + scalarText(theirs[key]) + ')', 'mine (' + scalarText(form[key]) + ')'));
    }
  }
  if (defaultRuleClash(theirs)) {
    choices.push(choice('default_rule', 'They turned “' + service.label + '” on, which runs the service for everyone; your group changes apply only while it is off. Keep:',
      'theirs (on for everyone, without your group changes)', 'mine (off, with your group changes)'));
  }
  $('conflict-choices').replaceChildren(...choices);
  show($('conflict'), true);
  $('merge').focus();
}

$('merge').addEventListener('click', () => {
  if (!conflict) return;
  const theirs = conflict.settings;
  const choices = {};
  for (const input of $('conflict-choices').querySelectorAll('input[type=radio]:checked')) choices[input.name.replace('choice-', '')] = input.value;
  const merged = threeWay(theirs, choices);
  saved = structuredClone(theirs);
  etag = conflict.etag;
  lastImpact = null;
  Object.assign(form, merged);
  conflict = null;
  show($('conflict'), false);
  const left = describeChange(saved, form);
  $('save-status').textContent = 'Merged into version ' + etag.replaceAll('"', '') + (left ? ': your changes on top are ' + left + '. Check the preview, then Save.' : ': nothing of yours is left to save.');
  render();
  refreshPreview();
});

// ---- Unsaved changes are never lost by accident: leaving the page asks first.

window.addEventListener('beforeunload', (e) => {
  if (!isDirty()) return;
  e.preventDefault();
  e.returnValue = '';
});
document.addEventListener('click', (e) => {
  const link = e.target.closest && e.target.closest('a[href]');
  // Links within the page (the skip link) leave nothing behind.
  if (!link || !isDirty() || e.defaultPrevented || link.target === '_blank' || link.getAttribute('href').startsWith('#')) return;
  if (confirm('You have unsaved changes to ' + service.display_name + '. Leave this page and lose them?')) {
    // The person chose to leave; the browser's own warning would ask twice.
    saved = structuredClone(form);
  } else {
    e.preventDefault();
  }
});

render();
