// Walks headless Chromium through `varco demo` with OpenID Connect: protected page → chooser
// → the development OP → a test user → back with the verified identity → logout at the OP
// (RP-initiated) → the logged-out page. Screenshots in the working directory; reports CSP
// violations. Run as demo_login.mjs is (see README.md).
import { chromium } from 'playwright-core';
const base = process.argv[2];
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1000, height: 800 } });
const page = await ctx.newPage();
const csp = [];
page.on('console', m => { if (/Content Security Policy|Refused/.test(m.text())) csp.push(m.text()); });
await page.goto(`${base}/fascicolo/RSSMRA80A01H501U`);
await page.screenshot({ path: './1-chooser.png', fullPage: true });
await page.getByRole('button', { name: /OP di sviluppo/ }).click();
await page.waitForURL(/127\.0\.0\.1:\d+\/authorize/);
await page.screenshot({ path: './2-op.png', fullPage: true });
await page.getByRole('button', { name: /Operatrice di patronato/ }).click();
await page.waitForURL(`${base}/fascicolo/RSSMRA80A01H501U`);
await page.screenshot({ path: './3-landed.png', fullPage: true });
const text = await page.textContent('body');
console.log('landed', page.url(), 'verified', text.includes('Verified identity'), 'oidc', text.includes('oidc'));
await page.getByRole('button', { name: /Esci/ }).click();
await page.waitForLoadState();
await page.screenshot({ path: './4-logout.png', fullPage: true });
console.log('after logout', page.url());
console.log('csp violations', csp);
await browser.close();
