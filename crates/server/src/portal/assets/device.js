'use strict';
const $ = (id) => document.getElementById(id);
const d = PAGE.device;
const o = d.ownership;
$('back').href = tenantPage('/devices');
$('title').textContent = d.report.hostname + ' — ' + d.user_name;
for (const { service, decision } of PAGE.services) {
  $('services').append(el('div', { class: 'field', 'data-service': service.id },
    el('h3', {}, service.display_name + ' ', badge(decision.enabled)),
    el('p', { 'data-explanation': service.id }, decision.explanation),
    el('p', { class: 'hint' }, 'Reason code: ', el('code', {}, decision.reason))));
}
const rows = [['User', d.user_name], ['Operating system', d.report.os], ['Ownership (reported)', d.report.ownership], ['Client version', d.report.client_version],
  ...Object.entries(d.report.posture).map(([k, v]) => ['Posture: ' + k, String(v)]), ['Enrolled', when(d.enrolled_at)], ['Last sync', when(d.last_sync_at)]];
for (const [k, v] of rows) $('report').append(el('tr', {}, el('th', { scope: 'row' }, k), el('td', {}, v)));
// What the agent applied: the server's sentence, then each failed service's
// exit status and the last lines of its hook's output.
if (d.applied) {
  $('applied-summary').replaceChildren(el('span', { class: 'badge ' + (d.applied.current ? 'on' : 'pending') },
    d.applied.current ? 'Current' : 'Behind'), ' ', d.applied.summary + '.');
  const names = Object.fromEntries(PAGE.services.map(({ service }) => [service.id, service.display_name]));
  for (const [id, s] of Object.entries(d.applied.services)) {
    if (s.state !== 'failed') continue;
    $('applied-failures').append(el('div', { class: 'field', 'data-failed': id },
      el('h3', {}, (names[id] || id) + ' failed to start', s.exit_status === undefined ? null : ' (exit ' + s.exit_status + ')'),
      s.output ? el('pre', { class: 'output' }, s.output) : el('p', { class: 'hint' }, 'No output reported.')));
  }
} else {
  $('applied-summary').replaceChildren(el('span', { class: 'hint' }, 'Its agent has not reported what it applied (agents before this feature never do).'));
}
if (PAGE.device_groups.length === 0) $('groups').append(el('li', { class: 'hint' }, 'In no device group.'));
for (const g of PAGE.device_groups) $('groups').append(el('li', {}, g.name));

// Who says what this device is. Device groups match the effective ownership:
// the attested one when there is one, else what the device reports.
const attester = { enrollment_key: 'enrollment key', admin: 'an administrator' }[o.ownership_attested_by];
$('ownership').replaceChildren(el('strong', {}, o.ownership), attester
  ? ', attested by ' + attester + '.'
  : ', as the device reports it; nobody has attested it.');
if (o.ownership_conflict) {
  $('ownership-warning').replaceChildren(el('strong', {}, 'Ownership conflict: '),
    'reports ' + o.reported_ownership + '; attested ' + o.ownership + ' by ' + attester + ' — the report is ignored.');
  show($('ownership-warning'), true);
}
$('approval').replaceChildren(...(o.pending_approval
  ? [el('span', { class: 'badge pending' }, 'Pending approval'), ' This device gets no group-based service until an administrator approves it.']
  : [el('span', { class: 'hint' }, 'Approved.')]));

async function change(body) {
  show($('trust-error'), false);
  const answer = await api('PATCH', tenantApi('/devices/' + encodeURIComponent(d.id)), body);
  if (answer.ok) { location.reload(); return; }
  $('trust-error').textContent = errorText(answer);
  show($('trust-error'), true);
}
// Viewers see what the device is, never the buttons that change it.
if (COMMON.can_write) {
  const buttons = [];
  if (o.pending_approval) buttons.push(el('button', { type: 'button', class: 'primary', onclick: () => change({ approved: true }) }, 'Approve'));
  for (const value of ['corporate', 'personal']) {
    if (o.ownership_attested_by && o.ownership === value) continue;
    // Attesting what the device already reports confirms it: a later report
    // that says otherwise is then ignored.
    const verb = !o.ownership_attested_by && o.reported_ownership === value ? 'Confirm ' : 'Attest ';
    buttons.push(el('button', { type: 'button', onclick: () => change({ ownership: value }) }, verb + value));
  }
  if (o.ownership_attested_by) buttons.push(el('button', { type: 'button', onclick: () => change({ ownership: 'reported' }) }, 'Back to reported (' + o.reported_ownership + ')'));
  $('trust-actions').replaceChildren(...buttons);
}

// Device actions, for admins: ask the agent to sync now, or remove the device
// (its token is revoked at once; the agent stops its services and must enroll again).
if (COMMON.can_write) {
  show($('device-actions'), true);
  const status = (cls, text) => $('device-action-status').replaceChildren(el('span', { class: cls }, text));
  $('resync').addEventListener('click', async () => {
    const answer = await api('POST', tenantApi('/devices/' + encodeURIComponent(d.id) + '/resync'));
    if (answer.ok) status('success', 'Asked ' + d.report.hostname + ' to sync now. If its agent is connected it reports within seconds; else at its next sync.');
    else status('error', errorText(answer));
  });
  $('remove').addEventListener('click', async () => {
    if (!confirm('Remove ' + d.report.hostname + ' (' + d.user_name + ')? Its token stops working at once and the device must enroll again.')) return;
    const answer = await api('DELETE', tenantApi('/devices/' + encodeURIComponent(d.id)));
    if (answer.ok || answer.status === 404) { location.href = tenantPage('/devices') + '?removed=' + encodeURIComponent(d.report.hostname); return; }
    status('error', errorText(answer));
  });
}
