// The guest's screen in the page: the x86 test guest boots on v86 (graphics profile) in a
// worker, writes its banner on the VGA text screen, the worker renders the text cells with
// the guest's own VGA font into a SharedArrayBuffer frame ring (qemuweb-sidecar's
// LocalTransport) and the page's canvas shows it. The canvas is read back and the banner
// found in its 8x16 glyph cells.
// Then the guest switches to VGA mode 13h (its `gfx` command): the worker sends v86's
// framebuffer as RGBA frames and every canvas pixel is checked against the guest's known
// pattern; `hline` changes one row and `text` goes back to the banner. Screenshots are
// kept under target/e2e-artifacts. Finally the page forwards what its display draws over
// the sidecar's RemoteTransport (WebSocket) to the native `frame-server`'s sink, which checks
// every frame's checksum, acknowledges each with its own screen's CRC (the page compares it
// with its screen's) and writes its final screen, compared byte for byte with the canvas.
// On the QEMU engine (a build in QEMUWEB_QEMU_DIR; SKIPPED, loudly, without one) the guest's
// screen is QEMU's own VGA rendering (`-display qemuweb`): the canvas must equal native
// qemu-system-i386's screendump pixel for pixel in each state (mode 13h, a changed row,
// the text screen of the keys mode), the two QEMUs being given the same serial commands.
// On a build with qemu-system-aarch64 (wasm64; the case is left out on others) the aarch64
// test guest boots on the linux-aarch64-virt-graphics profile (virt, virtio-gpu-pci) and
// drives the virtio-gpu itself (its `gfx`, `hline`, `redraw`: a 640x480 resource in guest
// RAM, scanout, transfers and flushes): the canvas must equal native qemu-system-aarch64's
// screendump with the profile's own command line after each command, and show the
// guest's pattern, one changed row and full-screen redraws. (Keys on the canvas go to the
// profile's USB keyboard on xHCI, which this bare-metal guest does not drive.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { startGroup } from '../lib/proc.mjs';
import { TARGET } from '../lib/server.mjs';
import { browserWithPage, closeBrowser, converse, dropProfile, setUpQemu, NO_ISOLATION } from './common.mjs';
import { bootNative, canvasPixels, diffScreens, nativeCommand } from './qemu-native.mjs';
import { QEMU_ASSETS, qemuMissing, runsProfile, warnQemuSkipped } from './qemu-assets.mjs';

const BANNER = 'QEMUWEB-GUEST x86 v1';
const missing = qemuMissing();
warnQemuSkipped(missing, "The QEMU engine's display test is");
let env;

before(async () => {
  env = await setUpQemu(missing);
});

after(async () => {
  await env?.tearDown();
});

/**
 * Runs in the page: reads the canvas, cuts it into 80 columns of cells (9 pixels wide in mode 3) of the font's height
 * (rows = 25), binarises each cell (light pixels are the glyph) and looks for a run of
 * cells whose glyphs follow the banner: equal characters have equal glyphs, different
 * characters different ones, spaces are blank and nothing else is.
 */
function findBanner([banner]) {
  const canvas = document.getElementById('screen');
  const { width, height } = canvas;
  const rows = 25;
  const cols = 80;
  const cw = width / cols;
  const ch = height / rows;
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

/**
 * Boots a test guest as VM `vm` in the page, its display on a new canvas `#screen`, and
 * waits for its serial banner: by default the x86 one (graphics profile, 64 MiB, its disk);
 * `profile`, `inputs`, `options` (of startVm, beside the engine) and `banner` for another.
 */
async function bootOnCanvas(page, vm, engine = 'v86', {
  profile = 'linux-i386-pc-graphics',
  inputs = { disk: { source: { kind: 'url', url: `${env.images.url}/x86-bios.qcow2` } } },
  options = { overrides: { memoryMiB: 64 } },
  banner = BANNER,
} = {}) {
  const started = await page.evaluate(async ([vm, profile, inputs, options, engine, qemuAssets]) => {
    const canvas = document.createElement('canvas');
    canvas.id = 'screen';
    document.body.append(canvas);
    window.client = engine === 'qemu' ? makeClient({ workerUrl: './pkg/worker.js', assets: qemuAssets }) : makeClient();
    await client.init();
    client.attachDisplay(vm, canvas);
    return attempt(() => client.startVm(vm, profiles[profile], inputs, { ...options, engine }));
  }, [vm, profile, inputs, options, engine, QEMU_ASSETS]);
  assert.deepEqual(started, { ok: undefined });
  await page.evaluate(([vm, b, ms]) => waitSerial(vm, b, 0, ms), [vm, `${banner}\r\n> `, engine === 'qemu' ? 180000 : 30000]);
}

test('the VGA text banner of the x86 test guest shows on the page canvas through the SharedArrayBuffer ring', async (t) => {
  const profile = newProfile();
  const artifacts = join(TARGET, 'e2e-artifacts');
  mkdirSync(artifacts, { recursive: true });
  const { context, page } = await browserWithPage(profile, env.web, 'display');
  try {
    await bootOnCanvas(page, 'screen');

    // The screen follows the serial banner within a few frames.
    let result;
    const deadline = Date.now() + 15000;
    do {
      await new Promise((r) => setTimeout(r, 250));
      result = await page.evaluate(findBanner, [BANNER]);
    } while (!result.found && Date.now() < deadline);
    const shot = join(artifacts, 'display-text.png');
    await page.locator('#screen').screenshot({ path: shot });
    t.diagnostic(`screenshot: ${shot}`);
    assert.ok(result.found, `banner not on the canvas (${result.width}x${result.height}, lit cells per row ${result.lit})`);
    assert.deepEqual([result.width, result.height], [720, 400], 'an 80x25 text screen of 9x16 cells, as a VGA clocks mode 3');
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

/**
 * Runs in the page: compares every pixel of the canvas with a guest's `gfx` pattern of
 * `mode` (X86_GFX or ARM_GFX: index ((x >> shift[0]) ^ (y >> shift[1])) & 7 on a
 * width x height screen, red = bit 2, green = bit 1, blue = bit 0), rows listed in `lines`
 * being filled with colour index `lines[y]`, or with `fill`, every pixel in colour index
 * `fill`. The mode may be shown at a whole multiple of its size (QEMU's VGA draws mode 13h
 * with its pixels doubled), given as `scale`: [sx, sy].
 */
function checkPattern([mode, lines, { scale: [sx, sy] = [1, 1], fill } = {}]) {
  const canvas = document.getElementById('screen');
  const { width, height } = canvas;
  if (width !== mode.width * sx || height !== mode.height * sy) return { width, height, bad: -1 };
  const [xs, ys] = mode.shift;
  const px = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  let bad = 0;
  let first = null;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [gx, gy] = [Math.floor(x / sx), Math.floor(y / sy)];
      const i = fill ?? lines[gy] ?? (((gx >> xs) ^ (gy >> ys)) & 7);
      const want = [i & 4 ? 255 : 0, i & 2 ? 255 : 0, i & 1 ? 255 : 0, 255];
      const at = (y * width + x) * 4;
      const got = [px[at], px[at + 1], px[at + 2], px[at + 3]];
      if (got.some((v, k) => v !== want[k])) {
        bad++;
        first ??= { x, y, got, want };
      }
    }
  }
  return { width, height, bad, first };
}
/** The x86 guest's mode 13h pattern (qemuweb_guests::x86_gfx_pixel). */
const X86_GFX = { width: 320, height: 200, shift: [4, 3] };
/** The aarch64 guest's virtio-gpu pattern (qemuweb_guests::aarch64_gfx_pixel), the x86 colours. */
const ARM_GFX = { width: 640, height: 480, shift: [5, 4] };

/** Polls `check` in the page until it reports no bad pixel (or 15 s pass). */
async function until(page, check, args) {
  let result;
  const deadline = Date.now() + 15000;
  do {
    result = await page.evaluate(check, args);
    if (result.bad === 0 || result.found) return result;
    await new Promise((r) => setTimeout(r, 100));
  } while (Date.now() < deadline);
  return result;
}

test('VGA mode 13h: the guest\'s framebuffer reaches the canvas pixel for pixel, one changed row and the way back to text', async (t) => {
  const profile = newProfile();
  const artifacts = join(TARGET, 'e2e-artifacts');
  mkdirSync(artifacts, { recursive: true });
  const { context, page } = await browserWithPage(profile, env.web, 'display-gfx');
  try {
    await bootOnCanvas(page, 'gfx');
    assert.ok((await until(page, findBanner, [BANNER])).found, 'the text banner first');
    const textSeq = await page.evaluate(() => client.displayFrame('gfx'));

    assert.match(await converse(page, 'gfx', 'gfx', 'GFX 320x200'), /GFX 320x200/);
    let result = await until(page, checkPattern, [X86_GFX, {}]);
    const shot = join(artifacts, 'display-gfx-mode13h.png');
    await page.locator('#screen').screenshot({ path: shot });
    t.diagnostic(`screenshot: ${shot}`);
    assert.equal(result.bad, 0, `pattern on the canvas: ${JSON.stringify(result)}`);
    const gfxSeq = await page.evaluate(() => client.displayFrame('gfx'));
    assert.ok(gfxSeq > textSeq, `graphics frames follow the text frames (${textSeq} -> ${gfxSeq})`);

    // One row changes: the canvas follows (red is DAC entry 4, which the guest set).
    assert.match(await converse(page, 'gfx', 'hline 100 04', 'FILL 04'), /HLINE 100 FILL 04/);
    result = await until(page, checkPattern, [X86_GFX, { 100: 4 }]);
    await page.locator('#screen').screenshot({ path: join(artifacts, 'display-gfx-hline.png') });
    assert.equal(result.bad, 0, `pattern with row 100 red: ${JSON.stringify(result)}`);

    // An unchanged graphics screen sends no frames.
    const idle = await page.evaluate(async () => {
      const a = client.displayFrame('gfx');
      await new Promise((r) => setTimeout(r, 500));
      return [a, client.displayFrame('gfx')];
    });
    assert.equal(idle[0], idle[1], 'no frames while the screen does not change');

    // Back to text mode: the banner again on a 720x400 canvas.
    assert.match(await converse(page, 'gfx', 'text', 'TEXT 80x25'), /TEXT 80x25/);
    const banner = await until(page, findBanner, [BANNER]);
    assert.ok(banner.found, `banner back on the canvas (${banner.width}x${banner.height})`);
    assert.deepEqual([banner.width, banner.height], [720, 400]);
    const errors = await page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, []);
  } finally {
    await page.evaluate(() => client.stopVm('gfx', true)).catch(() => {});
    await context.close();
    dropProfile(profile);
  }
});

test('a page that is not cross-origin isolated gets a clear capability error from attachDisplay', async () => {
  const profile = newProfile();
  const { context, page } = await browserWithPage(profile, env.web, 'display-noiso');
  try {
    await page.goto(`${env.web.url}${NO_ISOLATION}/page.html`);
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

/**
 * Starts `frame-server --dump-dir DIR` on a free port in a process group of its own
 * (killed by a watchdog after 5 minutes, and by `stop()`); resolves with its URL and log.
 */
async function frameServer(dir) {
  const bin = join(TARGET, 'debug', 'frame-server');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: cargo build -p qemuweb-sidecar --bin frame-server`);
  const server = startGroup(bin, ['--dump-dir', dir], { name: 'frame-server', limitMs: 300000, stdin: 'ignore' });
  try {
    await server.waitFor('frame-server listening on ', 30000);
    await server.waitFor('\n', 1000);
  } catch (e) {
    await server.stop();
    throw e;
  }
  const url = server.output().out.match(/frame-server listening on (ws:\/\/\S+)/)[1];
  return {
    url,
    /** The lines frame-server wrote to stderr so far. */
    get log() {
      return server.output().err.split('\n').slice(0, -1);
    },
    stop: () => server.stop(),
  };
}

/** Reads a PAM (RGB_ALPHA) file: {width, height, data}. */
function readPam(path) {
  const bytes = readFileSync(path);
  const end = bytes.indexOf('ENDHDR\n') + 'ENDHDR\n'.length;
  const header = bytes.subarray(0, end).toString('latin1');
  const width = Number(header.match(/WIDTH (\d+)/)[1]);
  const height = Number(header.match(/HEIGHT (\d+)/)[1]);
  return { width, height, data: bytes.subarray(end) };
}

/** Waits for `path` to exist (the sink writes it when the page closes the stream). */
async function waitFile(path, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} was not written`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Runs in the page: forwards VM `vm`'s display to `url` until `wait` (a serial command) is
 * done, flushes (the sink acknowledged the last frame), reads the stats and the canvas
 * pixels back, and closes the stream.
 */
async function forwardAndRead([vm, url, line, expect]) {
  const forward = client.forwardDisplay(vm, url);
  const deadline = performance.now() + 15000;
  // Connected, and the current screen went out as the stream's keyframe.
  while (!forward.stats().connected || forward.stats().forwarded < 1) {
    if (forward.stats().error || performance.now() > deadline) return { stats: forward.stats() };
    await new Promise((r) => setTimeout(r, 10));
  }
  if (line) {
    const from = window.serial[vm].length;
    client.sendSerialIn(vm, line + '\r');
    await waitSerial(vm, expect, from, 20000);
  }
  // Let the screen settle (a few 16 ms frame intervals), then wait for the last ack.
  let seq;
  do {
    seq = client.displayFrame(vm);
    await new Promise((r) => setTimeout(r, 300));
  } while (seq !== client.displayFrame(vm));
  const flushed = await forward.flush(10000);
  const stats = forward.stats();
  const canvas = document.getElementById('screen');
  const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  forward.close();
  return { flushed, stats, width: canvas.width, height: canvas.height, pixels: Array.from(px) };
}

test('the page forwards its display over the RemoteTransport to the native frame-server byte for byte (text, then mode 13h)', async (t) => {
  const profile = newProfile();
  const dumps = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-display-remote-'));
  const server = await frameServer(dumps);
  let context;
  try {
    let page;
    ({ context, page } = await browserWithPage(profile, env.web, 'display-remote'));
    await bootOnCanvas(page, 'remote');
    assert.ok((await until(page, findBanner, [BANNER])).found, 'the text banner first');

    const check = async (name, got) => {
      assert.ok(got.flushed, `${name}: the sink acknowledged the last frame: ${JSON.stringify(got.stats)}`);
      assert.equal(got.stats.error, undefined);
      assert.equal(got.stats.mismatched, 0, `${name}: an ack's CRC differs from the page's screen`);
      assert.ok(got.stats.matched >= 1, `${name}: acks checked against the page's screen CRC`);
      assert.equal(got.stats.lastAcked, got.stats.lastSequence);
      await waitFile(join(dumps, `${name}.pam`));
      const pam = readPam(join(dumps, `${name}.pam`));
      assert.deepEqual([pam.width, pam.height], [got.width, got.height]);
      assert.ok(Buffer.from(got.pixels).equals(pam.data), `${name}: the sink's screen equals the canvas byte for byte`);
      t.diagnostic(`${name}: ${got.stats.forwarded} frames forwarded, ${got.stats.bytesSent} bytes, ${got.stats.matched} acks matched`);
    };

    // The text screen: the first frame is the current screen as a keyframe.
    const text = await page.evaluate(forwardAndRead, ['remote', `${server.url}/sink?name=text`, 'echo hi', 'hi']);
    await check('text', text);
    assert.deepEqual([text.width, text.height], [720, 400]);

    // A new stream, through the switch to mode 13h and one changed row.
    const gfx = await page.evaluate(forwardAndRead, ['remote', `${server.url}/sink?name=gfx`, 'gfx', 'GFX 320x200']);
    await check('gfx', gfx);
    assert.deepEqual([gfx.width, gfx.height], [320, 200]);
    // A third stream carries the change of one row.
    const hline = await page.evaluate(forwardAndRead, ['remote', `${server.url}/sink?name=hline`, 'hline 100 04', 'FILL 04']);
    await check('hline', hline);
    const red = hline.pixels.slice(100 * 320 * 4, 101 * 320 * 4);
    assert.ok(red.every((v, i) => v === [255, 0, 0, 255][i % 4]), 'row 100 is red');

    // What the sink saw: each stream opens with a keyframe; the hline is a one-row delta.
    const frames = (name) => server.log.filter((l) => l.startsWith(`frame-server: sink ${name} frame `));
    for (const name of ['text', 'gfx', 'hline']) {
      assert.match(frames(name)[0] ?? '', / key - /, `${name} starts with a keyframe: ${frames(name)}`);
    }
    assert.ok(frames('gfx').some((l) => / 320x200 /.test(l)), `the mode switch reached the sink: ${frames('gfx')}`);
    // Row 100's first 16 pixels were red already (pattern index (0 ^ 12) & 7 = 4): the
    // delta covers exactly the pixels that changed.
    assert.ok(frames('hline').some((l) => / 320x200 delta 16,100,304,1 /.test(l)),
      `the changed row went as a 304x1 delta: ${frames('hline')}`);
  } finally {
    await context?.pages()[0]?.evaluate(() => client.stopVm('remote', true)).catch(() => {});
    await context?.close();
    dropProfile(profile);
    await server.stop();
    rmSync(dumps, { recursive: true, force: true });
  }
});

test('the QEMU engine shows QEMU\'s own VGA screen on the canvas, equal to native QEMU\'s screendump pixel for pixel (text, mode 13h, one row)', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  const profile = newProfile();
  const artifacts = join(TARGET, 'e2e-artifacts');
  mkdirSync(artifacts, { recursive: true });
  const { context, page } = await browserWithPage(profile, env.web, 'display-qemu');
  let native;
  try {
    await bootOnCanvas(page, 'qscreen', 'qemu');
    // The banner on a 720x400 text screen (QEMU's VGA renders the text itself).
    const banner = await until(page, findBanner, [BANNER]);
    assert.ok(banner.found, `banner not on the canvas (${banner.width}x${banner.height}, lit cells per row ${banner.lit})`);
    assert.deepEqual([banner.width, banner.height], [720, 400]);
    native = await bootNative(join(env.imageRoot, 'x86-bios.raw'));
    // The same serial command to both QEMUs, then the canvas against the screendump once
    // the canvas shows what the guest drew (frames stop coming for a while).
    const step = async (line, expect, name, check) => {
      await converse(page, 'qscreen', line, expect, 60000);
      const from = native.serial.length;
      native.send(line);
      await native.until(expect, from);
      if (check) {
        // QEMU's screendump says how its VGA shows the 320x200 mode.
        const dump = await native.screendump();
        const scale = [dump.width / 320, dump.height / 200];
        const result = await until(page, checkPattern, [X86_GFX, check, { scale }]);
        assert.equal(result.bad, 0, `${name}: the guest's pattern at ${dump.width}x${dump.height}: ${JSON.stringify(result)}`);
      }
      const dump = await native.screendump();
      let diff;
      const deadline = Date.now() + 15000;
      do {
        diff = diffScreens(await canvasPixels(page, 'screen', 100), dump);
      } while (diff.bad !== 0 && Date.now() < deadline);
      await page.locator('#screen').screenshot({ path: join(artifacts, `display-qemu-${name}.png`) });
      assert.equal(diff.bad, 0, `${name}: ${diff.bad} pixels differ from native QEMU's screendump; first ${JSON.stringify(diff.first)}`);
      assert.ok(diff.lit > 0, `${name}: something is drawn`);
      t.diagnostic(`${name}: ${dump.width}x${dump.height} equal to native QEMU's screendump`);
    };
    const textSeq = await page.evaluate(() => client.displayFrame('qscreen'));
    await step('gfx', 'GFX 320x200', 'mode13h', {});
    const gfxSeq = await page.evaluate(() => client.displayFrame('qscreen'));
    assert.ok(gfxSeq > textSeq, `graphics frames follow the text frames (${textSeq} -> ${gfxSeq})`);
    await step('hline 100 04', 'FILL 04', 'hline', { 100: 4 });
    // An unchanged screen sends no frames (QEMU reports no update, or one that changes nothing).
    const idle = await page.evaluate(async () => {
      const a = client.displayFrame('qscreen');
      await new Promise((r) => setTimeout(r, 500));
      return [a, client.displayFrame('qscreen')];
    });
    assert.equal(idle[0], idle[1], 'no frames while the screen does not change');
    await step('text', 'TEXT 80x25', 'text');
    // The keys mode's screen (the cursor hidden, so no blink can differ).
    await step('keys', 'KEYS ON', 'keys');
    const errors = await page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, []);
  } finally {
    native?.stop();
    await closeBrowser(context, profile, 'qscreen');
  }
});

const ARM_BANNER = 'QEMUWEB-GUEST aarch64 v1';
const AARCH64_GRAPHICS = 'linux-aarch64-virt-graphics';
// Registered when the build runs the profile (a wasm64 build), as input.test.mjs does with
// linux-x86_64-pc-graphics; skipped only without a build.
if (missing || runsProfile(AARCH64_GRAPHICS)) test('linux-aarch64-virt-graphics on the QEMU engine: the guest\'s virtio-gpu screen on the canvas equals native qemu-system-aarch64\'s screendump (the pattern, one row, redraws)', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  const profile = newProfile();
  const artifacts = join(TARGET, 'e2e-artifacts');
  mkdirSync(artifacts, { recursive: true });
  const { context, page } = await browserWithPage(profile, env.web, 'display-aarch64');
  let native;
  const vm = 'arm-screen';
  try {
    const t0 = Date.now();
    await bootOnCanvas(page, vm, 'qemu', {
      profile: AARCH64_GRAPHICS,
      inputs: {
        kernel: { kind: 'url', url: `${env.images.url}/aarch64-virt.img` },
        disk: { source: { kind: 'url', url: `${env.images.url}/x86-bios.qcow2` } },
      },
      options: {},
      banner: ARM_BANNER,
    });
    t.diagnostic(`banner ${Date.now() - t0} ms after start`);
    const disk = join(env.imageRoot, 'x86-bios.qcow2');
    const kernel = join(env.imageRoot, 'aarch64-virt.img');
    native = await bootNative(disk, { command: nativeCommand(AARCH64_GRAPHICS, disk, 512, { kernel }), banner: ARM_BANNER });

    // The same serial command to both QEMUs; the canvas shows the guest's picture, then
    // equals the screendump.
    let last = null;
    const step = async (line, expect, name, check) => {
      const s0 = Date.now();
      await converse(page, vm, line, `${expect}\r\n> `, 60000);
      const took = Date.now() - s0;
      const from = native.serial.length;
      native.send(line);
      await native.until(`${expect}\r\n> `, from);
      const result = await until(page, checkPattern, [ARM_GFX, ...check]);
      await page.locator('#screen').screenshot({ path: join(artifacts, `display-aarch64-${name}.png`) });
      assert.equal(result.bad, 0, `${name}: the guest's picture on the canvas: ${JSON.stringify(result)}`);
      const dump = await native.screendump();
      writeFileSync(join(artifacts, `display-aarch64-native-${name}.ppm`), Buffer.concat([Buffer.from(`P6\n${dump.width} ${dump.height}\n255\n`), dump.rgb]));
      const canvas = await canvasPixels(page, 'screen', 100);
      const diff = diffScreens(canvas, dump);
      assert.equal(diff.bad, 0, `${name}: ${diff.bad} pixels differ from native qemu-system-aarch64's screendump; first ${JSON.stringify(diff.first)}`);
      if (last) assert.ok(!canvas.rgba.equals(last), `${name}: the picture changed`);
      last = canvas.rgba;
      t.diagnostic(`${name}: ${dump.width}x${dump.height} equal to native QEMU's screendump (the command took ${took} ms in the page)`);
    };
    const seq0 = await page.evaluate((vm) => client.displayFrame(vm), vm);
    await step('gfx', 'GFX 640x480', 'gfx', [{}]);
    const seq1 = await page.evaluate((vm) => client.displayFrame(vm), vm);
    assert.ok(seq1 > seq0, `the scanout's frames reached the canvas (${seq0} -> ${seq1})`);
    // A dirty rectangle: one row.
    await step('hline 100 04', 'HLINE 100 FILL 04', 'hline', [{ 100: 4 }]);
    // Whole-screen redraws: the last fill (k = 2, colour 3) covers every pixel.
    await step('redraw 3', 'REDRAW 3', 'redraw', [{}, { fill: 3 }]);
    // And the pattern back.
    await step('gfx', 'GFX 640x480', 'gfx-again', [{}]);
    const errors = await page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, []);
  } finally {
    native?.stop();
    await closeBrowser(context, profile, vm);
  }
});
