'use strict';
// The invitation page: the link's secret is the URL's fragment, which the
// browser never sends to a server; this script posts it, once to learn who is
// invited (or why the link no longer works), then with the chosen password.
(function () {
  const $ = (id) => document.getElementById(id);
  const token = decodeURIComponent(location.hash.slice(1));
  // The secret leaves the address bar, so it is not left in the history or
  // shown over a shoulder.
  if (location.hash) history.replaceState(null, '', location.pathname);

  async function post(path, body) {
    try {
      const response = await fetch(path, {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      const parsed = await response.json().catch(() => ({}));
      return { ok: response.ok, status: response.status, body: parsed };
    } catch (e) {
      return { ok: false, status: 0, body: { error: { message: 'The server cannot be reached. Check your connection and try again.' } } };
    }
  }
  const message = (answer) => (answer.body && answer.body.error && answer.body.error.message) || ('The server answered ' + answer.status + '.');

  function refuse(answer) {
    $('invitation-title').textContent = answer.status === 410 || answer.status === 404 ? 'This invitation link does not work' : 'Something went wrong';
    const text = message(answer);
    $('invitation-status').textContent = text.charAt(0).toUpperCase() + text.slice(1) + '.';
    $('invitation').hidden = true;
    $('invitation-back').hidden = false;
  }

  async function start() {
    if (!token) {
      refuse({ status: 404, body: { error: { message: 'this page opens from an invitation link; the link you followed is incomplete' } } });
      return;
    }
    const answer = await post('/portal/invitation/check', { token });
    if (!answer.ok) { refuse(answer); return; }
    $('invitation-title').textContent = 'Welcome to entitle';
    $('invitation-status').textContent = 'You are invited to the tenant ' + answer.body.tenant + ' as ' + answer.body.role + ', with the email ' + answer.body.email + '. The link works until ' + new Date(answer.body.expires_at).toLocaleString() + '.';
    $('invitation').hidden = false;
    $('new-password').focus();
  }

  $('invitation').addEventListener('submit', async (event) => {
    event.preventDefault();
    const error = $('invitation-error');
    error.hidden = true;
    const password = $('new-password').value;
    let problem = null;
    if ([...password].length < 12) problem = 'The password needs at least 12 characters.';
    else if (password !== $('confirm-password').value) problem = 'The two passwords differ; type the same password twice.';
    if (problem) {
      error.textContent = problem;
      error.hidden = false;
      $('new-password').focus();
      return;
    }
    const answer = await post('/portal/invitation', { token, password });
    if (answer.ok) { location.href = answer.body.redirect || '/'; return; }
    if (answer.status === 410 || answer.status === 404) { refuse(answer); return; }
    const text = message(answer);
    error.textContent = text.charAt(0).toUpperCase() + text.slice(1) + '.';
    error.hidden = false;
  });

  start();
})();
