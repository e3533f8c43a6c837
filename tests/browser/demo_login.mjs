// Walks headless Chromium through `varco demo` with SPID over SAML at the development IdP:
// a protected page → the chooser → the SPID button → the development IdP → a test user →
// the auto-submitted Response to the ACS → the echo upstream's page with the verified
// identity; the SpidL3 step-up on /riservato; logout (SAML Single Logout at the IdP); the
// patronato volunteer (role from the demo's directory) refused on /domande with the Italian
// 403 page but allowed to read Mario Rossi's file; logout, after which the protected page
// asks for a login again; a login cancelled at the IdP (ErrorCode nr25); then CIE at the
// development CIE IdP ("Entra con CIE", ForceAuthn) to the echo page with method cie.
// Usage: node demo_login.mjs https://localhost:<port>   (run.sh does it; see README.md)
import { walk, text } from './lib.mjs';

const MARIO = 'RSSMRA80A01H501U'; // the citizen; he delegated the patronato
const OPERATOR = 'BNCGLI85C52H501R'; // Giulia Bianchi, patronato operator
const VOLUNTEER = /VRDLCU90L20F205[A-Z]/; // Luca Verdi, patronato volunteer

const idpUrl = /^http:\/\/127\.0\.0\.1:\d+\/sso\?/;
const isChooser = (base, url) => url.startsWith(`${base}/_varco/login?`);

// "Entra con SPID" opens the list of identity providers (a <details>, no JavaScript).
async function openSpid(page) {
  const menu = page.locator('details', { has: page.locator('summary', { hasText: 'Entra con SPID' }) });
  if ((await menu.getAttribute('open')) === null) await menu.locator('summary').click();
}

// From a protected page's chooser through the development IdP as `user` back to `path`.
async function samlLogin(page, base, check, user, path) {
  await openSpid(page);
  await page.getByRole('button', { name: /IdP di sviluppo varco/ }).click();
  await page.waitForURL(idpUrl);
  const landed = page.waitForResponse((r) => r.url() === `${base}${path}` && r.request().method() === 'GET');
  await page.getByRole('button', { name: user }).click();
  // The IdP's page auto-submits the signed Response to the ACS, which redirects back.
  const resp = await landed;
  await page.waitForURL(`${base}${path}`);
  await page.waitForLoadState('load');
  check(new URL(page.url()).pathname === path, `back on ${path}`);
  return resp;
}

const echoChecks = (t, check, { code, level, method }) => {
  check(t.includes('Identità verificata / Verified identity'), 'echo page says the identity was verified');
  check(!t.includes('non verificata'), 'echo page does not say "not verified"');
  check(code instanceof RegExp ? code.test(t) : t.includes(`"sub": "${code}"`), `identity's fiscal code ${code}`);
  check(t.includes(`"acr": "https://www.spid.gov.it/${level}"`), `level ${level}`);
  check(t.includes(`"amr": "${method}"`), `method ${method}`);
};

await walk('saml', [
  ['protected-page-to-chooser', async ({ page, base, check }) => {
    const resp = await page.goto(`${base}/fascicolo/${MARIO}`);
    check(isChooser(base, page.url()), `redirected to the chooser (at ${page.url()})`);
    check(resp.status() === 200, `chooser status 200 (got ${resp.status()})`);
    const t = await text(page);
    check(t.includes('Accedi al servizio'), 'chooser title "Accedi al servizio"');
    check(t.includes('Entra con SPID'), 'SPID section "Entra con SPID"');
    check(!(await page.getByRole('button', { name: /IdP di sviluppo varco/ }).isVisible()), 'the IdP list is closed at first');
    for (const l of ['Maggiori informazioni', 'Non hai SPID?', 'Serve aiuto?']) {
      check(await page.getByRole('link', { name: l }).isVisible(), `SPID link "${l}"`);
    }
    await openSpid(page);
    check(await page.getByRole('button', { name: /IdP di sviluppo varco/ }).isVisible(), '"Entra con SPID" opens the list: the development IdP');
    check(await page.getByRole('button', { name: /OP di sviluppo/ }).isVisible(), 'OpenID Connect button');
  }],
  ['spid-button-to-idp', async ({ page, check }) => {
    await page.getByRole('button', { name: /IdP di sviluppo varco/ }).click();
    await page.waitForURL(idpUrl);
    const t = await text(page);
    check(t.includes('IdP di sviluppo'), 'development IdP page');
    check(/Richiesta di livello\s+SpidL2/.test(t), 'the IdP was asked for SpidL2 (route min_level)');
    for (const u of [/Cittadino \(Mario Rossi\)/, /Operatrice di patronato/, /Volontario di patronato/, /Minorenne/, /Annulla/]) {
      check(await page.getByRole('button', { name: u }).isVisible(), `IdP offers ${u}`);
    }
  }],
  ['idp-operator-to-echo', async ({ page, base, check }) => {
    const path = `/fascicolo/${MARIO}`;
    const landed = page.waitForResponse((r) => r.url() === `${base}${path}` && r.request().method() === 'GET');
    await page.getByRole('button', { name: /Operatrice di patronato/ }).click();
    const resp = await landed;
    await page.waitForURL(`${base}${path}`);
    await page.waitForLoadState('load');
    check(resp.status() === 200, `status 200 (got ${resp.status()})`);
    echoChecks(await text(page), check, { code: OPERATOR, level: 'SpidL2', method: 'spid' });
    check((await text(page)).includes('"operatore"'), 'role operatore');
  }],
  ['step-up-chooser', async ({ page, base, check }) => {
    await page.goto(`${base}/riservato/x`);
    check(isChooser(base, page.url()) && page.url().includes('level=SpidL3'), `step-up: chooser for SpidL3 (at ${page.url()})`);
    check((await text(page)).includes('richiede un accesso di livello più alto'), 'chooser says a higher level is needed');
  }],
  ['step-up-idp-asks-l3', async ({ page, check }) => {
    await openSpid(page);
    await page.getByRole('button', { name: /IdP di sviluppo varco/ }).click();
    await page.waitForURL(idpUrl);
    check(/Richiesta di livello\s+SpidL3/.test(await text(page)), 'the IdP was asked for SpidL3');
  }],
  ['step-up-echo-l3', async ({ page, base, check }) => {
    await page.getByRole('button', { name: /Cittadino \(Mario Rossi\)/ }).click();
    await page.waitForURL(`${base}/riservato/x`);
    await page.waitForLoadState('load');
    echoChecks(await text(page), check, { code: MARIO, level: 'SpidL3', method: 'spid' });
  }],
  ['logout-citizen', async ({ page, base, check }) => {
    await page.getByRole('button', { name: /Esci/ }).click();
    // SAML Single Logout: the IdP answers, then the gateway's logged-out page.
    await page.waitForURL((u) => u.href.startsWith(base) && !u.pathname.startsWith('/riservato'));
    await page.waitForLoadState('load');
    check((await text(page)).includes('Sei uscito dal servizio'), 'logged-out page "Sei uscito dal servizio"');
    const cookies = (await page.context().cookies(base)).map((c) => c.name);
    check(!cookies.includes('__Host-varco'), `session cookie gone (cookies: ${cookies.join(', ') || 'none'})`);
  }],
  ['volunteer-chooser-for-domande', async ({ page, base, check }) => {
    await page.goto(`${base}/domande`);
    check(isChooser(base, page.url()), `/domande asks for a login (at ${page.url()})`);
  }],
  ['volunteer-refused-on-domande', async ({ page, base, check }) => {
    const resp = await samlLogin(page, base, check, /Volontario di patronato/, '/domande');
    check(resp.status() === 403, `status 403 (got ${resp.status()})`);
    const t = await text(page);
    check(t.includes('403 Forbidden'), 'title 403 Forbidden');
    check(t.includes("Il tuo ruolo non consente l'accesso a questo servizio."), 'Italian refusal "Il tuo ruolo non consente l\'accesso a questo servizio."');
    check((await page.getAttribute('html', 'lang')) === 'it', 'page language it');
    check(!t.includes('Verified identity'), 'nothing of the upstream shown');
    const again = await page.reload();
    check(again.status() === 403, `reload: still 403 (got ${again.status()})`);
  }],
  ['volunteer-reads-delegated-file', async ({ page, base, check }) => {
    const resp = await page.goto(`${base}/fascicolo/${MARIO}`);
    check(resp.status() === 200, `Mario Rossi's file: status 200 (got ${resp.status()})`);
    echoChecks(await text(page), check, { code: VOLUNTEER, level: 'SpidL2', method: 'spid' });
    check((await text(page)).includes('"volontario"'), 'role volontario');
  }],
  ['logout-volunteer', async ({ page, base, check }) => {
    await page.getByRole('button', { name: /Esci/ }).click();
    await page.waitForURL((u) => u.href.startsWith(base) && !u.pathname.startsWith('/fascicolo'));
    await page.waitForLoadState('load');
    check((await text(page)).includes('Sei uscito dal servizio'), 'logged-out page "Sei uscito dal servizio"');
  }],
  ['after-logout-login-again', async ({ page, base, check }) => {
    await page.goto(`${base}/fascicolo/${MARIO}`);
    check(isChooser(base, page.url()), `the protected page asks for a login again (at ${page.url()})`);
    check((await text(page)).includes('Entra con SPID'), 'the chooser again');
  }],
  ['cancel-at-idp', async ({ page, base, check }) => {
    await openSpid(page);
    await page.getByRole('button', { name: /IdP di sviluppo varco/ }).click();
    await page.waitForURL(idpUrl);
    const acs = page.waitForResponse((r) => r.url() === `${base}/_varco/saml/acs`);
    await page.getByRole('button', { name: /Annulla/ }).click();
    const resp = await acs;
    await page.waitForLoadState('load');
    const t = await text(page);
    // The IdP answered with ErrorCode nr25: the gateway's page says the login was cancelled.
    check(resp.status() === 401, `ACS answers 401 (got ${resp.status()})`);
    check(t.includes("Hai annullato l'accesso."), 'Italian "Hai annullato l\'accesso."');
    check(!t.includes('Verified identity'), 'no identity');
    const cookies = (await page.context().cookies(base)).map((c) => c.name);
    check(!cookies.includes('__Host-varco'), 'no session cookie');
  }],
  ['cie-button-to-cie-idp', async ({ page, base, check }) => {
    await page.goto(`${base}/fascicolo/${MARIO}`);
    check(isChooser(base, page.url()), 'the chooser');
    check((await text(page)).includes("Carta d'Identità Elettronica"), 'CIE section');
    await page.getByRole('button', { name: /Entra con CIE/ }).click();
    await page.waitForURL(idpUrl);
    const t = await text(page);
    check(t.includes('CIE di sviluppo varco'), 'the development CIE IdP');
    check(t.includes('ForceAuthn'), 'CIE asks for a new authentication (ForceAuthn)');
  }],
  ['cie-citizen-to-echo', async ({ page, base, check }) => {
    const path = `/fascicolo/${MARIO}`;
    const landed = page.waitForResponse((r) => r.url() === `${base}${path}` && r.request().method() === 'GET');
    await page.getByRole('button', { name: /Cittadino \(Mario Rossi\)/ }).click();
    const resp = await landed;
    await page.waitForURL(`${base}${path}`);
    await page.waitForLoadState('load');
    check(resp.status() === 200, `Mario Rossi's own file: 200 (got ${resp.status()})`);
    echoChecks(await text(page), check, { code: MARIO, level: 'SpidL2', method: 'cie' });
  }],
]);
