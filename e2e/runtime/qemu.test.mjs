// The QEMU engine end to end in headless Chromium: the x86 test guest boots on
// qemu-system-i386 (wasm32, built by qemuweb-wasm-build; found through QEMUWEB_QEMU_DIR)
// through QemuClient, from a qcow2 image served over HTTP by qemuweb-test-server; serial
// both ways; a sector written, the page reloaded, the sector read back (our IndexedDB
// overlay under QEMU's raw disk); the server's log shows Range requests for a fraction of
// the image. Also: the refusal without cross-origin isolation (needs no module) and the
// headless runner with --engine qemu.
//
// Without a module (QEMUWEB_QEMU_DIR unset or incomplete) the QEMU tests are SKIPPED, loudly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { serve, TARGET } from '../lib/server.mjs';
import { browserWithPage, converse, dropProfile, initialSector, readReply, setUp, NO_ISOLATION } from './common.mjs';
import { QEMU_ASSETS, QEMU_FILES, qemuMissing } from './qemu-assets.mjs';

const BANNER = 'QEMUWEB-GUEST x86 v1';
const missing = qemuMissing();
if (missing) {
  console.error(`\n${'!'.repeat(78)}\n!! QEMU module not built: ${missing}\n!! The QEMU engine tests are SKIPPED (not passed).\n${'!'.repeat(78)}\n`);
}

let env;

before(async () => {
  env = await setUp();
  if (!missing) {
    mkdirSync(join(env.webRoot, 'qemu'));
    for (const f of QEMU_FILES) cpSync(join(process.env.QEMUWEB_QEMU_DIR, f), join(env.webRoot, 'qemu', f));
  }
});

after(async () => {
  await env?.tearDown();
});

const imageUrl = () => `${env.images.url}/x86-bios.qcow2`;

/** Starts `vm` on the QEMU engine in the page's client. */
function startQemu(page, vm, url, memoryMiB = 32) {
  return page.evaluate(async ([vm, url, assets, memoryMiB]) => {
    window.client ??= makeClient({ workerUrl: './pkg/worker.js', assets });
    await window.client.init();
    return attempt(() => window.client.startVm(vm, profiles['linux-i386-pc-nographic'],
      { disk: { source: { kind: 'url', url } } }, { overrides: { memoryMiB }, engine: 'qemu' }));
  }, [vm, url, QEMU_ASSETS, memoryMiB]);
}

const waitBanner = (page, vm, from = 0) =>
  page.evaluate(([vm, banner, from]) => waitSerial(vm, banner + '\r\n> ', from, 90000), [vm, BANNER, from]);

test('QEMU engine: boots the qcow2 guest over HTTP lazily, serial both ways, a written sector survives a reload', async (t) => {
  if (missing) return t.skip(`QEMU module not built: ${missing}`);
  const profile = newProfile();
  const vm = 'qemu-persist';
  const lba = 120;
  const filled = Buffer.alloc(512, 0x5a);
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'qemu');
    await env.images.log();
    assert.deepEqual(await startQemu(page, vm, imageUrl()), { ok: undefined });
    await waitBanner(page, vm);
    const started = await page.evaluate(() => events.filter((e) => e.type === 'started').map((e) => e.args[0]));
    assert.deepEqual(started, ['qemu']);

    assert.match(await converse(page, vm, 'echo hello qemu', 'hello qemu\r\n> ', 60000), /hello qemu\r\n> $/);
    await converse(page, vm, `read ${lba}`, `${readReply(lba, initialSector(lba))}\r\n> `, 60000);
    await converse(page, vm, `write ${lba} 5A`, `WROTE SECTOR ${lba} FILL 5A`, 60000);
    await converse(page, vm, `read ${lba}`, `${readReply(lba, filled)}\r\n> `, 60000);
    // The worker syncs the overlay every second by itself.
    await new Promise((resolve) => setTimeout(resolve, 2500));

    // Lazy: Range requests only, for a fraction of the image.
    const size = statSync(join(env.imageRoot, 'x86-bios.qcow2')).size;
    const gets = (await env.images.log()).map((l) => l.split('\t'))
      .filter(([method, path]) => method === 'GET' && path === '/x86-bios.qcow2');
    assert.ok(gets.length > 0);
    for (const [, , range, status] of gets) {
      assert.notEqual(range, '-', 'every image GET is a Range request');
      assert.equal(status, '206');
    }
    const fetched = gets.reduce((n, g) => n + Number(g[4]), 0);
    console.log(`QEMU engine: image ${size} bytes, fetched ${fetched} bytes in ${gets.length} Range requests`);
    assert.ok(fetched < size / 2, `fetched ${fetched} of ${size} bytes`);

    // Reload: the workers die with the page; a new QEMU reads the write back from IndexedDB.
    await page.reload();
    await page.waitForFunction(() => document.title === 'ready');
    assert.deepEqual(await startQemu(page, vm, imageUrl()), { ok: undefined });
    await waitBanner(page, vm);
    await converse(page, vm, `read ${lba}`, `${readReply(lba, filled)}\r\n> `, 60000);
    await converse(page, vm, `read ${lba + 1}`, readReply(lba + 1, initialSector(lba + 1)), 60000);

    // Reset starts QEMU again on the same disks; stop ends it.
    const from = await page.evaluate((vm) => window.serial[vm].length, vm);
    assert.deepEqual(await page.evaluate((vm) => attempt(() => client.resetVm(vm)), vm), { ok: undefined });
    await waitBanner(page, vm, from);
    await converse(page, vm, `read ${lba}`, `${readReply(lba, filled)}\r\n> `, 60000);
    assert.deepEqual(await page.evaluate((vm) => attempt(() => client.stopVm(vm)), vm), { ok: undefined });
    const errors = await page.evaluate(() => events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('QEMU engine: missing module and 64-bit profiles are typed errors', async (t) => {
  if (missing) return t.skip(`QEMU module not built: ${missing}`);
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'qemu-errors');
    const out = await page.evaluate(async ([url, assets]) => {
      const disk = { disk: { source: { kind: 'url', url } } };
      const c = makeClient({ workerUrl: './pkg/worker.js', assets });
      const r = {};
      r.x64 = await attempt(() => c.startVm('q-x64', profiles['linux-x86_64-pc-nographic'], disk, { engine: 'qemu' }));
      r.noModule = await attempt(() => c.startVm('q-nomod', profiles['linux-i386-pc-nographic'], disk,
        { overrides: { memoryMiB: 32 }, engine: 'qemu', assets: { ...assets, qemuModule: undefined } }));
      r.badModule = await attempt(() => c.startVm('q-badmod', profiles['linux-i386-pc-nographic'], disk,
        { overrides: { memoryMiB: 32 }, engine: 'qemu', assets: { ...assets, qemuModule: './qemu/nope.js' } }));
      r.tooBig = await attempt(() => c.startVm('q-big', { ...profiles['linux-i386-pc-nographic'], maxMemoryMiB: undefined }, disk,
        { overrides: { memoryMiB: 1536 }, engine: 'qemu' }));
      return r;
    }, [imageUrl(), QEMU_ASSETS]);
    assert.equal(out.x64.error, 'unsupported');
    assert.match(out.x64.message, /wasm64/);
    assert.equal(out.noModule.error, 'invalid-inputs');
    assert.match(out.noModule.message, /qemuModule/);
    assert.equal(out.badModule.error, 'fetch', out.badModule.message);
    assert.equal(out.tooBig.error, 'invalid-inputs');

    // The image host goes away under a running guest: a read it has not fetched yet is an
    // I/O error in the guest (the BIOS reports a disk status) and an error event, not a hang.
    const root = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-qemu-gone-'));
    cpSync(join(env.imageRoot, 'x86-bios.qcow2'), join(root, 'x86-bios.qcow2'));
    const host = await serve(root);
    try {
      assert.deepEqual(await startQemu(page, 'q-gone', `${host.url}/x86-bios.qcow2`), { ok: undefined });
      await waitBanner(page, 'q-gone');
      await host.stop();
      // Wait for the whole reply line and the next prompt: serial arrives in batches.
      const reply = await converse(page, 'q-gone', 'read 8000', '\r\n> ', 90000);
      assert.match(reply, /ERR disk status [0-9A-F]{2}/);
      const errors = await page.evaluate(() => events.filter((e) => e.type === 'error' && e.vmId === 'q-gone').map((e) => e.args[0]));
      assert.ok(errors.some((e) => e.code === 'storage'), JSON.stringify(errors));
      // The guest still answers.
      await converse(page, 'q-gone', 'echo still here', 'still here\r\n> ', 60000);
      await page.evaluate(() => client.stopVm('q-gone', true));
    } finally {
      await host.stop();
      rmSync(root, { recursive: true, force: true });
    }
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('QEMU engine: refused with the COOP/COEP fix when the page is not cross-origin isolated', async () => {
  // Needs no QEMU module: the check comes before anything is loaded.
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'qemu-noiso');
    await page.goto(`${env.web.url}${NO_ISOLATION}/page.html`);
    await page.waitForFunction(() => document.title === 'ready');
    const got = await startQemu(page, 'q-noiso', imageUrl());
    assert.equal(got.error, 'unsupported', JSON.stringify(got));
    assert.match(got.message, /Cross-Origin-Opener-Policy: same-origin/);
    assert.match(got.message, /Cross-Origin-Embedder-Policy: require-corp/);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('headless runner: --engine qemu boots the guest and bridges serial', async (t) => {
  if (missing) return t.skip(`QEMU module not built: ${missing}`);
  const bin = join(TARGET, 'debug', 'examples', 'headless');
  assert.ok(existsSync(bin), `${bin} is missing: cargo build -p qemuweb-runtime --example headless`);
  const disk = join(env.imageRoot, 'x86-bios.qcow2');
  const child = spawn(bin, ['--profile', 'linux-i386-pc-nographic', '--disk', disk, '--engine', 'qemu',
    '--qemu-dir', process.env.QEMUWEB_QEMU_DIR, '--memory', '32'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const exit = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const waitFor = async (text, ms = 90000) => {
    const t0 = Date.now();
    while (!out.includes(text)) {
      if (Date.now() - t0 > ms) throw new Error(`no ${JSON.stringify(text)} in ${ms} ms; stdout ${JSON.stringify(out)} stderr ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  try {
    await waitFor(`${BANNER}\r\n> `);
    child.stdin.write('echo via qemu runner\n');
    await waitFor('via qemu runner\r\n> ');
    child.stdin.end();
    assert.equal(await exit, 0, err);
  } finally {
    child.kill();
  }
});
