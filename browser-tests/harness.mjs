// Shared by every browser test file: starts the real `entitle demo` server on a
// loopback port and Debian's Chromium, and checks at the end that no page
// logged an error and no request left the machine. Each test file gets its own
// server and database.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.ENTITLE_BIN || join(here, '..', 'target', 'debug', 'entitle');
export const shots = join(here, '..', 'docs', 'screenshots');
mkdirSync(shots, { recursive: true });

let server;
export let browser;
export let base;
const consoleErrors = [];
const outsideRequests = [];

export async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.listen(0, '127.0.0.1', () => { const { port } = probe.address(); probe.close(() => resolve(port)); });
    probe.on('error', reject);
  });
}

export async function waitUntilUp(url) {
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(url + '/healthz')).ok) return; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('entitle demo did not start at ' + url);
}

export async function api(method, path, token, body, headers = {}) {
  const response = await fetch(base + path, {
    method, headers: Object.assign({ Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' }, headers),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, etag: response.headers.get('etag'), body: await response.json().catch(() => null) };
}

before(async () => {
  const port = await freePort();
  base = 'http://127.0.0.1:' + port;
  const dataDir = mkdtempSync(join(tmpdir(), 'entitle-browser-'));
  server = spawn(binary, ['demo', '--listen', '127.0.0.1:' + port, '--data-dir', dataDir], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ENTITLE_LOG: 'warn' } });
  await waitUntilUp(base);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  assert.deepEqual(consoleErrors, [], 'no page logs an error in the console');
  assert.deepEqual(outsideRequests, [], 'no request leaves the machine');
});

export async function session(width = 1280, options = {}) {
  const context = await browser.newContext({ viewport: { width, height: 900 }, ...options });
  const page = await context.newPage();
  // Refusals the tests provoke on purpose (wrong password, stale save, forged
  // save) are logged by Chromium as failed loads; anything else is an error.
  const provoked = /Failed to load resource: the server responded with a status of (401|403|404|409|412|422)/;
  page.on('console', (message) => { if (message.type() === 'error' && !provoked.test(message.text())) consoleErrors.push(page.url() + ': ' + message.text()); });
  page.on('pageerror', (error) => consoleErrors.push(page.url() + ': ' + error.message));
  page.on('request', (request) => { const url = new URL(request.url()); if (url.hostname !== '127.0.0.1' && url.protocol !== 'data:') outsideRequests.push(request.url()); });
  return { context, page };
}

export async function signIn(page, email) {
  await page.goto(base + '/login');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill('entitle-demo');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/\/t\/acme\/entitlements\//);
}

export const previewNumber = async (page, kind) => Number(await page.locator('[data-preview="' + kind + '"] .metric').textContent());

