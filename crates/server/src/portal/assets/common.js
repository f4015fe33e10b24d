'use strict';
// Shared helpers of every portal page. Page data is inlined by the server, so
// the first view needs no further request.
const DATA = JSON.parse(document.getElementById('page-data').textContent);
const COMMON = DATA.common;
const PAGE = DATA.page;

/** Builds an element; strings become text nodes, so nothing is parsed as HTML. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function tenantApi(rest) {
  return '/api/v1/tenants/' + encodeURIComponent(COMMON.tenant) + rest;
}

function tenantPage(rest) {
  return '/t/' + encodeURIComponent(COMMON.tenant) + rest;
}

/** Calls the API with the session cookie and the CSRF header. */
async function api(method, path, body, headers) {
  const init = { method, credentials: 'same-origin', headers: Object.assign({ 'X-CSRF-Token': COMMON.csrf }, headers || {}) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    return { ok: false, status: 0, body: { error: { message: 'The server cannot be reached. Check your connection and try again.' } } };
  }
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (error) { parsed = { error: { message: text } }; }
  return { ok: response.ok, status: response.status, body: parsed, etag: response.headers.get('ETag') };
}

function errorText(answer) {
  return (answer.body && answer.body.error && answer.body.error.message) || ('The server answered ' + answer.status + '.');
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function show(node, visible) { node.hidden = !visible; }

// dateStyle cannot be combined with timeZoneName, hence the parts.
const ZONED = { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short' };

/** A time in the viewer's time zone, with the zone named ("Nov 30, 2026, 07:05:09 GMT+1"). */
function when(iso) {
  if (!iso) return 'never';
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString(undefined, ZONED);
}

function badge(enabled) {
  return el('span', { class: 'badge ' + (enabled ? 'on' : 'off') }, enabled ? 'On' : 'Off');
}

document.getElementById('sign-out')?.addEventListener('click', async () => {
  await api('POST', '/portal/logout');
  location.href = '/login';
});
