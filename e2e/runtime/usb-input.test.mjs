// The graphics profiles' USB input on the QEMU engine, seen by a Linux guest: Debian's
// kernel with the busybox initramfs of `scripts/linux-guest` whose /init loads the xHCI,
// USB HID and evdev modules and reports every input_event record of each /dev/input/eventN
// on the serial console ("EV N" and the record's bytes in hex). Playwright types on the
// display canvas (keys with Shift and Control, each pressed and released) and clicks and
// moves the pointer at known canvas positions, as a user would (real DOM events in headless
// Chromium); the guest must report the Linux KEY_* codes, pressed then released, from the
// USB keyboard, and from the USB tablet the absolute X/Y of the canvas positions on QEMU's
// 0..0x7fff scale and BTN_LEFT / BTN_RIGHT down and up.
//
// - linux-x86_64-pc-graphics (q35, VGA, qemu-xhci with usb-kbd and usb-tablet) with the
//   i386 kernel (16-byte records) on qemu-system-x86_64;
// - linux-aarch64-virt-graphics (virt, virtio-gpu, the same USB devices) with the arm64
//   kernel (24-byte records) on qemu-system-aarch64.
//
// Both guests boot at once, each in a browser of its own (the boots are what takes time),
// and each test prints its guest's boot time in the page (start to the ready line) as a
// diagnostic. The serial output and the canvas go to $CARGO_TARGET_DIR/e2e-artifacts/
// (usb-input-ARCH.txt, .png).
// Both need a wasm64 build in QEMUWEB_QEMU_DIR and run in the Linux step
// (scripts/e2e-linux.sh sets QEMUWEB_E2E_LINUX=1). Without a build they are SKIPPED,
// loudly; a QEMUWEB_QEMU_DIR naming a build that cannot run them fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { TARGET } from '../lib/server.mjs';
import { browserWithPage, closeBrowser, linuxGuest, setUp } from './common.mjs';
import { installQemu, QEMU_ASSETS, qemuMissing, runsProfile, warnQemuSkipped } from './qemu-assets.mjs';

const enabled = process.env.QEMUWEB_E2E_LINUX === '1';
const missing = qemuMissing();
if (enabled) warnQemuSkipped(missing && !process.env.QEMUWEB_QEMU_DIR ? missing : null, "The QEMU engine's USB input tests are");

// Linux input-event-codes.h.
const EV_SYN = 0;
const EV_KEY = 1;
const EV_ABS = 3;
const ABS_X = 0;
const ABS_Y = 1;
const BTN_LEFT = 0x110;
const BTN_RIGHT = 0x111;
const KEY = { LEFTSHIFT: 42, LEFTCTRL: 29, H: 35, I: 23, C: 46, DIGIT1: 2, ENTER: 28 };

/**
 * The guests: profile, scripts/linux-guest's arch, its kernel's name, the kernel command
 * line, the size of an input_event record. The command lines leave out what costs most of
 * the kernel's own boot under emulation and none of these guests needs (each halves it on
 * native TCG): the crypto self-tests (`cryptomgr.notests`) and, on x86, the ISA PnP probe.
 */
const GUESTS = [
  { arch: 'x86_64', profile: 'linux-x86_64-pc-graphics', linuxArch: 'i386', kernel: 'bzImage', cmdline: 'console=ttyS0 cryptomgr.notests noisapnp', recordBytes: 16 },
  { arch: 'aarch64', profile: 'linux-aarch64-virt-graphics', linuxArch: 'arm64', kernel: 'vmlinuz', cmdline: 'console=ttyAMA0 cryptomgr.notests', recordBytes: 24 },
];
// The canvas on the page: at (0, 0), shown at this CSS size whatever the guest's screen.
const CSS_W = 800;
const CSS_H = 600;
/** The tablet position QEMU gives the guest for CSS pixel (x, y) of the canvas. */
const absAt = (x, y) => [Math.round((x / CSS_W) * 0x7fff), Math.round((y / CSS_H) * 0x7fff)];
// How long a boot may take in the page (the guest's ready line), and each later step.
const BOOT_MS = 900_000;
const STEP_MS = 60_000;

/** Why the tests do not run, or false. */
const skipOf = () => !enabled ? 'set QEMUWEB_E2E_LINUX=1 (scripts/e2e-linux.sh)'
  : missing && !process.env.QEMUWEB_QEMU_DIR ? `QEMU build missing: ${missing}` : false;

let env;
// The guests booting, by arch: { profile, context, page, vm, t0, started } (started: the
// startVm promise's outcome, {ok} or {error}).
const booting = {};

// Both guests boot at once, each in a browser of its own (the boots are the slow part; a
// test waits for its own guest, and the other goes on booting meanwhile).
before(async () => {
  if (!enabled) return;
  env = await setUp();
  if (missing) return;
  installQemu(env.webRoot);
  for (const g of GUESTS) {
    const [kernel, ...initrds] = linuxGuest(g.linuxArch);
    const initrd = initrds.find((p) => p.endsWith('/initrd-input.img'));
    assert.ok(initrd, `scripts/linux-guest --arch ${g.linuxArch} made no initrd-input.img`);
    mkdirSync(join(env.imageRoot, g.arch));
    copyFileSync(kernel, join(env.imageRoot, g.arch, g.kernel));
    copyFileSync(initrd, join(env.imageRoot, g.arch, 'initrd-input.img'));
  }
  for (const g of GUESTS) {
    if (runsProfile(g.profile)) booting[g.arch] = await boot(g);
  }
});

after(async () => {
  for (const b of Object.values(booting)) await closeBrowser(b.context, b.profile, b.vm);
  await env?.tearDown();
});

/** Opens a browser on the test page and starts guest `g` on a canvas there. */
async function boot(g) {
  const profile = newProfile();
  const vm = `usb-${g.arch}`;
  const { context, page } = await browserWithPage(profile, env.web, vm);
  const base = `${env.images.url}/${g.arch}`;
  const t0 = Date.now();
  const started = await page.evaluate(async ([vm, profile, inputs, qemuAssets, w, h]) => {
    const canvas = document.createElement('canvas');
    canvas.id = 'screen';
    canvas.style.cssText = `position: absolute; left: 0; top: 0; width: ${w}px; height: ${h}px`;
    document.body.append(canvas);
    window.client = makeClient({ workerUrl: './pkg/worker.js', assets: qemuAssets });
    await client.init();
    client.attachDisplay(vm, canvas, { input: { pointerLock: false } });
    return attempt(() => client.startVm(vm, profiles[profile], inputs, { engine: 'qemu', overrides: { memoryMiB: 256 } }));
  }, [vm, g.profile, {
    kernel: { kind: 'url', url: `${base}/${g.kernel}` },
    initrd: { kind: 'url', url: `${base}/initrd-input.img` },
    // The USB keyboard and tablet: the guest waits for both before it reports.
    kernelCmdline: `${g.cmdline} quiet QEMUWEB_INPUTS=2`,
  }, QEMU_ASSETS, CSS_W, CSS_H]);
  return { profile, context, page, vm, t0, started };
}

/**
 * The guest's report in serial text `text`: its input devices by number
 * ({ n: name }) and the records of each, in order ({ n: [{ type, code, value }] }). A line
 * counts only whole (up to its CR LF); the shell's prompt may stand before one.
 */
function parseReport(text, recordBytes) {
  const devices = {};
  for (const m of text.matchAll(/QEMUWEB-INPUT (\d+) ([^\r\n]*)\r\n/g)) devices[m[1]] = m[2];
  const events = {};
  const line = new RegExp(`EV (\\d+)((?: [0-9a-f]{2}){${recordBytes}})\\r\\n`, 'g');
  for (const m of text.matchAll(line)) {
    const b = Buffer.from(m[2].trim().split(' ').map((h) => parseInt(h, 16)));
    const at = recordBytes - 8; // after the two longs of the timestamp
    (events[m[1]] ??= []).push({ type: b.readUInt16LE(at), code: b.readUInt16LE(at + 2), value: b.readInt32LE(at + 4) });
  }
  return { devices, events };
}

/** The number of the device whose name contains `what`. */
function deviceNamed(devices, what) {
  const n = Object.keys(devices).find((k) => devices[k].includes(what));
  assert.ok(n !== undefined, `no input device named "...${what}..." in ${JSON.stringify(devices)}`);
  return n;
}

/** The last value of each tablet axis in `events` ([x, y], undefined where none came). */
function lastAbs(events) {
  const last = [undefined, undefined];
  for (const e of events) if (e.type === EV_ABS && (e.code === ABS_X || e.code === ABS_Y)) last[e.code] = e.value;
  return last;
}

/** The EV_KEY presses and releases (no auto-repeats) in `events`, as [code, value]. */
const keys = (events) => events.filter((e) => e.type === EV_KEY && e.value !== 2).map((e) => [e.code, e.value]);

for (const g of GUESTS) {
  const skip = skipOf();
  test(`${g.profile} on the QEMU engine: keys typed and the pointer used on the canvas reach a Linux guest through its USB keyboard and USB tablet`,
    { skip, timeout: BOOT_MS + 10 * STEP_MS }, (t) => usbInput(t, g));
}

/** The test with guest `g`. */
async function usbInput(t, g) {
  // QEMUWEB_QEMU_DIR names a build that cannot run this: a failure, not a skip.
  assert.equal(missing, null, missing);
  assert.ok(runsProfile(g.profile), `the build in ${process.env.QEMUWEB_QEMU_DIR} has no module for ${g.profile}`);
  const b = booting[g.arch];
  assert.ok(b, `${g.profile} did not start`);
  const { page, vm, t0 } = b;
  try {
    assert.deepEqual(b.started, { ok: undefined });
    await page.evaluate(([vm, ms]) => waitSerial(vm, 'QEMUWEB-INPUT-READY\r\n', 0, ms), [vm, Math.max(0, BOOT_MS - (Date.now() - t0))]);
    const bootMs = Date.now() - t0;
    t.diagnostic(`${g.profile}: Linux booted to its input report in ${(bootMs / 1000).toFixed(1)} s in the page (alongside the other guest's boot)`);
    const box = await page.locator('#screen').boundingBox();
    assert.deepEqual([box.x, box.y, box.width, box.height], [0, 0, CSS_W, CSS_H]);

    const serial = () => page.evaluate((vm) => window.serial[vm] ?? '', vm);
    const report = async () => parseReport(await serial(), g.recordBytes);
    const { devices } = await report();
    const tablet = deviceNamed(devices, 'USB Tablet');
    const keyboard = deviceNamed(devices, 'USB Keyboard');
    /** Polls the report until `check(events of device n)` holds; fails with them after STEP_MS. */
    const until = async (n, check, what) => {
      const end = Date.now() + STEP_MS;
      let events = [];
      for (;;) {
        events = (await report()).events[n] ?? [];
        if (check(events)) return events;
        if (Date.now() > end) assert.fail(`${what}: not seen in ${STEP_MS} ms; device ${n} (${devices[n]}) reported ${JSON.stringify(events.slice(-40))}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    // The pointer: QEMU gives absolute positions to the tablet once the guest's driver
    // polls it (before that they go nowhere on aarch64, to the PS/2 mouse on x86), so
    // the first position is sent again until the guest reports it.
    const [p1x, p1y] = [200, 150];
    const want1 = absAt(p1x, p1y);
    {
      const end = Date.now() + STEP_MS;
      while (String(lastAbs((await report()).events[tablet] ?? [])) !== String(want1)) {
        if (Date.now() > end) assert.fail(`the tablet never reported ${want1}: ${JSON.stringify(((await report()).events[tablet] ?? []).slice(-20))}`);
        await page.mouse.move(p1x + 7, p1y + 5);
        await page.mouse.move(p1x, p1y);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    // A left click there: the button goes down and up where the pointer is, and the
    // canvas takes the focus.
    let seen = ((await report()).events[tablet] ?? []).length;
    await page.mouse.down();
    await page.mouse.up();
    let ev = await until(tablet, (e) => e.slice(seen).some((x) => x.type === EV_KEY && x.code === BTN_LEFT && x.value === 0), 'BTN_LEFT released');
    assert.deepEqual(ev.slice(seen).filter((x) => x.type === EV_KEY).map((x) => [x.code, x.value]), [[BTN_LEFT, 1], [BTN_LEFT, 0]], 'one left click');
    assert.deepEqual(lastAbs(ev), want1, 'the click is where the pointer is');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'screen', 'the click focused the canvas');

    // A move across the canvas (several steps): the tablet ends at the new position.
    const [p2x, p2y] = [600, 450];
    const want2 = absAt(p2x, p2y);
    seen = ev.length;
    await page.mouse.move(p2x, p2y, { steps: 4 });
    ev = await until(tablet, (e) => String(lastAbs(e)) === String(want2), `the tablet at ${want2} (canvas ${p2x},${p2y})`);
    const path = ev.slice(seen).filter((x) => x.type === EV_ABS && x.code === ABS_X).map((x) => x.value);
    assert.ok(path.length >= 2 && path.every((v, i) => i === 0 || v > path[i - 1]), `X rises along the move: ${path}`);
    // A drag past the canvas's bottom right corner (the canvas keeps the pointer while the
    // button is down): the tablet stops at 0x7fff on both axes, the button held, and comes
    // back.
    seen = ev.length;
    await page.mouse.down();
    await page.mouse.move(CSS_W + 100, CSS_H + 100, { steps: 2 });
    await page.mouse.up();
    ev = await until(tablet, (e) => e.slice(seen).some((x) => x.type === EV_KEY && x.code === BTN_LEFT && x.value === 0), 'the drag\'s BTN_LEFT released');
    const drag = ev.slice(seen).filter((x) => x.type === EV_KEY || (x.type === EV_ABS && x.value === 0x7fff));
    assert.deepEqual(drag.map((x) => [x.type, x.code, x.value]),
      [[EV_KEY, BTN_LEFT, 1], [EV_ABS, ABS_X, 0x7fff], [EV_ABS, ABS_Y, 0x7fff], [EV_KEY, BTN_LEFT, 0]], 'a drag to the corner');
    await page.mouse.move(p2x, p2y);
    ev = await until(tablet, (e) => String(lastAbs(e)) === String(want2), `the tablet back at ${want2}`);
    // The right button there.
    seen = ev.length;
    await page.mouse.down({ button: 'right' });
    await page.mouse.up({ button: 'right' });
    ev = await until(tablet, (e) => e.slice(seen).some((x) => x.type === EV_KEY && x.code === BTN_RIGHT && x.value === 0), 'BTN_RIGHT released');
    assert.deepEqual(ev.slice(seen).filter((x) => x.type === EV_KEY).map((x) => [x.code, x.value]), [[BTN_RIGHT, 1], [BTN_RIGHT, 0]], 'one right click');
    assert.deepEqual(lastAbs(ev), want2);
    assert.ok(ev.every((x) => x.type === EV_SYN || x.type === EV_ABS || x.type === EV_KEY || x.type === 4), 'the tablet reports positions and buttons only');

    // Keys (the canvas has the focus): Shift+H, I, Control+C, 1, Enter; each pressed and
    // released, modifiers around their key, in this order, from the USB keyboard.
    const keysBefore = keys((await report()).events[keyboard] ?? []).length;
    await page.keyboard.press('Shift+KeyH');
    await page.keyboard.press('KeyI');
    await page.keyboard.press('Control+KeyC');
    await page.keyboard.press('Digit1');
    await page.keyboard.press('Enter');
    const want = [
      [KEY.LEFTSHIFT, 1], [KEY.H, 1], [KEY.H, 0], [KEY.LEFTSHIFT, 0],
      [KEY.I, 1], [KEY.I, 0],
      [KEY.LEFTCTRL, 1], [KEY.C, 1], [KEY.C, 0], [KEY.LEFTCTRL, 0],
      [KEY.DIGIT1, 1], [KEY.DIGIT1, 0],
      [KEY.ENTER, 1], [KEY.ENTER, 0],
    ];
    ev = await until(keyboard, (e) => keys(e).length >= keysBefore + want.length, 'the typed keys');
    assert.deepEqual(keys(ev).slice(keysBefore), want, 'KEY_* codes pressed and released, in order');
    // Nothing reached another input device (on x86: the i8042 keyboard) meanwhile.
    const all = (await report()).events;
    for (const [n, list] of Object.entries(all)) {
      if (n === keyboard || n === tablet) continue;
      assert.deepEqual(keys(list), [], `device ${n} (${devices[n]}) got keys`);
    }
    const errors = await page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, []);
  } finally {
    const artifacts = join(TARGET, 'e2e-artifacts');
    mkdirSync(artifacts, { recursive: true });
    writeFileSync(join(artifacts, `usb-input-${g.arch}.txt`), await page.evaluate((vm) => window.serial[vm] ?? '', vm).catch((e) => `(no serial: ${e.message})`));
    await page.locator('#screen').screenshot({ path: join(artifacts, `usb-input-${g.arch}.png`) }).catch(() => {});
    delete booting[g.arch];
    await closeBrowser(b.context, b.profile, vm);
  }
}
