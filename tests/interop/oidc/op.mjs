// DEVELOPMENT AND TESTS ONLY. A real OpenID Provider (the certified `oidc-provider`
// package) for varco's OIDC interop tests, started by tests/oidc.rs as
// `node op.mjs <config.json>` on loopback. Its keys are generated at each start (a restart
// is a key rotation). Besides the provider's own endpoints it has a login page that a
// test client can post, and test controls under /test/ that forge the next ID token in
// the ways the relying party must refuse, and mint back-channel logout tokens.
import { readFileSync } from 'node:fs';
import { createPublicKey, randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import * as jose from 'jose';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const signingAlg = cfg.signing_alg || 'ES256';

async function privateJwk(alg, use, options) {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true, ...options });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}`, alg, use };
}

const signing = [await privateJwk('ES256', 'sig'), await privateJwk('RS256', 'sig', { modulusLength: 2048 })];
const encryption = await privateJwk('RSA-OAEP', 'enc', { modulusLength: 2048 });
const current = (alg) => signing.find((k) => k.alg === alg) || signing[0];

const accounts = cfg.accounts || {};
const claims = cfg.claims || { openid: ['sub'], profile: ['given_name', 'family_name'] };

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients,
  jwks: { keys: [...signing, encryption] },
  cookies: { keys: ['varco-interop-cookie-key-development-only'] },
  claims,
  acrValues: cfg.acr_values || [],
  findAccount: (ctx, id) => (accounts[id]
    ? { accountId: id, claims: () => ({ sub: id, ...accounts[id] }) }
    : undefined),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    claimsParameter: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    encryption: { enabled: true },
    jwtUserinfo: { enabled: true },
    requestObjects: { enabled: true },
  },
  enabledJWA: {
    idTokenSigningAlgValues: ['ES256', 'RS256', 'PS256'],
    requestObjectSigningAlgValues: ['ES256', 'RS256', 'PS256'],
    userinfoSigningAlgValues: ['ES256', 'RS256', 'PS256'],
    userinfoEncryptionAlgValues: ['RSA-OAEP', 'RSA-OAEP-256'],
    userinfoEncryptionEncValues: ['A128CBC-HS256', 'A256CBC-HS512'],
  },
  // The provider refuses to call special-use addresses (SSRF protection); the relying
  // party of these tests is on loopback, so its back-channel logout URI is called plainly.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  // The ID token carries the profile claims too (generic providers often do).
  conformIdTokenClaims: false,
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><body><h1>OP error</h1><pre>${JSON.stringify(out)}</pre></body></html>`;
  },
});
provider.proxy = false;

// One forged ID token, applied to the next successful token response.
let tamper = null;
const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

async function forge(idToken, mode) {
  const [h, p] = idToken.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const payload = JSON.parse(Buffer.from(p, 'base64url'));
  const now = Math.floor(Date.now() / 1000);
  const key = current(header.alg);
  const sign = async (hdr, claimsSet, jwk) => new jose.CompactSign(Buffer.from(JSON.stringify(claimsSet)))
    .setProtectedHeader(hdr)
    .sign(await jose.importJWK(jwk, hdr.alg));
  switch (mode) {
    case 'nonce': payload.nonce = 'another-nonce-another-nonce-another-nonce-x'; break;
    case 'aud': payload.aud = 'someone-else'; break;
    case 'expired': payload.exp = now - 3600; payload.iat = now - 7200; break;
    case 'none': return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`;
    case 'hs256': {
      // The key-confusion attack: the provider's public key, as PEM, used as an HMAC secret.
      const pem = createPublicKey({ key: key, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
      const hdr = { alg: 'HS256', kid: key.kid, typ: 'JWT' };
      return new jose.CompactSign(Buffer.from(JSON.stringify(payload)))
        .setProtectedHeader(hdr)
        .sign(Buffer.from(pem));
    }
    case 'unknown_kid': {
      const rogue = await privateJwk(header.alg, 'sig', header.alg.startsWith('RS') ? { modulusLength: 2048 } : {});
      return sign({ ...header, kid: 'rogue' }, payload, rogue);
    }
    case 'bad_signature': {
      const parts = idToken.split('.');
      const sig = parts[2];
      const flipped = (sig[5] === 'A' ? 'B' : 'A');
      parts[2] = sig.slice(0, 5) + flipped + sig.slice(6);
      return parts.join('.');
    }
    default: throw new Error(`unknown tamper mode ${mode}`);
  }
  return sign(header, payload, key);
}

provider.use(async (ctx, next) => {
  await next();
  // A UserInfo JWE whose authentication tag was changed (the last segment).
  if (tamper === 'userinfo_tag' && ctx.path === '/me' && ctx.status === 200 && typeof ctx.body === 'string') {
    tamper = null;
    const parts = ctx.body.split('.');
    const t = parts[4];
    parts[4] = (t[0] === 'A' ? 'B' : 'A') + t.slice(1);
    ctx.body = parts.join('.');
    return;
  }
  if (tamper && tamper !== 'userinfo_tag' && ctx.path === '/token' && ctx.status === 200 && ctx.body && ctx.body.id_token) {
    const mode = tamper;
    tamper = null;
    ctx.body = { ...ctx.body, id_token: await forge(ctx.body.id_token, mode) };
  }
});

const bcl = [];
provider.on('backchannel.success', (ctx, client) => bcl.push({ client_id: client.clientId, ok: true }));
provider.on('backchannel.error', (ctx, err, client) => bcl.push({ client_id: client.clientId, ok: false, error: err.message }));
provider.on('server_error', (ctx, err) => console.error('server_error', err));

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

const html = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!DOCTYPE html><html><body>${body}</body></html>`);
};
const json = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

const callback = provider.callback();

// OpenID Federation (the SPID/CIE profile): the provider's own Entity Configuration,
// signed with a federation key distinct from its OIDC keys, with its discovery document and
// keys as `metadata.openid_provider`, the configured authority hints and trust marks.
const federationKey = cfg.federation ? await privateJwk('ES256', 'sig') : null;
const publicOf = (jwk) => { const { d, p, q, dp, dq, qi, ...pub } = jwk; return pub; };

async function entityConfiguration() {
  const discovery = await (await fetch(`${cfg.issuer}/.well-known/openid-configuration`)).json();
  const jwks = { keys: [...signing, encryption].map(publicOf) };
  const now = Math.floor(Date.now() / 1000);
  const claimsSet = {
    iss: cfg.issuer,
    sub: cfg.issuer,
    iat: now,
    exp: now + 3600,
    jwks: { keys: [publicOf(federationKey)] },
    authority_hints: cfg.federation.authority_hints,
    metadata: {
      openid_provider: { ...discovery, ...(cfg.federation.metadata || {}), jwks },
      federation_entity: { organization_name: 'Test OP (development only)' },
    },
    trust_marks: cfg.federation.trust_marks || [],
  };
  return new jose.CompactSign(Buffer.from(JSON.stringify(claimsSet)))
    .setProtectedHeader({ alg: 'ES256', kid: federationKey.kid, typ: 'entity-statement+jwt' })
    .sign(await jose.importJWK(federationKey, 'ES256'));
}

const server = (await import('node:http')).createServer(async (req, res) => {
  try {
    const url = new URL(req.url, cfg.issuer);
    const m = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (m && req.method === 'GET' && !m[2]) {
      const details = await provider.interactionDetails(req, res);
      return html(res, 200, `<h1>Login (${details.prompt.name})</h1>
<form method="post" action="/interaction/${m[1]}/login">
<input name="login"><input name="acr"><button type="submit">Log in</button></form>`);
    }
    if (m && req.method === 'POST' && m[2]) {
      const form = new URLSearchParams(await readBody(req));
      const accountId = form.get('login');
      if (!accounts[accountId]) return html(res, 400, '<h1>Unknown account</h1>');
      const details = await provider.interactionDetails(req, res);
      const { params } = details;
      const grant = new provider.Grant({ accountId, clientId: params.client_id });
      grant.addOIDCScope(params.scope || 'openid');
      if (params.claims) {
        const requested = JSON.parse(params.claims);
        const names = [...Object.keys(requested.id_token || {}), ...Object.keys(requested.userinfo || {})];
        if (names.length) grant.addOIDCClaims(names);
      }
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, {
        login: { accountId, acr: form.get('acr') || undefined, amr: ['pwd'] },
        consent: { grantId },
      }, { mergeWithLastSubmission: false });
    }
    if (url.pathname === '/test/tamper' && req.method === 'POST') {
      tamper = JSON.parse(await readBody(req)).mode || null;
      return json(res, 200, { ok: true });
    }
    if (url.pathname === '/test/logout-token' && req.method === 'POST') {
      const body = JSON.parse(await readBody(req));
      const now = Math.floor(Date.now() / 1000);
      const claimsSet = {
        iss: cfg.issuer,
        aud: body.client_id,
        iat: now,
        exp: now + 120,
        jti: body.jti || randomUUID(),
        events: body.events || { 'http://schemas.openid.net/event/backchannel-logout': {} },
      };
      if (body.sub) claimsSet.sub = body.sub;
      if (body.sid) claimsSet.sid = body.sid;
      if (body.nonce) claimsSet.nonce = body.nonce;
      for (const k of body.omit || []) delete claimsSet[k];
      const alg = body.alg || signingAlg;
      const key = current(alg);
      const token = await new jose.CompactSign(Buffer.from(JSON.stringify(claimsSet)))
        .setProtectedHeader({ alg, kid: key.kid, typ: 'logout+jwt' })
        .sign(await jose.importJWK(key, alg));
      return json(res, 200, { logout_token: token });
    }
    if (federationKey && url.pathname === '/.well-known/openid-federation' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/entity-statement+jwt' });
      return res.end(await entityConfiguration());
    }
    if (federationKey && url.pathname === '/test/federation-jwks' && req.method === 'GET') {
      return json(res, 200, { keys: [publicOf(federationKey)] });
    }
    if (url.pathname === '/test/backchannel' && req.method === 'GET') {
      return json(res, 200, bcl);
    }
    return callback(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) json(res, 500, { error: String(err && err.message) });
  }
});

server.listen(cfg.port, '127.0.0.1', () => {
  console.log(`listening ${cfg.issuer}`);
});
