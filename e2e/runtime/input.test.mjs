// Keyboard and mouse on the display canvas, on each engine: the x86 test guest's `keys`
// mode reports every byte of its PS/2 controller on the serial port and shows typed text on
// its VGA screen. Playwright types and clicks on the canvas as a user would (real DOM
// events in headless Chromium): the guest answers with the scan codes and the typed line,
// mouse packets follow motion and clicks, keys typed in another input of the page do not
// reach it, and a key held when the canvas loses the focus is released. The screen on the
// canvas is then compared pixel for pixel with what native qemu-system-i386's screendump
// shows after the same keys went in through its monitor.
// On the QEMU engine (a build in QEMUWEB_QEMU_DIR) the same cases run: the screen is QEMU's
// own VGA rendering (`-display qemuweb`), so it must equal native QEMU's screendump exactly,
// and input goes through the display block's ring into QEMU's PS/2 devices. Without a build
// that test is SKIPPED, loudly.
// On a build with qemu-system-x86_64 (wasm64; the case is left out on others), the guest
// also boots on the linux-x86_64-pc-graphics profile (q35, VGA, an xHCI controller with a
// USB keyboard and tablet): QEMU gives keys to the USB keyboard, which SeaBIOS reads for
// the guest (its `keys bios` mode reports them as `B SS AA` from int 16h), and the pointer
// stays QEMU's PS/2 mouse while no driver uses the tablet (usb-input.test.mjs proves the
// tablet, and both USB devices on aarch64, with Linux's drivers); the canvas must equal native
// qemu-system-x86_64's screendump with the profile's own command line (qemuweb-config's
// builder, its qemu_args example).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { TARGET } from '../lib/server.mjs';
import { browserWithPage, closeBrowser, converse, setUpQemu } from './common.mjs';
import { bootNative, canvasPixels, diffScreens, nativeCommand } from './qemu-native.mjs';
import { QEMU_ASSETS, qemuMissing, runsProfile, warnQemuSkipped } from './qemu-assets.mjs';

const BANNER = 'QEMUWEB-GUEST x86 v1';
const TYPED = 'Hello, World! 42';
const missing = qemuMissing();
warnQemuSkipped(missing, "The QEMU engine's input test is");
let env;

before(async () => {
  env = await setUpQemu(missing);
});

after(async () => {
  await env?.tearDown();
});

/** Serial output of `vm` from character `from` on. */
const serialFrom = (page, vm, from) => page.evaluate(([vm, from]) => (window.serial[vm] ?? '').slice(from), [vm, from]);
const serialLength = (page, vm) => page.evaluate((vm) => (window.serial[vm] ?? '').length, vm);
const waitSerial = (page, vm, text, from, ms = 15000) => page.evaluate(([vm, text, from, ms]) => window.waitSerial(vm, text, from, ms), [vm, text, from, ms]);

/**
 * Types `text` as a user on a US keyboard does, Shift held for capitals and '!' (Playwright's
 * `keyboard.type` sends a capital letter's key without Shift).
 */
async function typeAsUser(page, text) {
  const codes = { ' ': 'Space', ',': 'Comma', '.': 'Period', '!': 'Shift+Digit1' };
  for (const c of text) {
    if (/[a-z]/.test(c)) await page.keyboard.press(`Key${c.toUpperCase()}`);
    else if (/[A-Z]/.test(c)) await page.keyboard.press(`Shift+Key${c}`);
    else if (/[0-9]/.test(c)) await page.keyboard.press(`Digit${c}`);
    else await page.keyboard.press(codes[c]);
  }
}

/** The mouse packets (`M BB XX YY`) in `text`, as [buttons, dx, dy] with dy up positive. */
function packets(text) {
  const signed = (h) => { const v = parseInt(h, 16); return v > 127 ? v - 256 : v; };
  return [...text.matchAll(/M ([0-9A-F]{2}) ([0-9A-F]{2}) ([0-9A-F]{2})\r\n/g)]
    .map((m) => [parseInt(m[1], 16), signed(m[2]), signed(m[3])]);
}

/**
 * The whole exercise on `engine` (`v86` or `qemu`): boot on the canvas, click, type, move,
 * the right button, Ctrl-Alt-Del, focus loss, and the screen against native QEMU's.
 */
async function exercise(t, engine) {
  const profile = newProfile();
  const artifacts = join(TARGET, 'e2e-artifacts');
  mkdirSync(artifacts, { recursive: true });
  const { context, page } = await browserWithPage(profile, env.web, `input-${engine}`);
  // QEMU (its TCG interpreter in wasm) boots and answers slower than v86.
  const slow = engine === 'qemu' ? 60000 : 15000;
  let native;
  try {
    const started = await page.evaluate(async ([disk, engine, qemuAssets]) => {
      const canvas = document.createElement('canvas');
      canvas.id = 'screen';
      canvas.style.width = '1440px'; // shown at twice its size: motion is scaled back
      canvas.style.height = '800px';
      const other = document.createElement('input');
      other.id = 'other';
      document.body.append(other, canvas);
      window.client = engine === 'qemu' ? makeClient({ workerUrl: './pkg/worker.js', assets: qemuAssets }) : makeClient();
      await client.init();
      client.attachDisplay('kb', canvas, { input: { pointerLock: false } });
      return attempt(() => client.startVm('kb', profiles['linux-i386-pc-graphics'],
        { disk: { source: { kind: 'url', url: disk } } }, { overrides: { memoryMiB: 64 }, engine }));
    }, [`${env.images.url}/x86-bios.qcow2`, engine, QEMU_ASSETS]);
    assert.deepEqual(started, { ok: undefined });
    await page.evaluate(([b, ms]) => waitSerial('kb', b, 0, ms), [`${BANNER}\r\n> `, engine === 'qemu' ? 180000 : 30000]);
    await converse(page, 'kb', 'keys', 'KEYS ON', slow);

    // A click focuses the canvas; the guest sees the left button go down and up.
    let from = await serialLength(page, 'kb');
    const box = await page.locator('#screen').boundingBox();
    await page.mouse.move(box.x + 100, box.y + 100);
    await page.mouse.down();
    await page.mouse.up();
    await waitSerial(page, 'kb', 'M 08 00 00', from, slow);
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'screen', 'the click focused the canvas');
    let got = packets(await serialFrom(page, 'kb', from));
    assert.deepEqual(got.filter(([b]) => b & 7).map(([b]) => b & 7), [1], 'one left click');

    // Typing: scan codes, Shift, and the line on Enter.
    from = await serialLength(page, 'kb');
    await typeAsUser(page, TYPED);
    await page.keyboard.press('Enter');
    await waitSerial(page, 'kb', `LINE ${TYPED}\r\n`, from, slow);
    const typed = await serialFrom(page, 'kb', from);
    assert.match(typed, /^K 2A\r\nK 23\r\nK A3\r\nK AA\r\nK 12\r\nK 92\r\n/, 'Shift, H, e as set 1 make and break codes');

    // Motion: 60 CSS pixels right and 40 down on a canvas shown at twice its size are 30
    // and 20 guest pixels; PS/2 counts y up.
    from = await serialLength(page, 'kb');
    await page.mouse.move(box.x + 160, box.y + 140, { steps: 4 });
    const deadline = Date.now() + slow;
    let sum;
    do {
      await new Promise((r) => setTimeout(r, 100));
      got = packets(await serialFrom(page, 'kb', from));
      sum = got.reduce(([x, y], [, dx, dy]) => [x + dx, y + dy], [0, 0]);
    } while ((sum[0] !== 30 || sum[1] !== -20) && Date.now() < deadline);
    assert.deepEqual(sum, [30, -20], `motion in guest pixels (packets ${JSON.stringify(got)})`);
    // The right button.
    from = await serialLength(page, 'kb');
    await page.mouse.down({ button: 'right' });
    await page.mouse.up({ button: 'right' });
    await waitSerial(page, 'kb', 'M 08 00 00', from, slow);
    assert.ok((await serialFrom(page, 'kb', from)).includes('M 0A 00 00'), 'right button');

    // Ctrl-Alt-Del through the API (a browser never passes it from the keyboard).
    from = await serialLength(page, 'kb');
    await page.evaluate(() => client.sendCtrlAltDel('kb'));
    await waitSerial(page, 'kb', 'K 9D\r\n', from, slow);
    assert.equal(await serialFrom(page, 'kb', from),
      'K 1D\r\nK 38\r\nK E0\r\nK 53\r\nK E0\r\nK D3\r\nK B8\r\nK 9D\r\n');

    // Another input keeps its keys; a key held on the canvas is released when it loses
    // the focus.
    from = await serialLength(page, 'kb');
    await page.keyboard.down('Shift');
    await waitSerial(page, 'kb', 'K 2A\r\n', from, slow);
    await page.locator('#other').click();
    await waitSerial(page, 'kb', 'K AA\r\n', from, slow);
    await page.keyboard.type('zz');
    assert.equal(await page.locator('#other').inputValue(), 'zz', 'the other input got its keys');
    await page.keyboard.up('Shift');
    await new Promise((r) => setTimeout(r, engine === 'qemu' ? 2000 : 500));
    const after = await serialFrom(page, 'kb', from);
    assert.ok(!after.includes('K 2C'), `z typed in the other input reached the guest: ${JSON.stringify(after)}`);

    // The screen: the canvas against native QEMU's screendump after the same keys.
    native = await bootNative(join(env.imageRoot, 'x86-bios.raw'));
    native.send('keys');
    await native.until('KEYS ON');
    const nfrom = native.serial.length;
    await native.type(`${TYPED}\n`);
    await native.until(`LINE ${TYPED}\r\n`, nfrom);
    const dump = await native.screendump();
    const canvas = await canvasPixels(page);
    await page.locator('#screen').screenshot({ path: join(artifacts, `input-${engine}.png`) });
    writeFileSync(join(artifacts, 'input-native-qemu.ppm'), Buffer.concat([Buffer.from(`P6\n${dump.width} ${dump.height}\n255\n`), dump.rgb]));
    t.diagnostic(`screens: ${join(artifacts, `input-${engine}.png`)} and input-native-qemu.ppm`);
    assert.deepEqual([canvas.width, canvas.height], [dump.width, dump.height], 'the same screen size');
    const { bad, first, lit } = diffScreens(canvas, dump);
    assert.equal(bad, 0, `${bad} pixels differ from native QEMU's screendump; first ${JSON.stringify(first)}`);
    assert.ok(lit > 20 * 9 * 16, `the screen shows the banner and the text (${lit} lit pixels)`);

    const errors = await page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, []);
  } finally {
    native?.stop();
    await closeBrowser(context, profile, 'kb');
  }
}

test('keys typed and pointer used on the canvas reach the guest on v86, and its screen equals native QEMU\'s', async (t) => {
  await exercise(t, 'v86');
});

test('keys typed and pointer used on the canvas reach the guest on the QEMU engine, and its screen equals native QEMU\'s', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  await exercise(t, 'qemu');
});

/** How many keys the guest read through the BIOS (`B SS AA` lines) in `text`. */
const biosKeys = (text) => text.match(/^B [0-9A-F]{2} [0-9A-F]{2}\r$/gm)?.length ?? 0;

/** Polls `check` (may be async) every 20 ms until it is true; throws after `ms`. */
async function waitFor(check, what, ms) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`${what}: not done in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// Registered when the build runs the profile (a wasm64 build: scripts/test-wasm64), as
// qemu.test.mjs does with its profiles; skipped only without a build.
const X86_64_GRAPHICS = 'linux-x86_64-pc-graphics';
if (missing || runsProfile(X86_64_GRAPHICS)) test('linux-x86_64-pc-graphics on the QEMU engine: keys typed on the canvas reach the guest through the USB keyboard, the pointer through PS/2, and its screen equals native qemu-system-x86_64\'s', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  const PROFILE = X86_64_GRAPHICS;
  const profile = newProfile();
  const artifacts = join(TARGET, 'e2e-artifacts');
  mkdirSync(artifacts, { recursive: true });
  const { context, page } = await browserWithPage(profile, env.web, 'input-x86_64');
  const slow = 60000;
  let native;
  try {
    const started = await page.evaluate(async ([disk, profile, qemuAssets]) => {
      const canvas = document.createElement('canvas');
      canvas.id = 'screen';
      document.body.append(canvas);
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: qemuAssets });
      await client.init();
      client.attachDisplay('kb64', canvas, { input: { pointerLock: false } });
      return attempt(() => client.startVm('kb64', profiles[profile],
        { disk: { source: { kind: 'url', url: disk } } }, { overrides: { memoryMiB: 64 }, engine: 'qemu' }));
    }, [`${env.images.url}/x86-bios.qcow2`, PROFILE, QEMU_ASSETS]);
    assert.deepEqual(started, { ok: undefined });
    await page.evaluate(([b]) => waitSerial('kb64', b, 0, 180000), [`${BANNER}\r\n> `]);
    await converse(page, 'kb64', 'keys bios', 'KEYS ON', slow);

    // A click focuses the canvas and reaches the guest as PS/2 packets.
    let from = await serialLength(page, 'kb64');
    const box = await page.locator('#screen').boundingBox();
    await page.mouse.move(box.x + 100, box.y + 100);
    await page.mouse.down();
    await page.mouse.up();
    await waitSerial(page, 'kb64', 'M 08 00 00', from, slow);
    assert.ok((await serialFrom(page, 'kb64', from)).includes('M 09 00 00'), 'the left button');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'screen');
    from = await serialLength(page, 'kb64');
    await page.mouse.move(box.x + 130, box.y + 120, { steps: 3 });
    const deadline = Date.now() + slow;
    let sum;
    do {
      await new Promise((r) => setTimeout(r, 100));
      sum = packets(await serialFrom(page, 'kb64', from)).reduce(([x, y], [, dx, dy]) => [x + dx, y + dy], [0, 0]);
    } while ((sum[0] !== 30 || sum[1] !== -20) && Date.now() < deadline);
    assert.deepEqual(sum, [30, -20], 'motion in guest pixels, PS/2 (y up)');

    // Typing: one key at a time (SeaBIOS polls the USB keyboard at each timer tick), each
    // answered by the BIOS's scan code and character.
    from = await serialLength(page, 'kb64');
    const line = `${TYPED}\n`;
    for (let i = 0; i < line.length; i++) {
      if (line[i] === '\n') await page.keyboard.press('Enter');
      else await typeAsUser(page, line[i]);
      await waitFor(async () => biosKeys(await serialFrom(page, 'kb64', from)) > i, `key ${i} on the canvas`, slow);
    }
    await waitSerial(page, 'kb64', `LINE ${TYPED}\r\n`, from, slow);
    const typed = await serialFrom(page, 'kb64', from);
    assert.match(typed, /^B 23 48\r\nB 12 65\r\n/, 'H and e as int 16h gives them (scan code, character)');
    assert.ok(!/^K /m.test(typed), `keys reached the i8042 instead of the USB keyboard: ${JSON.stringify(typed)}`);

    // The screen against native QEMU with the profile's own command line.
    const disk = join(env.imageRoot, 'x86-bios.qcow2');
    native = await bootNative(disk, { command: nativeCommand(PROFILE, disk, 64) });
    native.send('keys bios');
    await native.until('KEYS ON');
    const nfrom = native.serial.length;
    await native.type(line, (c, i) => waitFor(() => biosKeys(native.serial.slice(nfrom)) > i, `native key ${i}`, 20000));
    await native.until(`LINE ${TYPED}\r\n`, nfrom);
    const dump = await native.screendump();
    let diff;
    const end = Date.now() + 15000;
    do {
      diff = diffScreens(await canvasPixels(page, 'screen', 100), dump);
    } while (diff.bad !== 0 && Date.now() < end);
    await page.locator('#screen').screenshot({ path: join(artifacts, 'input-x86_64.png') });
    writeFileSync(join(artifacts, 'input-native-x86_64.ppm'), Buffer.concat([Buffer.from(`P6\n${dump.width} ${dump.height}\n255\n`), dump.rgb]));
    t.diagnostic(`screens: ${join(artifacts, 'input-x86_64.png')} and input-native-x86_64.ppm`);
    assert.equal(diff.bad, 0, `${diff.bad} pixels differ from native qemu-system-x86_64's screendump; first ${JSON.stringify(diff.first)}`);
    assert.ok(diff.lit > 20 * 9 * 16, `the screen shows the banner and the text (${diff.lit} lit pixels)`);
    const errors = await page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, []);
  } finally {
    native?.stop();
    await closeBrowser(context, profile, 'kb64');
  }
});
