// Shared set-up of the runtime's browser tests: the served directories, the test guest
// image and helpers to drive the test page.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch, logPage, removeProfile } from '../lib/browser.mjs';
import { REPO, serve, TARGET } from '../lib/server.mjs';
import { installQemu } from './qemu-assets.mjs';

export const V86_BUILD = join(REPO, 'e2e', 'node_modules', 'v86', 'build');
export const SEABIOS = process.env.QEMUWEB_SEABIOS_DIR || '/usr/share/seabios';
export const BUNDLE = join(TARGET, 'web', 'qemuweb-runtime');

/**
 * The web root (test page, runtime bundle, v86, SeaBIOS) and an image root (the x86 test
 * guest as qcow2 and raw), each served by its own qemuweb-test-server (another origin, as
 * an image host would be).
 */
export async function setUp() {
  if (!existsSync(join(BUNDLE, 'qemuweb_runtime.js'))) {
    throw new Error(`${BUNDLE} is missing: run scripts/build-web qemuweb-runtime`);
  }
  if (!existsSync(join(V86_BUILD, 'libv86.mjs'))) throw new Error('v86 is missing: run npm ci in e2e/');
  for (const f of ['bios-256k.bin', 'vgabios-stdvga.bin']) {
    if (!existsSync(join(SEABIOS, f))) throw new Error(`${join(SEABIOS, f)} is missing: apt-get install seabios`);
  }
  const webRoot = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-runtime-web-'));
  for (const page of ['page.html', 'bench-v86.html']) cpSync(join(import.meta.dirname, page), join(webRoot, page));
  cpSync(BUNDLE, join(webRoot, 'pkg'), { recursive: true });
  mkdirSync(join(webRoot, 'v86'));
  for (const f of ['libv86.mjs', 'v86.wasm']) cpSync(join(V86_BUILD, f), join(webRoot, 'v86', f));
  mkdirSync(join(webRoot, 'bios'));
  for (const f of ['bios-256k.bin', 'vgabios-stdvga.bin']) cpSync(join(SEABIOS, f), join(webRoot, 'bios', f));
  const imageRoot = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-runtime-img-'));
  const guests = join(TARGET, 'debug', 'qemuweb-guests');
  if (existsSync(guests)) {
    execFileSync(guests, [imageRoot], { stdio: ['ignore', 'ignore', 'inherit'] });
  } else {
    execFileSync('cargo', ['run', '-q', '-p', 'qemuweb-guests', '--', imageRoot], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'] });
  }
  const web = await serve(webRoot);
  const images = await serve(imageRoot);
  return {
    web,
    images,
    webRoot,
    imageRoot,
    async tearDown() {
      await web.stop();
      await images.stop();
      rmSync(webRoot, { recursive: true, force: true });
      rmSync(imageRoot, { recursive: true, force: true });
    },
  };
}

/** setUp(), with the QEMU build copied into the web root unless `missing` (qemuMissing's reason). */
export async function setUpQemu(missing) {
  const env = await setUp();
  if (!missing) installQemu(env.webRoot);
  return env;
}

/**
 * A path prefix under which the test server answers without COOP/COEP, as a misconfigured
 * host would (its `no-isolation` misbehaviour; relative URLs of the page stay under it).
 */
export const NO_ISOLATION = '/__mis/e2e/no-isolation';

/** Opens the test page in `context`. */
export async function openPage(context, web, tag) {
  const page = await context.newPage();
  logPage(page, tag);
  await page.goto(`${web.url}/page.html`);
  await page.waitForFunction(() => document.title === 'ready');
  return page;
}

/** Launches Chromium on `profile` and opens the test page. */
export async function browserWithPage(profile, web, tag) {
  const context = await launch(profile);
  return { context, page: await openPage(context, web, tag) };
}

/** Removes a profile once no Chromium uses it (a failure to do so fails the test). */
export function dropProfile(dir) {
  removeProfile(dir);
}

/** CRC-32 (zlib's), as the x86 guest's `read` prints it. */
export function crc32(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return ((crc ^ 0xffffffff) >>> 0).toString(16).toUpperCase().padStart(8, '0');
}

/** `SECTOR N CRC32 X`: the guest's reply to `read N` when the sector holds `bytes`. */
export const readReply = (lba, bytes) => `SECTOR ${lba} CRC32 ${crc32(bytes)}`;

/** The initial content of data sector `lba` of the x86 test guest (see qemuweb-guests). */
export function initialSector(lba) {
  const s = Buffer.alloc(512);
  s.writeBigUInt64LE(BigInt(lba), 0);
  for (let i = 8; i < 512; i++) s[i] = (i + 31 * lba) & 0xff;
  return s;
}

/** Sends `line` to `vm` and waits for `expect` in its serial output after that point. */
export async function converse(page, vm, line, expect, ms = 20000) {
  return page.evaluate(async ([vm, line, expect, ms]) => {
    const from = (window.serial[vm] ?? '').length;
    window.client.sendSerialIn(vm, line + '\r');
    await window.waitSerial(vm, expect, from, ms);
    return window.serial[vm].slice(from);
  }, [vm, line, expect, ms]);
}

/** The x86 test guest's banner. */
export const BANNER = 'QEMUWEB-GUEST x86 v1';

/** Waits for the banner and prompt in `vm`'s serial output (after `from` characters). */
export function waitBanner(page, vm, from = 0) {
  return page.evaluate(([vm, banner, from]) => waitSerial(vm, `${banner}\r\n> `, from, 30000), [vm, BANNER, from]);
}

/** Starts `vm` on `disk` (an URL) in the page's `window.client`. */
export async function startVm(page, vm, disk, { profile = 'linux-i386-pc-nographic', memoryMiB = 64 } = {}) {
  return page.evaluate(async ([vm, disk, profile, memoryMiB]) => {
    window.client ??= makeClient();
    await window.client.init();
    return attempt(() => window.client.startVm(vm, profiles[profile], { disk: { source: { kind: 'url', url: disk } } }, { overrides: { memoryMiB } }));
  }, [vm, disk, profile, memoryMiB]);
}

/**
 * Runs scripts/linux-guest (cached outside the repository) for `arch` (`i386` or `arm64`)
 * and returns its outputs' paths: for i386 [bzImage, initrd, initrd-disk, initrd-net,
 * initrd-input], for arm64 [vmlinuz, initrd-input].
 */
export function linuxGuest(arch = 'i386') {
  const cache = process.env.QEMUWEB_LINUX_CACHE ? [process.env.QEMUWEB_LINUX_CACHE] : [];
  const out = execFileSync(join(REPO, 'scripts', 'linux-guest'), ['--arch', arch, ...cache], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
  });
  return out.trim().split('\n');
}

/** Stops `vm` in the page of `context` (force), closes the browser and drops `profile`. */
export async function closeBrowser(context, profile, vm) {
  await context.pages()[0]?.evaluate((vm) => window.client?.stopVm(vm, true), vm).catch(() => {});
  await context.close();
  dropProfile(profile);
}
