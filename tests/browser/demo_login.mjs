// Walks a real browser (headless Chromium) through `varco demo`: protected page → chooser
// → SPID button of the development IdP → pick a user → auto-POST to the ACS → the echo
// upstream's page with the verified identity. Then /riservato (SpidL3) → step-up.
import { chromium } from 'playwright-core';
const base = process.argv[2] || 'https://localhost:18443';
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
const page = await ctx.newPage();
const csp = [];
page.on('console', m => { if (/Content Security Policy|Refused/.test(m.text())) csp.push(m.text()); });
await page.goto(`${base}/fascicolo/123`);
console.log('chooser:', page.url());
await page.getByRole('button', { name: /IdP di sviluppo varco/ }).click();
await page.waitForURL(/127\.0\.0\.1:\d+\/sso/);
console.log('idp:', page.url().split('?')[0]);
await page.getByRole('button', { name: /Operatrice di patronato/ }).click();
await page.waitForURL(`${base}/fascicolo/123`);
const text = await page.textContent('body');
console.log('landed:', page.url(), '| verified:', text.includes('Verified identity'), '| operator CF:', text.includes('BNCGLI85C52H501'));
// Step-up to SpidL3.
await page.goto(`${base}/riservato/x`);
console.log('step-up chooser:', page.url());
await page.getByRole('button', { name: /IdP di sviluppo varco/ }).click();
await page.waitForURL(/\/sso/);
const lvl = await page.textContent('main');
console.log('idp asked level:', /SpidL3/.test(lvl));
await page.getByRole('button', { name: /Cittadino/ }).click();
await page.waitForURL(`${base}/riservato/x`);
const t2 = await page.textContent('body');
console.log('step-up landed:', page.url(), '| L3:', t2.includes('SpidL3'));
// Cancel at the IdP: nr25 page.
await ctx.clearCookies();
await page.goto(`${base}/fascicolo/1`);
await page.getByRole('button', { name: /IdP di sviluppo varco/ }).click();
await page.waitForURL(/\/sso/);
await page.getByRole('button', { name: /Annulla/ }).click();
await page.waitForLoadState();
console.log('cancel page:', page.url(), (await page.textContent('main')).slice(0, 120).replace(/\s+/g, ' '));
console.log('CSP violations:', csp.length ? csp : 'none');
await browser.close();
