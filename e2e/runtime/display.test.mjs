// The guest's screen in the page: the x86 test guest boots on v86 (graphics profile) in a
// worker, writes its banner on the VGA text screen, the worker renders the text cells with
// the guest's own VGA font into a SharedArrayBuffer frame ring (qemuweb-sidecar's
// LocalTransport) and the page's canvas shows it. The canvas is read back and the banner
// found in its 8x16 glyph cells; a screenshot is saved under the test's temp dir.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { browserWithPage, dropProfile, setUp } from './common.mjs';

const BANNER = 'QEMUWEB-GUEST x86 v1';
let env;

before(async () => {
  env = await setUp();
});

after(async () => {
  await env?.tearDown();
});

/**
 * Runs in the page: reads the canvas, cuts it into 8-pixel-wide cells of the font's height
 * (rows = 25), binarises each cell (light pixels are the glyph) and looks for a run of
 * cells whose glyphs follow the banner: equal characters have equal glyphs, different
 * characters different ones, spaces are blank and nothing else is.
 */
function findBanner([banner]) {
  const canvas = document.getElementById('screen');
  const { width, height } = canvas;
  const rows = 25;
  const cw = 8;
  const ch = height / rows;
  const cols = width / cw;
  const px = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  const key = (r, c) => {
    let bits = '';
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) {
        const at = ((r * ch + y) * width + c * cw + x) * 4;
        bits += px[at] + px[at + 1] + px[at + 2] > 3 * 0x60 ? '1' : '0';
      }
    }
    return bits;
  };
  const blank = '0'.repeat(cw * ch);
  const lit = [];
  for (let r = 0; r < rows; r++) {
    const keys = Array.from({ length: cols }, (_, c) => key(r, c));
    lit.push(keys.filter((k) => k !== blank).length);
    for (let c0 = 0; c0 + banner.length <= cols; c0++) {
      const k = keys.slice(c0, c0 + banner.length);
      let ok = true;
      for (let i = 0; i < banner.length && ok; i++) {
        if ((banner[i] === ' ') !== (k[i] === blank)) ok = false;
        for (let j = 0; j < i && ok; j++) {
          if ((banner[i] === banner[j]) !== (k[i] === k[j])) ok = false;
        }
      }
      if (ok) {
        const glyphs = {};
        for (let i = 0; i < banner.length; i++) glyphs[banner[i]] = k[i];
        return { found: true, width, height, row: r, col: c0, glyphs };
      }
    }
  }
  return { found: false, width, height, lit };
}

test('the VGA text banner of the x86 test guest shows on the page canvas through the SharedArrayBuffer ring', async (t) => {
  const profile = newProfile();
  const artifacts = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-display-'));
  const { context, page } = await browserWithPage(profile, env.web, 'display');
  try {
    const started = await page.evaluate(async ([disk]) => {
      const canvas = document.createElement('canvas');
      canvas.id = 'screen';
      document.body.append(canvas);
      window.client = makeClient();
      await client.init();
      client.attachDisplay('screen', canvas);
      return attempt(() => client.startVm('screen', profiles['linux-i386-pc-graphics'],
        { disk: { source: { kind: 'url', url: disk } } }, { memoryMiB: 64 }));
    }, [`${env.images.url}/x86-bios.qcow2`]);
    assert.deepEqual(started, { ok: undefined });
    await page.evaluate(([b]) => waitSerial('screen', b, 0, 30000), [BANNER]);

    // The screen follows the serial banner within a few frames.
    let result;
    const deadline = Date.now() + 15000;
    do {
      await new Promise((r) => setTimeout(r, 250));
      result = await page.evaluate(findBanner, [BANNER]);
    } while (!result.found && Date.now() < deadline);
    const shot = join(artifacts, 'display.png');
    await page.locator('#screen').screenshot({ path: shot });
    t.diagnostic(`screenshot: ${shot}`);
    assert.ok(result.found, `banner not on the canvas (${result.width}x${result.height}, lit cells per row ${result.lit})`);
    assert.deepEqual([result.width, result.height], [640, 400], 'an 80x25 text screen of 8x16 cells');
    // Real glyphs: every banner character lights a plausible number of pixels.
    for (const [c, bits] of Object.entries(result.glyphs)) {
      const on = [...bits].filter((b) => b === '1').length;
      if (c === ' ') assert.equal(on, 0);
      else assert.ok(on >= 6 && on <= 80, `${c}: ${on} pixels lit`);
    }
    const frames = await page.evaluate(() => ({ seq: client.displayFrame('screen') }));
    assert.ok(frames.seq >= 1, 'frames came through the ring');
    const errors = await page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, []);
  } finally {
    await page.evaluate(() => client.stopVm('screen', true)).catch(() => {});
    await context.close();
    dropProfile(profile);
  }
});

test('a page that is not cross-origin isolated gets a clear capability error from attachDisplay', async () => {
  const profile = newProfile();
  const { context, page } = await browserWithPage(profile, env.web, 'display-noiso');
  try {
    await page.goto(`${env.web.url}/page.html?noisolation`);
    await page.waitForFunction(() => document.title === 'ready');
    const got = await page.evaluate(() => attempt(() => {
      const client = makeClient();
      client.attachDisplay('vm', document.createElement('canvas'));
    }));
    assert.equal(got.error, 'unsupported');
    assert.match(got.message, /cross-origin isolated/);
  } finally {
    await context.close();
    dropProfile(profile);
  }
});
