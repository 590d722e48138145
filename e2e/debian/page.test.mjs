// Real Debian disks (scripts/debian-disk) in the page: headless Chromium, QemuClient, the QEMU
// engine (the wasm64 module of qemuweb-wasm-build for x86_64 and aarch64 guests), the disk as
// qcow2 over HTTP from qemuweb-test-server on 127.0.0.1 (arm64: its kernel and initramfs too).
// Each disk's full boot (sysvinit to the autologin root shell; QEMUWEB_DEBIAN_PAGE_BOOT=check
// takes QemuWeb's short init instead): a command answered, a file written and synced; the page
// reloaded, the short init of the same disk, the file read back (from the IndexedDB overlay
// under the unchanged image). QEMUWEB_DEBIAN_PAGE_RELOAD (comma-separated arches, default all)
// names the disks that do the reload. Prints the seconds from page start to each prompt.
//
// Runs in scripts/e2e-debian.sh (QEMUWEB_E2E_DEBIAN=1). The module directory is
// QEMUWEB_QEMU64_DIR, else QEMUWEB_QEMU_DIR (point either at another build, e.g. the JIT's, to
// run the same test on it). Without a module for an arch the test is SKIPPED, loudly; with
// CI=true a missing module fails it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { browserWithPage, dropProfile, setUp } from '../runtime/common.mjs';
import { ARCHS, debianDisks, steps } from './common.mjs';
import { pageIo, publish, qemuMissing, startDebian } from './page.mjs';

const enabled = process.env.QEMUWEB_E2E_DEBIAN === '1';
const skip = !enabled && 'set QEMUWEB_E2E_DEBIAN=1 (scripts/e2e-debian.sh)';
// An interpreter boots a distribution kernel slowly: the limits are generous, the watchdog of
// scripts/e2e-debian.sh bounds the whole file.
const BOOT_MS = 30 * 60000;
const STEP_MS = 5 * 60000;
const FULL = (process.env.QEMUWEB_DEBIAN_PAGE_BOOT || 'full') === 'full';
const RELOAD = process.env.QEMUWEB_DEBIAN_PAGE_RELOAD ? process.env.QEMUWEB_DEBIAN_PAGE_RELOAD.split(',') : ARCHS;
let env;
let disks;

before(async () => {
  if (!enabled) return;
  disks = debianDisks(ARCHS);
  env = await setUp();
  for (const arch of ARCHS) publish(env, arch, disks[arch]);
});

after(async () => {
  await env?.tearDown();
});

for (const arch of ARCHS) {
  const reload = RELOAD.includes(arch);
  test(`Debian ${arch} in the page on the QEMU engine: ${FULL ? 'full boot to the root shell' : 'short init'}, a command answered, a file ${reload ? 'kept across a reload' : 'written'}`, { skip }, async (t) => {
    const missing = qemuMissing(arch);
    if (missing) {
      const why = `the wasm64 QEMU module for ${arch} is missing: ${missing}`;
      console.error(`\n${'!'.repeat(78)}\n!! ${why}\n!! This test is SKIPPED (not passed).\n${'!'.repeat(78)}\n`);
      if (process.env.CI === 'true') assert.fail(`${why} (CI=true: required)`);
      return t.skip(why);
    }
    const d = disks[arch];
    const { boot } = d;
    const vm = `debian-${arch}`;
    const token = `page-${arch}-${Date.now()}`;
    const profile = newProfile();
    try {
      const { context, page } = await browserWithPage(profile, env.web, vm);
      await env.images.log();
      assert.deepEqual(await startDebian(page, env, arch, d, vm, { check: !FULL }), { ok: undefined });
      const io = pageIo(page, vm);
      await steps.bootPrompt(io, boot, FULL ? '' : boot.checkLabel, BOOT_MS);
      const prompt = FULL ? boot.shellPrompt : boot.checkPrompt;
      const promptAt = FULL ? await steps.rootShell(io, boot, BOOT_MS) : await steps.checkShell(io, boot, BOOT_MS);
      console.log(`${arch}: ${FULL ? 'full boot root shell' : 'short init'} prompt ${(promptAt / 1000).toFixed(1)} s after page start`);
      await steps.answer(io, boot, prompt, STEP_MS);
      await steps.write(io, prompt, token, STEP_MS);
      // The worker writes the overlay to IndexedDB every second by itself.
      await new Promise((resolve) => setTimeout(resolve, 3000));

      // Lazy: Range requests only, for a part of the image.
      const size = statSync(d.disk).size;
      const gets = (await env.images.log()).map((l) => l.split('\t'))
        .filter(([method, path]) => method === 'GET' && path === `/${arch}/disk.qcow2`);
      assert.ok(gets.length > 0);
      for (const [, , range, status] of gets) {
        assert.notEqual(range, '-', 'every image GET is a Range request');
        assert.equal(status, '206');
      }
      const fetched = gets.reduce((n, g) => n + Number(g[4]), 0);
      console.log(`${arch}: image ${size} bytes, fetched ${fetched} bytes in ${gets.length} Range requests`);
      assert.ok(fetched < size, `fetched ${fetched} of ${size} bytes`);

      // Stops the VM; no error event on the way.
      const stop = async () => {
        await page.evaluate((vm) => client.stopVm(vm, true), vm);
        assert.deepEqual(await page.evaluate(() => events.filter((e) => e.type === 'error')), []);
        await context.close();
      };
      if (!reload) {
        await stop();
        return;
      }
      // Reload: the workers die with the page; a new QEMU finds the file in the overlay.
      await page.reload();
      await page.waitForFunction(() => document.title === 'ready');
      assert.deepEqual(await startDebian(page, env, arch, d, vm, { check: true }), { ok: undefined });
      await steps.bootPrompt(io, boot, boot.checkLabel, BOOT_MS);
      const againAt = await steps.checkShell(io, boot, BOOT_MS);
      console.log(`${arch}: after the reload, short init prompt ${(againAt / 1000).toFixed(1)} s after page start`);
      await steps.read(io, boot.checkPrompt, token, STEP_MS);
      await stop();
    } finally {
      dropProfile(profile);
    }
  });
}
