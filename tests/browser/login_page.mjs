// The login page as people see it, in headless Chromium at a phone's width (320 px) and a
// desktop's (1280 px), with screenshots of both (login-320.png, login-1280.png, and the
// SPID menu open at 320): one <h1>; each method a region labelled by its heading; "Entra
// con SPID" opening the identity providers without JavaScript, with AgID's three links;
// "Entra con CIE" and "Entra con CNS" (with its card-reader hint); nothing wider than the
// screen; every control reachable with Tab and showing a visible focus ring; text and
// buttons with enough contrast (WCAG AA, 4.5:1) computed from the page's own colours.
// Usage: node login_page.mjs https://localhost:<port>   (run.sh does it)
import { walk } from './lib.mjs';
import { join } from 'node:path';

const shots = process.env.SHOTS_DIR || 'target/browser-shots';

// WCAG relative luminance and contrast ratio of two CSS rgb() colours.
const contrastOf = (a, b) => {
  const lum = (c) => {
    const [r, g, bl] = c.match(/[\d.]+/g).slice(0, 3).map(Number).map((v) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
};

async function structure(page, check) {
  check((await page.locator('h1').count()) === 1, 'one <h1>');
  const regions = await page.locator('section').evaluateAll((ss) => ss.map((s) => {
    const id = s.getAttribute('aria-labelledby');
    const h = id && document.getElementById(id);
    return h && h.tagName === 'H2' && h.textContent.trim().length > 0;
  }));
  check(regions.length >= 4 && regions.every(Boolean), `${regions.length} regions, each labelled by its heading`);
  const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  check(!wide, 'nothing wider than the screen');
}

await walk('login', [
  ['page-at-320', async ({ page, base, check }) => {
    await page.setViewportSize({ width: 320, height: 900 });
    await page.goto(`${base}/_varco/login?return=%2F`);
    await structure(page, check);
    for (const b of ['Entra con CIE', 'Entra con CNS']) {
      check(await page.getByRole('button', { name: b }).isVisible(), `"${b}" button`);
    }
    check(await page.getByText('Inserisci la carta nel lettore').isVisible(), 'CNS card-reader hint');
    for (const l of ['Maggiori informazioni', 'Non hai SPID?', 'Serve aiuto?']) {
      check(await page.getByRole('link', { name: l }).isVisible(), `SPID link "${l}"`);
    }
    await page.screenshot({ path: join(shots, 'login-320.png'), fullPage: true });
    // Contrast of the primary buttons and of the body text, from the computed styles.
    for (const sel of ['summary', 'button.primary', 'p.en', 'h2']) {
      const [fg, bg] = await page.locator(sel).first().evaluate((e) => {
        const cs = getComputedStyle(e);
        let bgc = cs.backgroundColor;
        for (let p = e; p && /rgba\(0, 0, 0, 0\)|transparent/.test(bgc); p = p.parentElement) {
          bgc = getComputedStyle(p).backgroundColor;
        }
        if (/rgba\(0, 0, 0, 0\)|transparent/.test(bgc)) bgc = 'rgb(255, 255, 255)';
        return [cs.color, bgc];
      });
      const ratio = contrastOf(fg, bg);
      check(ratio >= 4.5, `${sel}: contrast ${ratio.toFixed(2)}:1 (${fg} on ${bg})`);
    }
  }],
  ['spid-menu-open-at-320', async ({ page, check }) => {
    await page.locator('summary', { hasText: 'Entra con SPID' }).click();
    check(await page.getByRole('button', { name: /IdP di sviluppo varco/ }).isVisible(), 'the SPID identity providers');
    await structure(page, check);
    await page.screenshot({ path: join(shots, 'login-320-spid-open.png'), fullPage: true });
  }],
  ['keyboard-focus', async ({ page, base, check }) => {
    await page.goto(`${base}/_varco/login?return=%2F`);
    // Tab through the page: every stop is a control, and each shows its focus ring.
    const seen = new Set();
    for (let i = 0; i < 14; i++) {
      await page.keyboard.press('Tab');
      const f = await page.evaluate(() => {
        const e = document.activeElement;
        const cs = getComputedStyle(e);
        return { tag: e.tagName, text: e.textContent.trim().slice(0, 40), outline: cs.outlineStyle, width: parseFloat(cs.outlineWidth) };
      });
      if (f.tag === 'BODY') break;
      check(['A', 'BUTTON', 'SUMMARY'].includes(f.tag), `Tab ${i + 1} reaches a control (${f.tag} "${f.text}")`);
      check(f.outline !== 'none' && f.width >= 2, `focus ring on "${f.text}" (${f.outline} ${f.width}px)`);
      seen.add(f.text);
    }
    check([...seen].some((t) => t.includes('Entra con SPID')), 'Tab reaches "Entra con SPID"');
    await page.keyboard.press('Enter'); // on whatever has focus: harmless, the page stays
  }],
  ['page-at-1280', async ({ page, base, check }) => {
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${base}/_varco/login?return=%2F`);
    await structure(page, check);
    await page.screenshot({ path: join(shots, 'login-1280.png'), fullPage: true });
  }],
  ['error-page-same-design', async ({ page, base, check }) => {
    const resp = await page.goto(`${base}/_varco/saml/acs`);
    check(resp.status() >= 400, `a bad request gets an error page (${resp.status()})`);
    check((await page.locator('h1').count()) === 1, 'one <h1>');
    check(await page.getByRole('link', { name: "Torna all'inizio" }).isVisible(), 'what to do next: "Torna all\'inizio"');
    const font = await page.evaluate(() => getComputedStyle(document.body).fontFamily);
    check(/Titillium|system-ui/.test(font), `the login page's design (font ${font})`);
    await page.screenshot({ path: join(shots, 'error-1280.png'), fullPage: true });
  }],
]);
