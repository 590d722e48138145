// The persistent read cache of base images through QemuClient (v86, the x86 test guest
// over HTTP): a second cold boot of the same image in the same browser profile fetches
// only a two-byte probe of it, a page with the image host gone boots offline from what it
// has seen, and with `readCache: {enabled: false}` every boot fetches again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { serve, writeGuests } from '../lib/server.mjs';
import { browserWithPage, converse, dropProfile, initialSector, readReply, setUp } from './common.mjs';

const BANNER = 'QEMUWEB-GUEST x86 v1';
let env;

before(async () => {
  env = await setUp();
});

after(async () => {
  await env?.tearDown();
});

/** Bytes of `path` the image server sent (206 bodies), and the ranges asked. */
async function fetched(images, path) {
  const gets = (await images.log())
    .map((l) => l.split('\t'))
    .filter(([method, p]) => method === 'GET' && p === path);
  return { bytes: gets.reduce((n, g) => n + Number(g[4]), 0), ranges: gets.map((g) => g[2]) };
}

async function boot(page, vm, url, options = {}) {
  const started = await page.evaluate(async ([vm, url, options]) => {
    window.client ??= makeClient();
    await window.client.init();
    return attempt(() => window.client.startVm(vm, profiles['linux-i386-pc-nographic'],
      { disk: { source: { kind: 'url', url } } }, { overrides: { memoryMiB: 64 }, ...options }));
  }, [vm, url, options]);
  assert.deepEqual(started, { ok: undefined });
  await page.evaluate(([vm, banner]) => waitSerial(vm, `${banner}\r\n> `, 0, 30000), [vm, BANNER]);
  await converse(page, vm, 'read 8000', readReply(8000, initialSector(8000)));
  await page.evaluate((vm) => client.stopVm(vm), vm);
}

test('a second cold boot fetches only a probe of the image; the image host gone, the page boots offline', async () => {
  const profile = newProfile();
  // An image host of its own, to stop.
  const root = mkdtempSync(join(tmpdir(), 'qemuweb-read-cache-'));
  await writeGuests(root);
  const images = await serve(root);
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'read-cache');
    const url = `${images.url}/x86-bios.qcow2`;
    await images.log();
    await boot(page, 'rc-1', url);
    const first = await fetched(images, '/x86-bios.qcow2');
    assert.ok(first.bytes > 65536, JSON.stringify(first));

    // Another VM on the same image (its own overlay): only the probe.
    await images.log();
    const before = (await fetched(images, '/x86-bios.qcow2')).ranges.length;
    await boot(page, 'rc-2', url);
    const second = await fetched(images, '/x86-bios.qcow2');
    const ranges = second.ranges.slice(before);
    console.log(`first boot fetched ${first.bytes} bytes; the second ${ranges.length} requests: ${ranges.join(' ')}`);
    assert.deepEqual(ranges, ['bytes=0-1']);

    // Without the cache, the image is fetched again.
    await boot(page, 'rc-3', url, { readCache: { enabled: false } });
    const third = await fetched(images, '/x86-bios.qcow2');
    assert.ok(third.ranges.length - before > 1, JSON.stringify(third.ranges.slice(before)));

    // The host goes away: a reloaded page boots from the cache alone.
    await images.stop();
    await page.reload();
    await page.waitForFunction(() => document.title === 'ready');
    await boot(page, 'rc-4', url);
    await context.close();
  } finally {
    dropProfile(profile);
    rmSync(root, { recursive: true, force: true });
  }
});
