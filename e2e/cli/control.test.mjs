// The control API of `qemuweb boot --browser --control 127.0.0.1:0`, on each engine: the
// x86 test guest boots on the linux-i386-pc-graphics profile (VGA, PS/2 keyboard and
// mouse), and every command goes through HTTP as automation would send it: serialOut by
// cursor (the banner), serialIn (the guest's `keys` mode), type (its scan codes and the
// typed line), keys (Ctrl-Alt-Del), move and click (its PS/2 packets), screenshot (a PNG,
// decoded by Chromium and compared pixel for pixel with native qemu-system-i386's
// screendump after the same keys) and stop (the run ends with status 0). Requests without
// the token, with a wrong one, from another Origin or to another Host are refused and
// change nothing; a malformed command is a JSON error.
//
// The runner's stdin is /dev/null: with --control its end does not stop the VM.
// On the QEMU engine the same commands run: the screen is QEMU's own VGA rendering
// (`-display qemuweb`), so its screenshot equals native QEMU's screendump exactly, and
// keyboard and pointer go through the display block's input ring into QEMU's PS/2 devices.
// Without a QEMU module (QEMUWEB_QEMU_DIR) that test is SKIPPED, loudly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch, newProfile, removeProfile } from '../lib/browser.mjs';
import { REPO, TARGET, writeGuests } from '../lib/server.mjs';
import { bootNative } from '../runtime/qemu-native.mjs';
import { qemuMissing } from '../runtime/qemu-assets.mjs';

const QEMUWEB = join(TARGET, 'debug', 'qemuweb');
const BANNER = 'QEMUWEB-GUEST x86 v1';
const TYPED = 'Hello, World! 42';
const missing = qemuMissing();
if (missing) {
  console.error(`\n${'!'.repeat(78)}\n!! QEMU module not built: ${missing}\n!! The QEMU engine's control API test is SKIPPED (not passed).\n${'!'.repeat(78)}\n`);
}

let work;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-control-'));
  execFileSync('cargo', ['build', '-q', '-p', 'qemuweb-cli'], { cwd: REPO, stdio: 'inherit' });
  await writeGuests(join(work, 'guests'));
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** One HTTP request to the control API; resolves {status, type, body: Buffer}. */
function send(base, { token, body, origin, host, method = 'POST', path = '/v1/command' }) {
  const url = new URL(path, base);
  const headers = { 'content-type': 'application/json' };
  if (token !== undefined) headers['x-qemuweb-token'] = token;
  if (origin) headers.origin = origin;
  if (host) headers.host = host;
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, timeout: 90000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body: Buffer.concat(chunks) }));
    });
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body));
  });
}

/** Starts the runner; resolves {child, base, token, stderr(), command(c), serialUntil(text)}. */
async function startRunner(extra) {
  const args = ['-k', '5', '600', QEMUWEB, 'boot', '--browser', '--control', '127.0.0.1:0',
    '--profile', 'linux-i386-pc-graphics', '--memory', '64', '--timeout', '540', ...extra,
    join(work, 'guests', 'x86-bios.qcow2')];
  // `timeout` and the runner (and its Chromium) in a process group of their own.
  const child = spawn('timeout', args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const found = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no control API line; stderr: ${stderr}`)), 120000);
    const look = () => {
      const m = stderr.match(/control API on (http:\/\/127\.0\.0\.1:\d+) token ([0-9a-f]+)/);
      if (m) { clearTimeout(timer); resolve({ base: m[1], token: m[2] }); }
    };
    child.stderr.on('data', look);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the runner exited (${code}): ${stderr}`)); });
  });
  const r = {
    child,
    ...found,
    stderr: () => stderr,
    stop() { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } },
    /** Sends a command with the token; resolves the JSON answer (or the PNG bytes). */
    async command(c, expectStatus = 200) {
      let res;
      try {
        res = await send(found.base, { token: found.token, body: c });
      } catch (e) {
        throw new Error(`${JSON.stringify(c)}: ${e.message}; the runner's stderr: ${stderr.slice(-2000)}`);
      }
      assert.equal(res.status, expectStatus, `${JSON.stringify(c)}: ${res.body}`);
      return res.type === 'image/png' ? res.body : JSON.parse(res.body);
    },
    cursor: 0,
    /** Reads serial output from the last cursor until it contains `text`; returns it. */
    async serialUntil(text, ms = 60000) {
      const end = Date.now() + ms;
      let seen = '';
      for (;;) {
        const a = await r.command({ cmd: 'serialOut', since: r.cursor });
        seen += a.data;
        r.cursor = a.cursor;
        if (seen.includes(text)) return seen;
        if (Date.now() > end) throw new Error(`no ${JSON.stringify(text)} on serial; got ${JSON.stringify(seen.slice(-400))}`);
        await new Promise((res) => setTimeout(res, 100));
      }
    },
  };
  return r;
}

/** The mouse packets (`M BB XX YY`) in `text`, as [buttons, dx, dy] with dy up positive. */
function packets(text) {
  const signed = (h) => { const v = parseInt(h, 16); return v > 127 ? v - 256 : v; };
  return [...text.matchAll(/M ([0-9A-F]{2}) ([0-9A-F]{2}) ([0-9A-F]{2})\r\n/g)]
    .map((m) => [parseInt(m[1], 16), signed(m[2]), signed(m[3])]);
}

/** Decodes a PNG in Chromium: {width, height, rgba: Buffer}. */
async function decodePng(png) {
  const profile = newProfile();
  const context = await launch(profile);
  try {
    const page = await context.newPage();
    const out = await page.evaluate(async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const bitmap = await createImageBitmap(new Blob([bytes], { type: 'image/png' }),
        { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const ctx = canvas.getContext('2d');
      ctx.drawImage(bitmap, 0, 0);
      const px = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
      let s = '';
      for (let i = 0; i < px.length; i += 0x8000) s += String.fromCharCode(...px.subarray(i, i + 0x8000));
      return { width: bitmap.width, height: bitmap.height, rgba: btoa(s) };
    }, png.toString('base64'));
    return { ...out, rgba: Buffer.from(out.rgba, 'base64') };
  } finally {
    await context.close();
    removeProfile(profile);
  }
}

/**
 * Requests that must be refused before anything happens: no token, a wrong one, another
 * Origin, another Host; a malformed command is a JSON error, a GET is not a command. The
 * caller checks that none of them reached the guest (`echo PWNED` never shows).
 */
async function refusals(runner) {
  const { base, token } = runner;
// Refused before anything happens: no token, a wrong one, another Origin, another
  // Host; a malformed command is a JSON error. None of them reaches the guest.
  const evil = { cmd: 'serialIn', data: 'echo PWNED\r' };
  for (const [what, req, status] of [
    ['no token', { body: evil }, 403],
    ['a wrong token', { token: token.replace(/./, (c) => (c === '0' ? '1' : '0')), body: evil }, 403],
    ['another origin', { token, body: evil, origin: 'http://evil.example' }, 403],
    ['another host', { token, body: evil, host: 'evil.example' }, 403],
  ]) {
    const res = await send(base, req);
    assert.ok(res.status === status || (what === 'another host' && res.status === 421), `${what}: ${res.status} ${res.body}`);
  }
  const bad = await send(base, { token, body: '{"cmd":"type","text":"é"}' });
  assert.equal(bad.status, 400);
  assert.equal(JSON.parse(bad.body).error.code, 'malformed');
  const get = await send(base, { token, method: 'GET' });
  assert.equal(get.status, 405);
}

/** stop: the VM stops with a final sync and the run ends with status 0. */
async function stopRuns(runner) {
  const exited = new Promise((resolve) => runner.child.on('exit', (code) => resolve(code)));
  assert.deepEqual(await runner.command({ cmd: 'stop' }), { ok: true });
  const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 60000))]);
  assert.equal(code, 0, runner.stderr());
}

async function exercise(t, engine, extra) {
  const artifacts = join(TARGET, 'e2e-artifacts');
  mkdirSync(artifacts, { recursive: true });
  const runner = await startRunner(extra);
  let native;
  try {
    await runner.serialUntil(`${BANNER}\r\n> `, 240000);

    await refusals(runner);

    // serialIn: the guest's keys mode.
    assert.deepEqual(await runner.command({ cmd: 'serialIn', data: 'keys\r' }), { ok: true });
    let seen = await runner.serialUntil('KEYS ON');
    assert.ok(!seen.includes('PWNED'), 'a refused request reached the guest');

    // type: scan codes with Shift, and the line on Enter.
    assert.deepEqual(await runner.command({ cmd: 'type', text: `${TYPED}\n` }), { ok: true });
    seen = await runner.serialUntil(`LINE ${TYPED}\r\n`);
    assert.match(seen, /K 2A\r\nK 23\r\nK A3\r\nK AA\r\nK 12\r\nK 92\r\n/, 'Shift, H, e as set 1 make and break codes');

    // keys: Ctrl-Alt-Del, pressed in order, released in reverse.
    await runner.command({ cmd: 'keys', keys: ['ControlLeft', 'AltLeft', 'Delete'] });
    seen = await runner.serialUntil('K 9D\r\n');
    assert.ok(seen.includes('K 1D\r\nK 38\r\nK E0\r\nK 53\r\nK E0\r\nK D3\r\nK B8\r\nK 9D\r\n'), seen);

    // move and click: relative PS/2 packets summing to the motion (y up), the buttons.
    await runner.command({ cmd: 'move', x: 30, y: 20 });
    const end = Date.now() + 20000;
    let sum = [0, 0];
    let got = [];
    seen = '';
    while ((sum[0] !== 30 || sum[1] !== -20) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
      const a = await runner.command({ cmd: 'serialOut', since: runner.cursor });
      seen += a.data;
      runner.cursor = a.cursor;
      got = packets(seen);
      sum = got.reduce(([x, y], [, dx, dy]) => [x + dx, y + dy], [0, 0]);
    }
    assert.deepEqual(sum, [30, -20], `motion in guest pixels (packets ${JSON.stringify(got)})`);
    await runner.command({ cmd: 'click', button: 'right' });
    seen = await runner.serialUntil('M 08 00 00\r\n');
    assert.ok(seen.includes('M 0A 00 00\r\n'), `right button: ${seen}`);
    await runner.command({ cmd: 'click', x: 40, y: 20 });
    seen = await runner.serialUntil('M 08 00 00\r\n');
    assert.deepEqual(packets(seen).filter(([b]) => b & 7).map(([b]) => b & 7), [1], `one left click: ${seen}`);

    // screenshot: the canvas as PNG, equal to native QEMU's screendump after the same keys.
    const png = await runner.command({ cmd: 'screenshot' });
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG');
    writeFileSync(join(artifacts, `control-${engine}.png`), png);
    const shot = await decodePng(png);
    native = await bootNative(join(work, 'guests', 'x86-bios.raw'));
    native.send('keys');
    await native.until('KEYS ON');
    const from = native.serial.length;
    await native.type(`${TYPED}\n`);
    await native.until(`LINE ${TYPED}\r\n`, from);
    const dump = await native.screendump();
    assert.deepEqual([shot.width, shot.height], [dump.width, dump.height], 'the same screen size');
    let differ = 0;
    let first = null;
    let lit = 0;
    for (let i = 0; i < dump.width * dump.height; i++) {
      const [r, g, b, a] = shot.rgba.subarray(i * 4, i * 4 + 4);
      if (r !== dump.rgb[i * 3] || g !== dump.rgb[i * 3 + 1] || b !== dump.rgb[i * 3 + 2] || a !== 255) {
        differ++;
        first ??= { x: i % dump.width, y: Math.floor(i / dump.width), png: [r, g, b, a], qemu: [...dump.rgb.subarray(i * 3, i * 3 + 3)] };
      }
      if (r + g + b > 0) lit++;
    }
    t.diagnostic(`screenshot: ${join(artifacts, `control-${engine}.png`)}`);
    assert.equal(differ, 0, `${differ} pixels differ from native QEMU's screendump; first ${JSON.stringify(first)}`);
    assert.ok(lit > 20 * 9 * 16, `the screen shows the banner and the text (${lit} lit pixels)`);

    await stopRuns(runner);
  } finally {
    native?.stop();
    runner.stop();
  }
}

test('control API on the v86 engine: every command, refusals, screenshot against native QEMU', async (t) => {
  await exercise(t, 'v86', []);
});

test('control API on the QEMU engine: every command, refusals, screenshot against native QEMU', async (t) => {
  if (missing) return t.skip(`QEMU module not built: ${missing}`);
  await exercise(t, 'qemu', ['--engine', 'qemu', '--qemu-dir', process.env.QEMUWEB_QEMU_DIR]);
});
