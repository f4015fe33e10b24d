// A real OpenID provider for the tests: npm's `oidc-provider` (OpenID
// Certified), on a loopback port, with one static client, a few users with a
// password, and a minimal login form of its own (the package's development
// pages load web fonts from the Internet, which these tests never do).
//
// `tamper.mode` makes the token endpoint hand back an ID token that is wrong in
// exactly one way ('audience', 'nonce', 'expired'), re-signed with the
// provider's own key, so that the server's refusal of each is checked through
// the whole redirect flow.
import http from 'node:http';
import { generateKeyPairSync, createPrivateKey, sign } from 'node:crypto';
import Provider from 'oidc-provider';

export const USERS = {
  'sso-admin': { email: 'sso-admin@acme.example', groups: ['Entitle Admins', 'Staff'] },
  'sso-viewer': { email: 'sso-viewer@acme.example', groups: ['Staff'] },
  stranger: { email: 'stranger@elsewhere.example', groups: ['Staff'] },
};
export const PASSWORD = 'correct horse battery';

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (body) => `<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Test IdP</title></head><body>${body}</body></html>`;

function loginForm(uid, error) {
  return page(`<h1>Test IdP sign-in</h1>${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}">
<label for="login">Username</label><input id="login" name="login" autocomplete="username" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password">
<button type="submit">Sign in to Test IdP</button></form>`);
}

async function formBody(req) {
  let text = '';
  for await (const chunk of req) { text += chunk; if (text.length > 10000) throw new Error('too large'); }
  return Object.fromEntries(new URLSearchParams(text));
}

export async function startProvider({ port, clientId, clientSecret, redirectUri }) {
  const issuer = 'http://127.0.0.1:' + port;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };
  const tamper = { mode: null };

  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId, client_secret: clientSecret, redirect_uris: [redirectUri],
      grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk] },
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => '/interaction/' + interaction.uid },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
    // Claims of the requested scopes go into the ID token, as Okta and Entra ID put them.
    conformIdTokenClaims: false,
    cookies: { keys: ['entitle-test-cookie-key'] },
    async findAccount(ctx, id) {
      const user = USERS[id];
      if (!user) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, email: user.email, email_verified: true, name: id, groups: user.groups }) };
    },
    renderError(ctx, out) { ctx.type = 'html'; ctx.body = page(`<h1>Test IdP error</h1><p>${escape(out.error)}: ${escape(out.error_description || '')}</p>`); },
  });

  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && tamper.mode && ctx.body && ctx.body.id_token) {
      ctx.body = { ...ctx.body, id_token: resign(ctx.body.id_token, tamper.mode, jwk) };
    }
  });

  const callback = provider.callback();
  const server = http.createServer(async (req, res) => {
    const match = /^\/interaction\/([\w-]+)$/.exec(req.url.split('?')[0]);
    if (!match) return callback(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      if (req.method === 'GET') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
        return res.end(loginForm(details.uid));
      }
      const { login, password } = await formBody(req);
      if (!USERS[login] || password !== PASSWORD) {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
        return res.end(loginForm(details.uid, 'Wrong username or password.'));
      }
      // Consent is given with the sign-in: the client is the company's own.
      const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
      grant.addOIDCScope(details.params.scope);
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { login: { accountId: login }, consent: { grantId } }, { mergeWithLastSubmission: false });
    } catch (error) {
      res.writeHead(400, { 'Content-Type': 'text/plain' });
      res.end(String(error));
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { issuer, tamper, close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }) };
}

// The provider's ID token made wrong in one way and signed again with its key.
function resign(token, mode, jwk) {
  const [header, payload] = token.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url'));
  const now = Math.floor(Date.now() / 1000);
  if (mode === 'audience') claims.aud = 'another-application';
  if (mode === 'nonce') claims.nonce = 'a-nonce-from-another-sign-in';
  if (mode === 'expired') { claims.iat = now - 7200; claims.exp = now - 3600; }
  const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
  const signature = sign('sha256', Buffer.from(header + '.' + body), createPrivateKey({ key: jwk, format: 'jwk' })).toString('base64url');
  return header + '.' + body + '.' + signature;
}
