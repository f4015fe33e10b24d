'use strict';
const $ = (id) => document.getElementById(id);
const OS = ['windows', 'macos', 'linux', 'ios', 'android'];
const OWNERSHIP = ['corporate', 'personal'];
let editing = null;

function ruleText(g) {
  const parts = [];
  parts.push(g.os.length ? g.os.join(' or ') : 'any OS');
  parts.push(g.ownership.length ? g.ownership.join(' or ') : 'any ownership');
  for (const p of g.posture) parts.push(p.key + (p.op === 'gte' ? ' ≥ ' : ' = ') + p.value);
  return parts.join('; ');
}

const serviceName = Object.fromEntries(PAGE.services.map((s) => [s.id, s.display_name]));
const usedBy = (g) => g.used_by.map((id) => serviceName[id] || id);

for (const g of PAGE.items) {
  $('rows').append(el('tr', { 'data-group': g.id }, el('td', {}, g.name), el('td', {}, ruleText(g)), el('td', {}, String(g.matching_devices)),
    el('td', { class: 'used-by' }, g.used_by.length ? 'Used by: ' + usedBy(g).join(', ') : el('span', { class: 'hint' }, 'Not used')),
    el('td', {}, COMMON.can_write ? el('div', { class: 'actions' },
      el('button', { type: 'button', onclick: () => edit(g) }, 'Edit ', el('span', { class: 'skip-text', hidden: true }, g.name)),
      el('button', { type: 'button', class: 'danger', onclick: () => remove(g) }, 'Delete')) : '')));
}
if (PAGE.items.length === 0) $('rows').append(el('tr', {}, el('td', { colspan: 5, class: 'hint' }, 'No device group yet.')));
if (!COMMON.can_write) $('editor').remove();

// What the rule holds now, and (when editing a group entitlements use) what
// saving does to them. A rule the API refuses is shown once, beside the field
// it concerns, in the same place a refused save shows it.
let lastImpact = null;
let previewRun = 0;
const preview = debounce(async () => {
  if (!$('editor')) return;
  const run = ++previewRun;
  const sent = body();
  const rule = Object.assign({}, sent.rule, { name: sent.rule.name.trim() || 'preview' });
  const answer = await api('POST', tenantApi('/device-groups/preview'), rule);
  if (run !== previewRun) return;
  clearFieldErrors();
  if (!answer.ok) {
    $('match-count').textContent = 'Fix the rule to see which devices match it.';
    showError(answer, sent.rows);
    return;
  }
  $('match-count').textContent = answer.body.matching_devices + ' of ' + PAGE.device_count + ' enrolled devices match this rule now' + (answer.body.sample.length ? ': ' + answer.body.sample.join(', ') : '.');
  await loadImpact(run, sent);
}, 250);

/** The impact of saving the rule being edited, for a group entitlements use. */
async function loadImpact(run, sent) {
  if (!editing || editing.used_by.length === 0) { lastImpact = null; return null; }
  const answer = await api('POST', tenantApi('/device-groups/' + encodeURIComponent(editing.id) + '/preview'), { rule: sent.rule });
  if (run !== undefined && run !== previewRun) return null;
  if (!answer.ok) { lastImpact = null; show($('impact'), false); return null; }
  lastImpact = { rule: JSON.stringify(sent.rule), impact: answer.body };
  $('impact-body').replaceChildren(...impactNodes(answer.body));
  show($('impact'), true);
  return answer.body;
}

const plural = (n, one, many) => (n === 1 ? one : many);

/** Per service that uses the group: who gains and who loses it, with samples and "and N more". */
function impactNodes(impact) {
  const nodes = [el('p', {}, 'The group holds ' + impact.devices_before + plural(impact.devices_before, ' device', ' devices') + ' now; ' + (impact.delete ? 'deleted, it holds none.' : 'after saving, ' + impact.devices_after + '.'))];
  for (const s of impact.services) {
    const name = serviceName[s.service] || s.service;
    const side = (verb, data, kind) => {
      if (data.devices === 0) return [];
      const more = data.devices - data.sample.length;
      return [el('p', { 'data-impact': s.service + ':' + kind }, el('strong', {}, String(data.devices)), plural(data.devices, ' device', ' devices') + ' (' + data.users + plural(data.users, ' user', ' users') + ') would ' + verb + ' ' + name + ':'),
        el('ul', { class: 'sample' }, ...data.sample.map((x) => el('li', {}, x)), more > 0 ? el('li', { 'data-more': kind }, 'and ' + more + ' more') : null)];
    };
    const lines = [...side('lose', s.losing, 'losing'), ...side('gain', s.gaining, 'gaining')];
    nodes.push(el('div', { class: 'field', 'data-service': s.service }, el('h4', {}, name),
      ...(lines.length ? lines : [el('p', { class: 'hint' }, 'No device gains or loses it.')])));
  }
  return nodes;
}

// ---- Errors: once, beside the field they concern, in an administrator's words.

function clearFieldErrors() {
  for (const node of document.querySelectorAll('#editor .field-error')) { node.textContent = ''; show(node, false); }
  for (const node of document.querySelectorAll('#editor [aria-invalid]')) node.removeAttribute('aria-invalid');
  show($('editor-error'), false);
}

/** Words for an API error about the device-group form, and the input it concerns. */
function explain(answer, rows) {
  const error = (answer.body && answer.body.error) || {};
  const field = error.field || '';
  const fact = field.match(/^posture\.(\d+)\.(key|value|op)$/);
  if (field === 'name') {
    const text = error.code === 'duplicate'
      ? 'Another device group is already called “' + $('name').value.trim() + '”. Choose a different name.'
      : 'Give the group a name: up to 256 characters, on one line.';
    return { input: $('name'), slot: $('name-error'), text };
  }
  if (fact && rows[Number(fact[1])]) {
    const row = rows[Number(fact[1])];
    const slot = row.querySelector('.field-error');
    if (fact[2] === 'key') return { input: row.querySelector('.key'), slot, text: 'Name the fact to check, e.g. disk_encrypted: up to 128 characters, on one line.' };
    const gte = row.querySelector('.op').value === 'gte';
    return {
      input: row.querySelector('.value'), slot,
      text: gte ? '“At least (version)” compares versions: enter a version such as 14.5.' : 'Enter the value the fact must have: true, false, a number or text, up to 1,024 characters on one line.',
    };
  }
  return { input: null, slot: $('editor-error'), text: errorText(answer) };
}

function showError(answer, rows) {
  const { input, slot, text } = explain(answer, rows);
  slot.textContent = text;
  show(slot, true);
  if (input) input.setAttribute('aria-invalid', 'true');
  return input;
}

for (const [list, values] of [['os', OS], ['ownership', OWNERSHIP]]) {
  for (const v of values) {
    const id = list + '-' + v;
    $(list)?.append(el('span', { class: 'check' }, el('input', { type: 'checkbox', id, value: v, onchange: preview }), el('label', { for: id }, v)));
  }
}

function addFact(fact) {
  const index = $('posture').children.length;
  const row = el('div', { class: 'row' },
    el('div', {}, el('label', { for: 'key-' + index }, 'Fact'), el('input', { type: 'text', id: 'key-' + index, class: 'key', 'aria-describedby': 'fact-error-' + index, value: fact ? fact.key : '', placeholder: 'disk_encrypted', oninput: preview })),
    el('div', {}, el('label', { for: 'op-' + index }, 'Test'), el('select', { id: 'op-' + index, class: 'op', onchange: preview },
      el('option', { value: 'eq', selected: !fact || fact.op === 'eq' }, 'equals'), el('option', { value: 'gte', selected: fact && fact.op === 'gte' }, 'at least (version)'))),
    el('div', {}, el('label', { for: 'value-' + index }, 'Value'), el('input', { type: 'text', id: 'value-' + index, class: 'value', 'aria-describedby': 'fact-error-' + index, value: fact ? String(fact.value) : '', placeholder: 'true', oninput: preview })),
    el('button', { type: 'button', onclick: () => { row.remove(); preview(); } }, 'Remove'),
    el('p', { class: 'error field-error', id: 'fact-error-' + index, hidden: true }));
  $('posture').append(row);
}
$('add-fact')?.addEventListener('click', () => addFact());

/** The rule as the form holds it, and the fact rows sent (in the API's order). */
function body() {
  const value = (text) => (text === 'true' ? true : text === 'false' ? false : text);
  const rows = [...$('posture').children].filter((row) => row.querySelector('.key').value.trim() !== '');
  return {
    rows,
    rule: {
      name: $('name').value,
      os: OS.filter((v) => $('os-' + v).checked),
      ownership: OWNERSHIP.filter((v) => $('ownership-' + v).checked),
      posture: rows.map((row) => ({ key: row.querySelector('.key').value, op: row.querySelector('.op').value, value: value(row.querySelector('.value').value.trim()) })),
    },
  };
}

function edit(g) {
  editing = g;
  $('editor-title').textContent = 'Edit ' + g.name;
  $('name').value = g.name;
  for (const v of OS) $('os-' + v).checked = g.os.includes(v);
  for (const v of OWNERSHIP) $('ownership-' + v).checked = g.ownership.includes(v);
  $('posture').replaceChildren();
  g.posture.forEach(addFact);
  $('save-group').textContent = 'Save';
  show($('cancel'), true);
  preview();
  $('name').focus();
}
$('name')?.addEventListener('input', preview);

$('cancel')?.addEventListener('click', () => location.reload());

/** Asks in a dialog; resolves true when the administrator goes ahead. */
function confirmChange(title, text, nodes, go) {
  const dialog = $('confirm-change');
  $('confirm-change-title').textContent = title;
  $('confirm-change-text').textContent = text;
  $('confirm-change-impact').replaceChildren(...nodes);
  $('confirm-change-go').textContent = go;
  return new Promise((resolve) => {
    const done = (answer) => { dialog.close(); resolve(answer); };
    $('confirm-change-go').onclick = () => done(true);
    $('confirm-change-cancel').onclick = () => done(false);
    dialog.oncancel = () => resolve(false);
    dialog.showModal();
    $('confirm-change-cancel').focus();
  });
}

// A group that entitlements select is deleted only with ?force=true, after the
// administrator has seen which devices lose which service: it stays selected
// as a deleted group that matches nothing (access fails closed; nobody gains
// the service). The API refuses a plain delete with 409 if an entitlement
// selected the group since this page was loaded.
async function remove(g) {
  show($('delete-error'), false);
  const answer = await api('POST', tenantApi('/device-groups/' + encodeURIComponent(g.id) + '/preview'), { delete: true });
  if (!answer.ok) { $('delete-error').textContent = errorText(answer); show($('delete-error'), true); return; }
  const impact = answer.body;
  const text = impact.used_by.length
    ? 'It is used by the entitlements of ' + impact.used_by.map((id) => serviceName[id] || id).join(', ') + '. ' +
      'Deleting fails closed: it stays selected there as a deleted group that matches nothing, so its devices lose what it gave them and nobody gains access, until you change those entitlements.'
    : 'No entitlement uses it, so no device gains or loses a service.';
  if (!await confirmChange('Delete device group “' + g.name + '”?', text, impact.used_by.length ? impactNodes(impact) : [], 'Delete')) return;
  // Forced only when the administrator confirmed the group's use; one
  // selected since is refused by the API (409) and its message shown.
  const path = tenantApi('/device-groups/' + encodeURIComponent(g.id)) + (impact.used_by.length ? '?force=true' : '');
  const deleted = await api('DELETE', path);
  if (deleted.ok) { location.reload(); return; }
  $('delete-error').textContent = errorText(deleted);
  show($('delete-error'), true);
}

// Saving an edit that takes a service from devices asks first, with the impact.
$('editor')?.addEventListener('submit', async (e) => {
  e.preventDefault();
  clearFieldErrors();
  const sent = body();
  if (editing && editing.used_by.length) {
    const impact = lastImpact && lastImpact.rule === JSON.stringify(sent.rule) ? lastImpact.impact : await loadImpact(undefined, sent);
    if (impact && impact.devices_losing > 0) {
      const go = await confirmChange('Take services from ' + impact.devices_losing + plural(impact.devices_losing, ' device?', ' devices?'),
        'Saving “' + sent.rule.name.trim() + '” changes which devices the group holds, and entitlements use it:', impactNodes(impact), 'Save anyway');
      if (!go) return;
    }
  }
  const answer = editing
    ? await api('PUT', tenantApi('/device-groups/' + encodeURIComponent(editing.id)), sent.rule)
    : await api('POST', tenantApi('/device-groups'), sent.rule);
  if (answer.ok) { location.reload(); return; }
  showError(answer, sent.rows)?.focus();
});
if ($('editor')) preview();
