// Walks headless Chromium through `varco demo` with OpenID Connect: a protected page → the
// chooser → the development OP (authorization request with PKCE S256) → a test user → the
// gateway's callback → the echo upstream's page with the verified identity (method oidc) →
// logout continued at the OP (RP-initiated) → the gateway's logged-out page; afterwards the
// protected page asks for a login again; then a login cancelled at the OP.
// Usage: node demo_oidc.mjs https://localhost:<port>   (run.sh does it; see README.md)
import { walk, text } from './lib.mjs';

const MARIO = 'RSSMRA80A01H501U';
const OPERATOR = 'BNCGLI85C52H501R';
const opUrl = /^http:\/\/127\.0\.0\.1:\d+\/authorize\?/;
const isChooser = (base, url) => url.startsWith(`${base}/_varco/login?`);

await walk('oidc', [
  ['protected-page-to-chooser', async ({ page, base, check }) => {
    const resp = await page.goto(`${base}/fascicolo/${MARIO}`);
    check(isChooser(base, page.url()), `redirected to the chooser (at ${page.url()})`);
    check(resp.status() === 200, `chooser status 200 (got ${resp.status()})`);
    check(await page.getByRole('button', { name: /OP di sviluppo \(OpenID Connect\)/ }).isVisible(), 'OpenID Connect button');
  }],
  ['op-button-to-op', async ({ page, check }) => {
    await page.getByRole('button', { name: /OP di sviluppo/ }).click();
    await page.waitForURL(opUrl);
    const q = new URL(page.url()).searchParams;
    check(q.get('code_challenge_method') === 'S256' && !!q.get('code_challenge'), 'PKCE S256');
    check(!!q.get('state') && !!q.get('nonce'), 'state and nonce');
    const t = await text(page);
    check(t.includes('OpenID Provider di sviluppo'), 'development OP page');
    check(t.includes('Level: SpidL2.'), 'the OP was asked for SpidL2 (route min_level)');
    check(await page.getByRole('button', { name: /Operatrice di patronato/ }).isVisible(), 'the OP offers the operator');
  }],
  ['op-operator-to-echo', async ({ page, base, check }) => {
    const path = `/fascicolo/${MARIO}`;
    const landed = page.waitForResponse((r) => r.url() === `${base}${path}` && r.request().method() === 'GET');
    await page.getByRole('button', { name: /Operatrice di patronato/ }).click();
    const resp = await landed;
    await page.waitForURL(`${base}${path}`);
    await page.waitForLoadState('load');
    check(resp.status() === 200, `status 200 (got ${resp.status()})`);
    const t = await text(page);
    check(t.includes('Identità verificata / Verified identity'), 'echo page says the identity was verified');
    check(!t.includes('non verificata'), 'echo page does not say "not verified"');
    check(t.includes(`"sub": "${OPERATOR}"`), `identity's fiscal code ${OPERATOR}`);
    check(t.includes('"amr": "oidc"'), 'method oidc');
    check(t.includes('"operatore"'), 'role operatore');
  }],
  ['logout-at-op', async ({ page, base, check }) => {
    const viaOp = page.waitForRequest((r) => /^http:\/\/127\.0\.0\.1:\d+\/logout\?/.test(r.url()));
    await page.getByRole('button', { name: /Esci/ }).click();
    const req = await viaOp;
    check(new URL(req.url()).searchParams.has('id_token_hint'), 'RP-initiated logout with id_token_hint');
    await page.waitForURL((u) => u.href.startsWith(`${base}/_varco/oidc/logged-out`));
    await page.waitForLoadState('load');
    check((await text(page)).includes('Sei uscito dal servizio'), 'logged-out page "Sei uscito dal servizio"');
  }],
  ['after-logout-login-again', async ({ page, base, check }) => {
    await page.goto(`${base}/fascicolo/${MARIO}`);
    check(isChooser(base, page.url()), `the protected page asks for a login again (at ${page.url()})`);
  }],
  ['cancel-at-op', async ({ page, base, check }) => {
    await page.getByRole('button', { name: /OP di sviluppo/ }).click();
    await page.waitForURL(opUrl);
    const callback = page.waitForResponse((r) => r.url().startsWith(`${base}/_varco/oidc/callback/`));
    await page.getByRole('button', { name: /Annulla/ }).click();
    const resp = await callback;
    await page.waitForLoadState('load');
    const t = await text(page);
    check(resp.status() === 401, `callback answers 401 (got ${resp.status()})`);
    check(t.includes("L'accesso è stato annullato o negato presso il gestore dell'identità."), 'Italian "L\'accesso è stato annullato o negato ..."');
    check(!t.includes('Verified identity'), 'no identity');
    const cookies = (await page.context().cookies(base)).map((c) => c.name);
    check(!cookies.includes('__Host-varco'), 'no session cookie');
  }],
]);
