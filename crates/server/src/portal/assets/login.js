'use strict';
document.getElementById('login').addEventListener('submit', async (event) => {
  event.preventDefault();
  const error = document.getElementById('login-error');
  error.hidden = true;
  const email = document.getElementById('email').value.trim();
  const password = document.getElementById('password').value;
  if (!email || !password) {
    error.textContent = 'Enter your email and your password.';
    error.hidden = false;
    return;
  }
  let response;
  try {
    response = await fetch('/portal/login', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email, password }),
    });
  } catch (e) {
    error.textContent = 'The server cannot be reached.';
    error.hidden = false;
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (response.ok) {
    // The page opened while signed out (checked by the server), else home.
    location.href = document.getElementById('login').dataset.next || body.redirect || '/';
  } else {
    error.textContent = (body.error && body.error.message) || 'Sign-in failed.';
    error.hidden = false;
    document.getElementById('password').focus();
  }
});
