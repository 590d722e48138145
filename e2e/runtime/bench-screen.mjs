// Benchmark (not a test) of the screen in the page, on both engines in one run: the x86
// test guest boots in QemuClient (linux-i386-pc-graphics) with its display on a canvas,
// first on v86, then on the QEMU engine (the build in QEMUWEB_QEMU_DIR; an i386 guest runs
// on a wasm64 build's qemu-system-x86_64). Nothing asserts a speed; it prints figures.
//
// - Keypress-to-pixel latency: in the guest's `keys` mode (typed text drawn on the VGA
//   text screen from row 2), a `keydown` is dispatched on the focused canvas and the
//   page watches the canvas at every animation frame (after the display's own frame
//   callback drew, when the display's frame sequence moved) until the glyph cell of row 2,
//   column 0 shows the change: a letter appearing, then Backspace erasing it. Time from
//   the dispatch to that frame. Each press starts after a random 0-50 ms pause, so presses
//   fall at every phase of the engines' refresh timers. Median, p95, min and max.
// - Frames per second of a full-screen update: in mode 13h the guest's `redraw N [HZ]`
//   fills the whole 320x200 screen N times (every fill changes every pixel), first paced
//   at 60 fills a second (the PIT ticks at 60 Hz and each fill waits for a tick, as a game
//   or a video player draws), then at full speed (N calibrated so the run lasts about
//   --seconds). Counted at every animation frame: frames drawn on the canvas per second,
//   of them the whole ones (a column through the screen in one colour) and the torn ones
//   (the guest was mid-fill when the engine took the frame), frames the engine published
//   per second, the guest's fills per second, and the page's animation frames per second
//   (the ceiling of what a canvas shows). After each run the canvas must show the last
//   fill on every pixel (else the run fails: the figures would not be of real frames).
// Ratios QEMU / v86 follow.
//
//   node e2e/runtime/bench-screen.mjs [--samples N] [--seconds S] [--repeats R] [--json FILE]
//
// scripts/bench-screen builds what it needs and bounds the run from outside.
import { writeFileSync } from 'node:fs';
import { launch, newProfile } from '../lib/browser.mjs';
import { converse, dropProfile, openPage, setUp } from './common.mjs';
import { installQemu, QEMU_ASSETS, qemuBuild, qemuMissing } from './qemu-assets.mjs';

const argv = process.argv.slice(2);
/** The value of `--name` as a positive number, or `fallback` without the option. */
function option(name, fallback) {
  const at = argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const v = Number(argv[at + 1]);
  if (!(v > 0)) throw new Error(`--${name} N: a positive number`);
  return v;
}
const samples = Math.ceil(option('samples', 40));
const seconds = option('seconds', 3);
const repeats = Math.ceil(option('repeats', 3));
const jsonAt = argv.indexOf('--json');
const jsonFile = jsonAt >= 0 ? argv[jsonAt + 1] : null;
if (jsonAt >= 0 && !jsonFile) throw new Error('--json FILE');

const missing = qemuMissing();
if (missing) throw new Error(`QEMU build missing: ${missing} (this benchmark runs on both engines)`);
const build = qemuBuild();
const BANNER = 'QEMUWEB-GUEST x86 v1';

const env = await setUp();
installQemu(env.webRoot);
const profile = newProfile();
const context = await launch(profile);

/** Boots the guest on `engine` in a fresh page with its display (and input) on `#screen`. */
async function boot(engine) {
  const page = await openPage(context, env.web, `bench-screen-${engine}`);
  const started = await page.evaluate(async ([disk, engine, assets]) => {
    const canvas = document.createElement('canvas');
    canvas.id = 'screen';
    document.body.append(canvas);
    window.client = engine === 'qemu' ? makeClient({ workerUrl: './pkg/worker.js', assets }) : makeClient();
    await client.init();
    client.attachDisplay('bench', canvas, { input: { pointerLock: false } });
    return attempt(() => client.startVm('bench', profiles['linux-i386-pc-graphics'],
      { disk: { source: { kind: 'url', url: disk } } }, { overrides: { memoryMiB: 64 }, engine }));
  }, [`${env.images.url}/x86-bios.qcow2`, engine, QEMU_ASSETS]);
  if (started.error) throw new Error(`${engine}: startVm: ${started.error}: ${started.message}`);
  await page.evaluate(([b]) => waitSerial('bench', b, 0, 300000), [`${BANNER}\r\n> `]);
  return page;
}

/**
 * Runs in the page: `samples` key presses on the canvas in the guest's `keys` mode, each
 * timed from the `keydown` dispatch to the animation frame that shows the glyph cell of
 * row 2, column 0 changed. Returns the times in ms, with what each press did.
 */
async function latency([samples, ms]) {
  const vm = 'bench';
  const canvas = document.getElementById('screen');
  const ctx = canvas.getContext('2d');
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  /** Lit pixels of the cell of row 2, column 0 (80x25 cells). */
  const lit = () => {
    const [w, h] = [canvas.width / 80, canvas.height / 25];
    const d = ctx.getImageData(0, 2 * h, w, h).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 3 * 0x60) n++;
    return n;
  };
  const key = (type, code) => canvas.dispatchEvent(new KeyboardEvent(type, { code, bubbles: true, cancelable: true }));
  /** Waits, frame by frame, until the canvas's cell satisfies `done`; the time it did. */
  const until = async (done, what) => {
    const start = performance.now();
    let seq = client.displayFrame(vm);
    for (;;) {
      await frame();
      const now = client.displayFrame(vm);
      if (now !== seq) {
        seq = now;
        if (done(lit())) return performance.now();
      }
      if (performance.now() - start > ms) throw new Error(`${what}: the canvas did not change in ${ms} ms`);
    }
  };
  canvas.focus();
  if (document.activeElement !== canvas) throw new Error('the canvas did not take the focus');
  // The keys screen is on the canvas (row 2 blank) before the first press.
  const settle = performance.now();
  while (lit() !== 0 || client.displayFrame(vm) === undefined) {
    if (performance.now() - settle > ms) throw new Error('row 2 of the keys screen is not blank');
    await frame();
  }
  // Set 1 make codes; the break code adds 0x80.
  const letters = [['KeyA', 0x1e], ['KeyS', 0x1f], ['KeyD', 0x20], ['KeyF', 0x21]];
  const out = [];
  for (let i = 0; i < samples; i++) {
    const erase = i % 2 === 1;
    const [code, make] = erase ? ['Backspace', 0x0e] : letters[(i / 2) % letters.length];
    await new Promise((r) => setTimeout(r, Math.random() * 50));
    const from = window.serial[vm].length;
    const t0 = performance.now();
    key('keydown', code);
    const t1 = await until(erase ? (n) => n === 0 : (n) => n > 0, `${code} press ${i}`);
    key('keyup', code);
    // The guest took the release too: it is idle again before the next press.
    await waitSerial(vm, `K ${(make | 0x80).toString(16).toUpperCase()}\r\n`, from, ms);
    out.push({ what: erase ? 'erase' : 'type', ms: t1 - t0 });
  }
  return out;
}

/**
 * Runs in the page: `redraw n` in mode 13h, counted at every animation frame until the
 * guest's reply: frames drawn (whole or torn: the middle column in one colour or not),
 * frames published (the display's sequence), animation frames, and the time.
 */
async function redraw([n, hz, ms]) {
  const vm = 'bench';
  const canvas = document.getElementById('screen');
  const ctx = canvas.getContext('2d');
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  const from = window.serial[vm].length;
  let done = false;
  let failed = null;
  let tEnd = 0;
  const seq0 = client.displayFrame(vm);
  let seq = seq0;
  let [drawn, whole, torn, ticks] = [0, 0, 0, 0];
  const t0 = performance.now();
  client.sendSerialIn(vm, `redraw ${n}${hz ? ` ${hz}` : ''}\r`);
  const reply = waitSerial(vm, `REDRAW ${n}\r\n`, from, ms)
    .then(() => { tEnd = performance.now(); }, (e) => { failed = e; })
    .finally(() => { done = true; });
  while (!done) {
    await frame();
    ticks++;
    const now = client.displayFrame(vm);
    if (now === seq || done) continue;
    seq = now;
    drawn++;
    const col = ctx.getImageData(canvas.width >> 1, 0, 1, canvas.height).data;
    let same = true;
    for (let i = 4; i < col.length && same; i += 4) {
      same = col[i] === col[0] && col[i + 1] === col[1] && col[i + 2] === col[2];
    }
    if (same) whole++;
    else torn++;
  }
  await reply;
  if (failed) throw failed;
  const s = (tEnd - t0) / 1000;
  // The last fill reaches the canvas whole (x86_redraw_index: 1 + (n - 1) mod 7).
  const i = 1 + ((n - 1) % 7);
  const want = [i & 4 ? 255 : 0, i & 2 ? 255 : 0, i & 1 ? 255 : 0];
  const settled = performance.now();
  let last;
  for (;;) {
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    last = 0;
    for (let k = 0; k < px.length; k += 4) if (px[k] !== want[0] || px[k + 1] !== want[1] || px[k + 2] !== want[2]) last++;
    if (last === 0 || performance.now() - settled > 5000) break;
    await frame();
  }
  return { n, hz, seconds: s, drawn, whole, torn, published: seq - seq0, ticks, size: [canvas.width, canvas.height], lastFillWrongPixels: last };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p95 = (xs) => [...xs].sort((a, b) => a - b)[Math.max(0, Math.ceil(0.95 * xs.length) - 1)];
const results = {};

try {
  for (const engine of ['v86', 'qemu']) {
    const slow = engine === 'qemu' ? 120000 : 30000;
    const page = await boot(engine);
    await converse(page, 'bench', 'keys', 'KEYS ON', slow);
    const keys = await page.evaluate(latency, [samples, slow]);
    // Escape leaves the keys mode.
    await page.evaluate(async () => {
      const from = window.serial.bench.length;
      const canvas = document.getElementById('screen');
      canvas.dispatchEvent(new KeyboardEvent('keydown', { code: 'Escape', bubbles: true }));
      canvas.dispatchEvent(new KeyboardEvent('keyup', { code: 'Escape', bubbles: true }));
      await waitSerial('bench', 'KEYS OFF\r\n> ', from, 120000);
    });
    await converse(page, 'bench', 'gfx', 'GFX 320x200', slow);
    // Paced at 60 fills a second, as a game or video would draw.
    const paced = [];
    const nPaced = Math.round(60 * seconds);
    for (let i = 0; i < repeats; i++) paced.push(await page.evaluate(redraw, [nPaced, 60, slow + seconds * 10000]));
    // At full speed. Calibration: fills per second, then N for about `seconds`.
    let n = 14;
    for (const target of [0.5, seconds]) {
      const r = await page.evaluate(redraw, [n, 0, slow]);
      n = Math.max(14, Math.min(65535, Math.round((r.n / r.seconds) * target)));
    }
    const full = [];
    for (let i = 0; i < repeats; i++) full.push(await page.evaluate(redraw, [n, 0, slow + seconds * 10000]));
    for (const r of [...paced, ...full]) {
      if (r.lastFillWrongPixels) throw new Error(`${engine}: redraw ${r.n}: the last fill is not on the canvas (${r.lastFillWrongPixels} pixels differ)`);
    }
    const errors = await page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    if (errors.length) throw new Error(`${engine}: errors: ${JSON.stringify(errors)}`);
    await page.evaluate(() => client.stopVm('bench', true)).catch(() => {});
    await page.close();
    results[engine] = { keys, paced, full };
  }
} finally {
  await context.close();
  dropProfile(profile);
  await env.tearDown();
}

const f = (x, d = 1) => x.toFixed(d);
const summary = {};
/** Medians of a mode's windows, per second. */
function rates(runs) {
  const rate = (key) => median(runs.map((r) => r[key] / r.seconds));
  return { drawn: rate('drawn'), whole: rate('whole'), torn: rate('torn'), published: rate('published'),
    fills: rate('n'), ticks: rate('ticks'), n: runs[0].n, hz: runs[0].hz, seconds: median(runs.map((r) => r.seconds)), size: runs[0].size };
}
for (const [engine, { keys, paced, full }] of Object.entries(results)) {
  const all = keys.map((k) => k.ms);
  summary[engine] = {
    latency: { median: median(all), p95: p95(all), min: Math.min(...all), max: Math.max(...all),
      type: median(keys.filter((k) => k.what === 'type').map((k) => k.ms)),
      erase: median(keys.filter((k) => k.what === 'erase').map((k) => k.ms)), samples: all.length },
    paced: rates(paced),
    full: rates(full),
    runs: { keys, paced, full },
  };
}
const what = `${build.wasm_cpu} ${build.tcg}, ${build.modules.map((m) => `qemu-system-${m.arch}`).join(' ')}`;
console.log(`screen benchmark, one Chromium run: v86 and the QEMU engine (${what}: ${process.env.QEMUWEB_QEMU_DIR})`);
console.log(`keypress on the canvas -> changed glyph on the canvas (${samples} presses each: letters typed and erased)`);
for (const [engine, s] of Object.entries(summary)) {
  const l = s.latency;
  console.log(`  ${engine.padEnd(5)} median ${f(l.median).padStart(6)} ms  p95 ${f(l.p95).padStart(6)} ms  min ${f(l.min)}  max ${f(l.max)}  (type ${f(l.type)}, erase ${f(l.erase)})`);
}
const ratio = (a, b) => (b > 0 ? f(a / b, 2) : 'n/a');
console.log(`  ratio qemu / v86: median ${ratio(summary.qemu.latency.median, summary.v86.latency.median)}, p95 ${ratio(summary.qemu.latency.p95, summary.v86.latency.p95)}`);
for (const [mode, title] of [['paced', 'the guest filling the screen 60 times a second (the PIT paces it)'], ['full', 'the guest filling the screen at full speed']]) {
  console.log(`full-screen update, mode 13h: ${title}; ${repeats} windows of ~${seconds} s (medians)`);
  for (const [engine, s] of Object.entries(summary)) {
    const r = s[mode];
    console.log(`  ${engine.padEnd(5)} canvas ${f(r.drawn).padStart(5)} fps (whole ${f(r.whole)}, torn ${f(r.torn)})  published ${f(r.published)}/s  guest fills ${f(r.fills, 0)}/s  animation frames ${f(r.ticks)}/s  [${r.size.join('x')}, redraw ${r.n}${r.hz ? ` ${r.hz}` : ''}, ${f(r.seconds, 2)} s]`);
  }
  const [q, v] = [summary.qemu[mode], summary.v86[mode]];
  console.log(`  ratio qemu / v86: canvas fps ${ratio(q.drawn, v.drawn)}, whole frames ${ratio(q.whole, v.whole)}, guest fills ${ratio(q.fills, v.fills)}`);
}
if (jsonFile) writeFileSync(jsonFile, JSON.stringify({ qemuDir: process.env.QEMUWEB_QEMU_DIR, samples, seconds, repeats, summary }, null, 2));
