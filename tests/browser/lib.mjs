// Shared by the browser walks: launches Debian's Chromium (headless, fresh profile, the
// demo's self-made development CA accepted), runs numbered steps with a screenshot each,
// records Content-Security-Policy violations (and mixed content) as failures, and exits non-zero on any failed
// check. On a failure it also takes a screenshot and prints the page's URL and text.
import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function walk(name, steps) {
  const base = process.argv[2];
  if (!base) {
    console.error(`usage: node ${name}.mjs https://localhost:<port>`);
    process.exit(2);
  }
  const shots = process.env.SHOTS_DIR || 'target/browser-shots';
  mkdirSync(shots, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), `varco-${name}-chromium-`));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    ignoreHTTPSErrors: true, // the demo's development CA; fine for the demo only
    viewport: { width: 1000, height: 800 },
    locale: 'it-IT',
  });
  ctx.setDefaultTimeout(15000);
  ctx.setDefaultNavigationTimeout(15000);
  const page = ctx.pages()[0] || (await ctx.newPage());

  const csp = [];
  page.on('console', (m) => {
    const t = m.text();
    if (/Content[- ]Security[- ]Policy|Refused to|Mixed Content/i.test(t)) csp.push(`${page.url()}: ${t}`);
    else if (m.type() === 'error' && !/\/favicon\.ico$/.test(m.location().url || '')) {
      console.log(`  (console: ${t} [${(m.location().url || page.url()).split('?')[0]}])`);
    }
  });
  page.on('pageerror', (e) => console.log(`  (page error on ${page.url()}: ${e.message})`));

  let failed = 0;
  let n = 0;
  const shot = async (label) => {
    const file = join(shots, `${name}-${String(n).padStart(2, '0')}-${label}.png`);
    try {
      // The whole page's height, but the viewport's width: the echo page's long assertion
      // token would otherwise make the image several thousand pixels wide.
      const h = await page.evaluate(() => document.documentElement.scrollHeight).catch(() => 800);
      await page.screenshot({ path: file, fullPage: true, clip: { x: 0, y: 0, width: 1000, height: Math.min(Math.max(h, 800), 4000) } });
    } catch (e) {
      console.log(`  (no screenshot ${file}: ${e.message})`);
    }
    return file;
  };
  const dump = async () => {
    let text = '';
    try {
      text = (await page.innerText('body', { timeout: 2000 })).replace(/\n{2,}/g, '\n');
    } catch (e) {
      text = `(no text: ${e.message})`;
    }
    console.log(`  page URL: ${page.url()}`);
    console.log(`  page text:\n${text.split('\n').slice(0, 40).map((l) => `    | ${l}`).join('\n')}`);
  };

  const t0 = Date.now();
  console.log(`== ${name}: ${base}`);
  for (const [label, fn] of steps) {
    n += 1;
    const errors = [];
    const check = (cond, what) => {
      if (!cond) errors.push(what);
    };
    const cspBefore = csp.length;
    let aborted = null;
    try {
      await fn({ page, ctx, base, check });
    } catch (e) {
      aborted = e;
      errors.push(`exception: ${e.message.split('\n')[0]}`);
    }
    for (const v of csp.slice(cspBefore)) errors.push(`CSP violation: ${v}`);
    const tag = `${name} step ${String(n).padStart(2, '0')} ${label}`;
    if (errors.length) {
      failed += 1;
      const file = await shot(`${label}-FAILED`);
      console.log(`FAIL ${tag}`);
      for (const e of errors) console.log(`  - ${e}`);
      console.log(`  screenshot: ${file}`);
      await dump();
    } else {
      const file = await shot(label);
      console.log(`ok   ${tag} (${page.url().split('?')[0]}) [${file}]`);
    }
    if (aborted) {
      console.log(`  ${name}: stopped after step ${n}`);
      break;
    }
  }
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (failed) {
    console.log(`== ${name}: FAILED (${failed} step(s)), ${secs}s`);
    process.exit(1);
  }
  console.log(`== ${name}: passed, ${n} steps, no CSP violations, ${secs}s`);
}

/// Escapes a string for a RegExp.
export const re = (s) => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));

/// The page's visible text.
export const text = (page, sel = 'body') => page.innerText(sel);
