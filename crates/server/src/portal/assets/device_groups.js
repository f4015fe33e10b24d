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

const preview = debounce(async () => {
  if (!$('editor')) return;
  const rule = Object.assign(body(), { name: $('name').value || 'preview' });
  const answer = await api('POST', tenantApi('/device-groups/preview'), rule);
  $('match-count').textContent = answer.ok
    ? answer.body.matching_devices + ' of ' + PAGE.device_count + ' enrolled devices match this rule now' + (answer.body.sample.length ? ': ' + answer.body.sample.join(', ') : '.')
    : errorText(answer);
}, 250);

for (const [list, values] of [['os', OS], ['ownership', OWNERSHIP]]) {
  for (const v of values) {
    const id = list + '-' + v;
    $(list)?.append(el('span', { class: 'check' }, el('input', { type: 'checkbox', id, value: v, onchange: preview }), el('label', { for: id }, v)));
  }
}

function addFact(fact) {
  const index = $('posture').children.length;
  const row = el('div', { class: 'row' },
    el('div', {}, el('label', { for: 'key-' + index }, 'Fact'), el('input', { type: 'text', id: 'key-' + index, class: 'key', value: fact ? fact.key : '', placeholder: 'disk_encrypted', oninput: preview })),
    el('div', {}, el('label', { for: 'op-' + index }, 'Test'), el('select', { id: 'op-' + index, class: 'op', onchange: preview },
      el('option', { value: 'eq', selected: !fact || fact.op === 'eq' }, 'equals'), el('option', { value: 'gte', selected: fact && fact.op === 'gte' }, 'at least (version)'))),
    el('div', {}, el('label', { for: 'value-' + index }, 'Value'), el('input', { type: 'text', id: 'value-' + index, class: 'value', value: fact ? String(fact.value) : '', placeholder: 'true', oninput: preview })),
    el('button', { type: 'button', onclick: () => { row.remove(); preview(); } }, 'Remove'));
  $('posture').append(row);
}
$('add-fact')?.addEventListener('click', () => addFact());

function body() {
  const value = (text) => (text === 'true' ? true : text === 'false' ? false : text);
  return {
    name: $('name').value,
    os: OS.filter((v) => $('os-' + v).checked),
    ownership: OWNERSHIP.filter((v) => $('ownership-' + v).checked),
    posture: [...$('posture').children].map((row) => ({ key: row.querySelector('.key').value, op: row.querySelector('.op').value, value: value(row.querySelector('.value').value.trim()) }))
      .filter((p) => p.key.trim() !== ''),
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

$('cancel')?.addEventListener('click', () => location.reload());

// A group that entitlements select is deleted only with ?force=true, after the
// administrator has read which entitlements keep it as a deleted group that
// matches nothing (access fails closed; nobody gains the service). The API
// refuses a plain delete with 409 if an entitlement selected the group since
// this page was loaded; its message is shown as it is.
async function remove(g) {
  show($('delete-error'), false);
  const used = usedBy(g);
  const question = used.length
    ? 'Delete device group “' + g.name + '”? It is used by the entitlements of ' + used.join(', ') + '. ' +
      'It will stay selected there as a deleted group that matches nothing, so no device gets those services through it ' +
      '(and nobody gains access) until you change those entitlements.'
    : 'Delete device group “' + g.name + '”? No entitlement uses it.';
  if (!confirm(question)) return;
  const path = tenantApi('/device-groups/' + encodeURIComponent(g.id)) + (used.length ? '?force=true' : '');
  const answer = await api('DELETE', path);
  if (answer.ok) { location.reload(); return; }
  $('delete-error').textContent = errorText(answer);
  show($('delete-error'), true);
}

$('editor')?.addEventListener('submit', async (e) => {
  e.preventDefault();
  show($('editor-error'), false);
  const answer = editing
    ? await api('PUT', tenantApi('/device-groups/' + encodeURIComponent(editing.id)), body())
    : await api('POST', tenantApi('/device-groups'), body());
  if (answer.ok) { location.reload(); return; }
  $('editor-error').textContent = errorText(answer);
  show($('editor-error'), true);
});
if ($('editor')) preview();
