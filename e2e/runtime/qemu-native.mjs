// Native qemu-system-i386 as a test oracle: boots the x86 test guest (VGA, PS/2, serial on
// a pipe, the HMP monitor on a Unix socket; or a profile's command line, e.g. on
// qemu-system-x86_64, or the aarch64 test guest on qemu-system-aarch64), types with the
// monitor's `sendkey`, and takes QEMU's own `screendump` of the screen. Bounded from
// outside by `timeout -k`.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TARGET } from '../lib/server.mjs';

/** QEMU `sendkey` names for the characters `typeText` takes (a US layout). */
function sendkeyName(c) {
  const named = { ' ': 'spc', ',': 'comma', '.': 'dot', '-': 'minus', '/': 'slash', ';': 'semicolon', '=': 'equal', '\n': 'ret' };
  const shifted = { '!': '1', '@': '2', '#': '3', '$': '4', '%': '5', '^': '6', '&': '7', '*': '8', '(': '9', ')': '0', '_': 'minus', '+': 'equal', ':': 'semicolon', '?': 'slash', '<': 'comma', '>': 'dot' };
  if (/[a-z0-9]/.test(c)) return c;
  if (/[A-Z]/.test(c)) return `shift-${c.toLowerCase()}`;
  if (named[c]) return named[c];
  if (shifted[c]) return `shift-${shifted[c]}`;
  throw new Error(`no sendkey name for ${JSON.stringify(c)}`);
}

/**
 * The native command line of `profile` for `disk` (qemuweb-config's builder, TCG; with
 * `kernel`, booting it), as words.
 */
export function nativeCommand(profile, disk, memoryMiB, { kernel } = {}) {
  const bin = join(TARGET, 'debug', 'examples', 'qemu_args');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: cargo build -p qemuweb-config --example qemu_args`);
  const args = ['--profile', profile, '--accel', 'tcg', '--memory', String(memoryMiB), ...(kernel ? ['--kernel', kernel] : []), disk];
  const out = execFileSync(bin, args, { encoding: 'utf8' });
  const line = out.split('\n').find((l) => l.startsWith('qemu-system-'));
  if (!line) throw new Error(`qemu_args printed no command line: ${out}`);
  return line.split(' ');
}

/**
 * Boots `disk` (a raw image of the x86 test guest) on native QEMU; resolves at its prompt.
 * `command` replaces the default machine (qemu-system-i386, VGA, PS/2, the disk on IDE):
 * a whole QEMU command line with the disk and `-serial stdio` (e.g. a profile's, from
 * qemuweb-config's builder); the monitor and `-snapshot` are added. `banner` is the
 * guest's (the aarch64 test guest's with its command line).
 */
export async function bootNative(disk, { limitS = 120, command, banner = 'QEMUWEB-GUEST x86 v1' } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-native-'));
  const monitor = join(dir, 'mon.sock');
  const qemu = command ?? ['qemu-system-i386', '-display', 'none', '-vga', 'std', '-nic', 'none', '-m', '64',
    '-drive', `file=${disk},format=raw`, '-serial', 'stdio'];
  const child = spawn('timeout', ['-k', '5', String(limitS), ...qemu, '-snapshot',
    '-monitor', `unix:${monitor},server=on,wait=off`], { stdio: ['pipe', 'pipe', 'inherit'], detached: true });
  let serial = '';
  child.stdout.on('data', (d) => { serial += d.toString('latin1'); });
  const q = {
    get serial() { return serial; },
    /** Resolves when serial output after `from` contains `text`. */
    async until(text, from = 0, ms = 20000) {
      const end = Date.now() + ms;
      while (!serial.slice(from).includes(text)) {
        if (Date.now() > end || child.exitCode !== null) throw new Error(`native QEMU: no ${JSON.stringify(text)}; got ${JSON.stringify(serial.slice(-300))}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    send(line) { child.stdin.write(line + '\r'); },
    /** Runs an HMP command; resolves at the monitor's prompt after it. */
    hmp(line) {
      return new Promise((resolve, reject) => {
        const s = createConnection(monitor);
        let seen = '';
        const timer = setTimeout(() => { s.destroy(); reject(new Error(`monitor: no prompt after ${line}: ${seen}`)); }, 10000);
        s.on('data', (d) => {
          seen += d.toString();
          if (seen.split('(qemu)').length > 2) { clearTimeout(timer); s.end(); resolve(seen); }
        });
        s.on('error', (e) => { clearTimeout(timer); reject(e); });
        s.write(`${line}\n`);
      });
    },
    /**
     * Types `text` with one `sendkey` per character; with `after(c, i)`, waits for what
     * it resolves after each (e.g. the guest's report of that key).
     */
    async type(text, after) {
      let i = 0;
      for (const c of text) {
        await q.hmp(`sendkey ${sendkeyName(c)}`);
        if (after) await after(c, i);
        i++;
      }
    },
    /** QEMU's screendump: {width, height, rgb} (PPM P6). */
    async screendump() {
      const out = join(dir, `dump-${Date.now()}.ppm`);
      await q.hmp(`screendump ${out}`);
      const end = Date.now() + 10000;
      let size = -1;
      for (;;) {
        const now = existsSync(out) ? statSync(out).size : -1;
        if (now > 0 && now === size) break;
        if (Date.now() > end) throw new Error('native QEMU wrote no screendump');
        size = now;
        await new Promise((r) => setTimeout(r, 100));
      }
      const bytes = readFileSync(out);
      const [magic, width, height] = bytes.subarray(0, 20).toString('latin1').split(/\s+/);
      if (magic !== 'P6') throw new Error(`screendump is ${magic}, not P6`);
      const [w, h] = [Number(width), Number(height)];
      return { width: w, height: h, rgb: bytes.subarray(bytes.length - w * h * 3) };
    },
    stop() {
      // `timeout` and QEMU are a process group of their own: end both (killing only
      // `timeout` would leave QEMU running).
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await q.until(banner);
    await q.until('> ');
  } catch (e) {
    q.stop();
    throw e;
  }
  return q;
}

/** Reads the canvas `#id` of `page` (after `settleMs`, for the last frame): {width, height, rgba: Buffer}. */
export async function canvasPixels(page, id = 'screen', settleMs = 200) {
  const c = await page.evaluate(async ([id, settleMs]) => {
    await new Promise((r) => setTimeout(r, settleMs));
    const c = document.getElementById(id);
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let s = '';
    for (let i = 0; i < px.length; i += 0x8000) s += String.fromCharCode(...px.subarray(i, i + 0x8000));
    return { width: c.width, height: c.height, rgba: btoa(s) };
  }, [id, settleMs]);
  return { ...c, rgba: Buffer.from(c.rgba, 'base64') };
}

/**
 * Compares an RGBA screen (`canvasPixels`) with a screendump pixel for pixel: {bad, first,
 * lit}: the pixels that differ, the first of them, the pixels that are not black.
 */
export function diffScreens(canvas, dump) {
  if (canvas.width !== dump.width || canvas.height !== dump.height) {
    return { bad: -1, first: { canvas: [canvas.width, canvas.height], qemu: [dump.width, dump.height] }, lit: 0 };
  }
  let bad = 0;
  let first = null;
  let lit = 0;
  const { rgba } = canvas;
  for (let i = 0; i < dump.width * dump.height; i++) {
    const [r, g, b] = [rgba[i * 4], rgba[i * 4 + 1], rgba[i * 4 + 2]];
    if (r !== dump.rgb[i * 3] || g !== dump.rgb[i * 3 + 1] || b !== dump.rgb[i * 3 + 2]) {
      bad++;
      first ??= { x: i % dump.width, y: Math.floor(i / dump.width), canvas: [r, g, b], qemu: [...dump.rgb.subarray(i * 3, i * 3 + 3)] };
    }
    if (r + g + b > 0) lit++;
  }
  return { bad, first, lit };
}
