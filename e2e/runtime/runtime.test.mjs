// qemuweb-runtime end to end in headless Chromium: a page boots the x86 test guest through
// QemuClient and a module worker on the v86 engine, from a qcow2 image served over HTTP by
// qemuweb-test-server; serial both ways; guest writes persist across a reload and a browser
// restart on the same profile; stop, reset, two VMs at once; typed errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { browserWithPage, converse, dropProfile, initialSector, openPage, readReply, setUp, startVm, NO_ISOLATION } from './common.mjs';

const BANNER = 'QEMUWEB-GUEST x86 v1';
let env;

before(async () => {
  env = await setUp();
});

after(async () => {
  await env?.tearDown();
});

const imageUrl = () => `${env.images.url}/x86-bios.qcow2`;

async function waitBanner(page, vm, from = 0) {
  return page.evaluate(([vm, banner, from]) => waitSerial(vm, banner + '\r\n> ', from, 30000), [vm, BANNER, from]);
}

test('boots from a qcow2 over HTTP, talks on serial, keeps a written sector across a reload and a restart, fetches only what it needs', async () => {
  const profile = newProfile();
  const vm = 'persist';
  const lba = 100;
  const filled = Buffer.alloc(512, 0xa5);
  try {
    let { context, page } = await browserWithPage(profile, env.web, 'first');
    const caps = await page.evaluate(() => makeClient().init());
    assert.equal(caps.crossOriginIsolated, true);
    assert.equal(caps.webAssembly, true);
    assert.equal(caps.indexedDb, true);
    assert.deepEqual(caps.issues, []);

    await env.images.log(); // (the log is cumulative; only /x86-bios.qcow2 lines count below)
    assert.deepEqual(await startVm(page, vm, imageUrl()), { ok: undefined });
    await waitBanner(page, vm);
    const events = await page.evaluate(() => window.events);
    const types = events.map((e) => e.type);
    assert.ok(types.includes('capabilities'), types.join());
    assert.ok(types.includes('started'), types.join());
    const size = statSync(join(env.imageRoot, 'x86-bios.qcow2')).size;
    const progress = events.filter((e) => e.type === 'progress' && e.args[0].what === 'disk0');
    assert.ok(progress.length > 0, 'download progress was reported');
    assert.equal(progress.at(-1).args[0].total, size);
    assert.equal(await page.evaluate((vm) => client.getVmState(vm), vm), 'running');

    // A line sent in comes back.
    const echoed = await converse(page, vm, 'echo hello from the page', 'hello from the page\r\n> ');
    assert.match(echoed, /hello from the page\r\n> $/);

    // The guest writes a sector; the next read sees it at once (the write-back map).
    assert.match(await converse(page, vm, `read ${lba}`, 'CRC32'), new RegExp(readReply(lba, initialSector(lba))));
    await converse(page, vm, `write ${lba} A5`, `WROTE SECTOR ${lba} FILL A5`);
    const after = await converse(page, vm, `read ${lba}`, `${readReply(lba, filled)}\r\n> `);
    assert.match(after, new RegExp(readReply(lba, filled)));
    // No explicit sync: the worker makes writes durable every second by itself.
    await new Promise((resolve) => setTimeout(resolve, 2500));

    // Only the ranges the guest needed (plus read-ahead) were fetched, never the whole image.
    const gets = (await env.images.log())
      .map((l) => l.split('\t'))
      .filter(([method, path]) => method === 'GET' && path === '/x86-bios.qcow2');
    assert.ok(gets.length > 0);
    for (const [, , range, status] of gets) {
      assert.notEqual(range, '-', 'every image GET is a Range request');
      assert.equal(status, '206');
    }
    const fetched = gets.reduce((n, g) => n + Number(g[4]), 0);
    console.log(`image: ${size} bytes, fetched ${fetched} bytes in ${gets.length} requests`);
    assert.ok(fetched < size / 2, `fetched ${fetched} of ${size} bytes`);

    // Reload the page: the worker dies with it; the new one reads the guest's write back.
    await page.reload();
    await page.waitForFunction(() => document.title === 'ready');
    assert.deepEqual(await startVm(page, vm, imageUrl()), { ok: undefined });
    await waitBanner(page, vm);
    await converse(page, vm, `read ${lba}`, `${readReply(lba, filled)}\r\n> `);

    // Close the browser and start it again on the same profile: still there.
    await context.close();
    ({ context, page } = await browserWithPage(profile, env.web, 'restart'));
    assert.deepEqual(await startVm(page, vm, imageUrl()), { ok: undefined });
    await waitBanner(page, vm);
    await converse(page, vm, `read ${lba}`, `${readReply(lba, filled)}\r\n> `);
    // A sector the guest never wrote still reads from the image.
    await converse(page, vm, `read ${lba + 1}`, readReply(lba + 1, initialSector(lba + 1)));
    await page.evaluate((vm) => client.stopVm(vm), vm);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('stop, reset and two VMs at once, each in its own worker', async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'two');
    assert.deepEqual(await startVm(page, 'vm-a', imageUrl()), { ok: undefined });
    assert.deepEqual(await startVm(page, 'vm-b', imageUrl()), { ok: undefined });
    await waitBanner(page, 'vm-a');
    await waitBanner(page, 'vm-b');
    assert.deepEqual(await page.evaluate(() => client.vmIds()), ['vm-a', 'vm-b']);
    const workers = page.workers().filter((w) => w.url().endsWith('/pkg/worker.js'));
    assert.equal(workers.length, 2, 'one worker per VM');

    // Each VM answers on its own serial line.
    await converse(page, 'vm-a', 'echo only-a', 'only-a\r\n');
    await converse(page, 'vm-b', 'echo only-b', 'only-b\r\n');
    const serial = await page.evaluate(() => window.serial);
    assert.ok(!serial['vm-a'].includes('only-b') && !serial['vm-b'].includes('only-a'));

    // Their disks are separate: a write in one is not seen by the other.
    const lba = 300;
    await converse(page, 'vm-a', `write ${lba} 3C`, `WROTE SECTOR ${lba} FILL 3C`);
    await converse(page, 'vm-a', `read ${lba}`, readReply(lba, Buffer.alloc(512, 0x3c)));
    await converse(page, 'vm-b', `read ${lba}`, readReply(lba, initialSector(lba)));

    // Sync, and export the overlay: compact, and qcow2 that qemu-img reads over the image.
    const exported = await page.evaluate(async () => {
      const synced = await attempt(() => client.syncOverlay('vm-a'));
      const compact = await client.exportOverlay('vm-a', 'disk0');
      const qcow2 = await client.exportOverlay('vm-a', 'disk0', 'qcow2');
      const missing = await attempt(() => client.exportOverlay('vm-a', 'disk9'));
      return { synced, compact: Array.from(compact.slice(0, 8)), qcow2: Array.from(qcow2), missing };
    });
    assert.deepEqual(exported.synced, { ok: undefined });
    assert.equal(Buffer.from(exported.compact).toString('latin1'), 'QWOVERLY');
    assert.equal(exported.missing.error, 'invalid-inputs');
    const overlay = join(env.imageRoot, 'vm-a-overlay.qcow2');
    writeFileSync(overlay, Buffer.from(exported.qcow2));
    const raw = join(env.imageRoot, 'vm-a-merged.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', overlay, raw]);
    const merged = readFileSync(raw);
    assert.deepEqual(merged.subarray(lba * 512, lba * 512 + 512), Buffer.alloc(512, 0x3c));
    assert.deepEqual(merged.subarray(64 * 512, 65 * 512), initialSector(64));

    // Reset reboots the guest: the banner comes again, and the write is still there.
    const from = await page.evaluate(() => window.serial['vm-a'].length);
    assert.deepEqual(await page.evaluate(() => attempt(() => client.resetVm('vm-a'))), { ok: undefined });
    await waitBanner(page, 'vm-a', from);
    await converse(page, 'vm-a', `read ${lba}`, readReply(lba, Buffer.alloc(512, 0x3c)));

    // The state the worker reports.
    assert.deepEqual(await page.evaluate(() => attempt(() => client.queryVmState('vm-b'))), { ok: 'running' });

    // Stop (synced) and stop with force.
    assert.deepEqual(await page.evaluate(() => attempt(() => client.stopVm('vm-a'))), { ok: undefined });
    assert.deepEqual(await page.evaluate(() => attempt(() => client.stopVm('vm-b', true))), { ok: undefined });
    const stops = await page.evaluate(() => events.filter((e) => e.type === 'stopped').map((e) => [e.vmId, e.args[0]]));
    assert.deepEqual(stops, [['vm-a', 'requested'], ['vm-b', 'forced']]);
    assert.equal(await page.evaluate(() => client.getVmState('vm-a')), 'stopped');
    assert.deepEqual(await page.evaluate(() => client.vmIds()), []);
    await page.waitForFunction(() => true);
    const err = await page.evaluate(() => {
      try { client.sendSerialIn('vm-a', 'echo x\r'); return null; } catch (e) { return e.code; }
    });
    assert.equal(err, 'out-of-order');
    // A stopped VM starts again, with its disk as it was.
    assert.deepEqual(await startVm(page, 'vm-a', imageUrl()), { ok: undefined });
    await converse(page, 'vm-a', `read ${lba}`, readReply(lba, Buffer.alloc(512, 0x3c)));
    await page.evaluate(() => client.terminate());
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('a bad profile, a missing BIOS, an unreachable URL: each a typed error event', async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'errors');
    const disk = { disk: { source: { kind: 'url', url: imageUrl() } } };
    const results = await page.evaluate(async ([disk]) => {
      const c = (window.client = makeClient());
      const i386 = profiles['linux-i386-pc-nographic'];
      const out = {};
      out.x86_64 = await attempt(() => c.startVm('e-x64', profiles['linux-x86_64-pc-nographic'], disk));
      out.badProfile = await attempt(() => c.startVm('e-bad', { ...i386, memoryMiB: 0 }, disk));
      out.shapeless = await attempt(() => c.startVm('e-shape', { ...i386, arch: 'sparc' }, disk));
      out.nothing = await attempt(() => c.startVm('e-none', i386, {}));
      const noBios = makeClient({ workerUrl: './pkg/worker.js', assets: { ...ASSETS, bios: undefined } });
      out.missingBios = await attempt(() => noBios.startVm('e-bios', i386, disk));
      const badBios = makeClient({ workerUrl: './pkg/worker.js', assets: { ...ASSETS, bios: { kind: 'url', url: './bios/nope.bin' } } });
      out.biosUrl = await attempt(() => badBios.startVm('e-bios-url', i386, disk));
      out.unreachable = await attempt(() => c.startVm('e-url', i386, { disk: { source: { kind: 'url', url: 'http://127.0.0.1:9/x.qcow2' } } }));
      out.notFound = await attempt(() => c.startVm('e-404', i386, { disk: { source: { kind: 'url', url: disk.disk.source.url + '.missing' } } }));
      out.states = ['e-x64', 'e-url'].map((v) => c.getVmState(v));
      out.errors = events.filter((e) => e.type === 'error').map((e) => [e.vmId, e.args[0].code]);
      return out;
    }, [disk]);
    // x86_64 runs on the QEMU engine, and this client names no QEMU build (assets.qemuDir).
    assert.equal(results.x86_64.error, 'invalid-inputs', results.x86_64.message);
    assert.match(results.x86_64.message, /qemuDir/);
    assert.equal(results.badProfile.error, 'invalid-profile');
    assert.equal(results.shapeless.error, 'malformed');
    assert.equal(results.nothing.error, 'invalid-inputs');
    assert.equal(results.missingBios.error, 'missing-bios');
    assert.match(results.missingBios.message, /BIOS/);
    assert.equal(results.biosUrl.error, 'fetch');
    assert.match(results.biosUrl.message, /404/);
    assert.equal(results.unreachable.error, 'storage');
    assert.match(results.unreachable.message, /127\.0\.0\.1:9/);
    assert.equal(results.notFound.error, 'storage');
    assert.deepEqual(results.states, ['failed', 'failed']);
    // Every failure that reached a worker came as an error event for its VM.
    for (const [vm, code] of [['e-x64', 'invalid-inputs'], ['e-bad', 'invalid-profile'], ['e-none', 'invalid-inputs'],
                              ['e-bios', 'missing-bios'], ['e-bios-url', 'fetch'], ['e-url', 'storage'], ['e-404', 'storage']]) {
      assert.ok(results.errors.some(([v, c]) => v === vm && c === code), `${vm}: ${code} in ${JSON.stringify(results.errors)}`);
    }
    // After all that, a good start works in the same client.
    assert.deepEqual(await startVm(page, 'e-good', imageUrl()), { ok: undefined });
    await waitBanner(page, 'e-good');
    await page.evaluate(() => client.stopVm('e-good', true));
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('the worker answers malformed, unknown and out-of-order messages with error events and keeps running; versions must match', async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'protocol');
    const replies = await page.evaluate(async () => {
      const w = new Worker('./pkg/worker.js', { type: 'module' });
      const got = [];
      const next = () => new Promise((resolve) => { w.onmessage = (e) => { got.push(e.data); resolve(e.data); }; });
      const ask = async (msg, n = 1) => {
        const out = [];
        for (let i = 0; i < n; i++) { const p = next(); if (i === 0) w.postMessage(msg); out.push(await p); }
        return out;
      };
      const ready = await next();
      const r = { ready };
      r.number = await ask(42);
      r.noCommand = await ask({ id: 1 });
      r.unknown = await ask({ id: 2, command: { type: 'launchMissiles' } });
      r.beforeHello = await ask({ id: 3, command: { type: 'reset', vmId: 'a' } });
      r.badVersion = await ask({ id: 4, command: { type: 'hello', version: 99 } });
      r.hello = await ask({ id: 5, command: { type: 'hello', version: ready.version } }, 2);
      r.again = await ask({ id: 6, command: { type: 'hello', version: ready.version } });
      r.noVm = await ask({ id: 7, command: { type: 'queryState', vmId: 'a' } });
      r.badBytes = await ask({ id: 8, command: { type: 'serialIn', vmId: 'a', data: 'text' } });
      r.badId = await ask({ id: 9, command: { type: 'stop', vmId: '../../x' } });
      r.badStart = await ask({ id: 10, command: { type: 'start', vmId: 'a', profile: { id: 1 } } });
      w.terminate();
      return r;
    });
    assert.equal(replies.ready.type, 'ready');
    assert.equal(replies.ready.version, 1);
    assert.deepEqual(replies.ready.engines, ['v86', 'qemu']);
    const code = (m) => [m[0].type, m[0].code, m[0].requestId];
    assert.deepEqual(code(replies.number), ['error', 'malformed', undefined]);
    assert.deepEqual(code(replies.noCommand), ['error', 'malformed', 1]);
    assert.deepEqual(code(replies.unknown), ['error', 'unknown-command', 2]);
    assert.deepEqual(code(replies.beforeHello), ['error', 'out-of-order', 3]);
    assert.deepEqual(code(replies.badVersion), ['error', 'version-mismatch', 4]);
    assert.match(replies.badVersion[0].message, /version 99/);
    assert.deepEqual(replies.hello.map((m) => m.type), ['capabilities', 'done']);
    assert.equal(replies.hello[1].requestId, 5);
    assert.equal(replies.hello[0].capabilities.context, 'worker');
    assert.deepEqual(code(replies.again), ['error', 'out-of-order', 6]);
    assert.deepEqual(code(replies.noVm), ['error', 'out-of-order', 7]);
    assert.deepEqual(code(replies.badBytes), ['error', 'malformed', 8]);
    assert.deepEqual(code(replies.badId), ['error', 'malformed', 9]);
    assert.deepEqual(code(replies.badStart), ['error', 'malformed', 10]);

    // The client refuses a worker of another protocol version with a clear error.
    const mismatch = await page.evaluate(async () => {
      const blob = new Blob(["postMessage({type: 'ready', version: 2, engines: ['v86']});"], { type: 'text/javascript' });
      const c = makeClient({ workerUrl: URL.createObjectURL(blob), assets: ASSETS });
      const r = await attempt(() => c.startVm('v-old', profiles['linux-i386-pc-nographic'], { disk: { source: { kind: 'url', url: 'x.qcow2' } } }));
      const gone = makeClient({ workerUrl: './pkg/no-such-worker.js', assets: ASSETS });
      const noWorker = await attempt(() => gone.startVm('v-gone', profiles['linux-i386-pc-nographic'], { disk: { source: { kind: 'url', url: 'x.qcow2' } } }));
      return { r, state: c.getVmState('v-old'), noWorker, goneState: gone.getVmState('v-gone') };
    });
    assert.equal(mismatch.noWorker.error, 'worker');
    assert.equal(mismatch.goneState, 'failed');
    assert.equal(mismatch.r.error, 'version-mismatch');
    assert.match(mismatch.r.message, /version 1.*version 2/);
    assert.equal(mismatch.state, 'failed');
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('a kernel or initrd larger than its limit is refused before it is read: a typed error at once', async () => {
  // A sparse 5 GiB file (more than wasm32 can address: once read into 1 GiB, silently) and
  // a server claiming 1 TiB (read into one allocation).
  const sparse = join(env.imageRoot, 'huge-kernel.bin');
  execFileSync('truncate', ['-s', '5G', sparse]);
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'limits');
    const small = `${env.images.url}/x86-bios.raw`;
    const sparseUrl = `${env.images.url}/huge-kernel.bin`;
    const claimed = `${env.images.url}/__mis/limits/claim-size-1099511627776/x86-bios.raw`;
    const r = await page.evaluate(async ([small, sparseUrl, claimed]) => {
      window.client = makeClient();
      await client.init();
      const i386 = profiles['linux-i386-pc-nographic'];
      const url = (u) => ({ kind: 'url', url: u });
      const out = {};
      const time = async (name, f) => {
        const t0 = performance.now();
        out[name] = await attempt(f);
        out[name].ms = performance.now() - t0;
      };
      const options = { overrides: { memoryMiB: 64 } };
      await time('sparse', () => client.startVm('k1', i386, { kernel: url(sparseUrl) }, options));
      await time('claimed', () => client.startVm('k2', i386, { kernel: url(claimed) }, options));
      await time('initrd', () => client.startVm('k3', i386, { kernel: url(small), initrd: url(claimed) }, options));
      // The page's own, lower limit.
      await time('low', () => client.startVm('k4', i386, { kernel: url(small) }, { ...options, limits: { maxKernelBytes: 1000 } }));
      return out;
    }, [small, sparseUrl, claimed]);
    for (const [name, what, size] of [['sparse', 'kernel', 5 * 2 ** 30], ['claimed', 'kernel', 2 ** 40], ['initrd', 'initrd', 2 ** 40], ['low', 'kernel', 4 * 2 ** 20]]) {
      assert.equal(r[name].error, 'too-large', `${name}: ${JSON.stringify(r[name])}`);
      assert.match(r[name].message, new RegExp(`${what} is ${size} bytes, more than the limit`), name);
      assert.ok(r[name].ms < 5000, `${name}: ${r[name].ms} ms`);
    }
    // Nothing but the first request (one 1 MiB chunk) of each was fetched.
    const big = (await env.images.log()).map((l) => l.split('\t'))
      .filter(([m, path]) => m === 'GET' && (path === '/huge-kernel.bin' || path.includes('claim-size')));
    const fetched = big.reduce((n, g) => n + Number(g[4]), 0);
    assert.ok(big.length === 3 && fetched <= 3 * 2 ** 20, `${fetched} bytes in ${big.length} requests`);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('a disk from a File/Blob the page holds; a BIOS given as bytes; capabilities report missing cross-origin isolation with the fix', async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'blob');
    const r = await page.evaluate(async (url) => {
      const blob = await (await fetch(url)).blob();
      const c = (window.client = makeClient());
      const i386 = profiles['linux-i386-pc-nographic'];
      const file = { disk: { source: { kind: 'file', path: 'local.qcow2' } } };
      const missing = await attempt(() => c.startVm('blob-missing', i386, file, { files: {} }));
      const started = await attempt(() => c.startVm('blob', i386, file, { overrides: { memoryMiB: 64 }, files: { 'local.qcow2': blob } }));
      return { missing, started };
    }, imageUrl());
    assert.equal(r.missing.error, 'invalid-inputs');
    assert.match(r.missing.message, /local\.qcow2/);
    assert.deepEqual(r.started, { ok: undefined });
    await waitBanner(page, 'blob');
    await converse(page, 'blob', 'write 500 77', 'WROTE SECTOR 500 FILL 77');
    await converse(page, 'blob', 'read 500', readReply(500, Buffer.alloc(512, 0x77)));
    await page.evaluate(() => client.stopVm('blob'));

    // The BIOS as bytes instead of a URL, and no VGA BIOS.
    const bytes = await page.evaluate(async (url) => {
      const bios = new Uint8Array(await (await fetch('./bios/bios-256k.bin')).arrayBuffer());
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: { ...ASSETS, bios: { kind: 'bytes', data: bios }, vgaBios: undefined } });
      return attempt(() => client.startVm('bios-bytes', profiles['linux-i386-pc-nographic'], { disk: { source: { kind: 'url', url } } }, { overrides: { memoryMiB: 64 } }));
    }, imageUrl());
    assert.deepEqual(bytes, { ok: undefined });
    await waitBanner(page, 'bios-bytes');
    await page.evaluate(() => client.stopVm('bios-bytes', true));

    // The same page without COOP/COEP: not isolated, and told how to fix it.
    await page.goto(`${env.web.url}${NO_ISOLATION}/page.html`);
    await page.waitForFunction(() => document.title === 'ready');
    const caps = await page.evaluate(() => makeClient().init());
    assert.equal(caps.crossOriginIsolated, false);
    assert.equal(caps.sharedArrayBuffer, false);
    const issue = caps.issues.find((i) => i.code === 'cross-origin-isolation');
    assert.ok(issue, JSON.stringify(caps.issues));
    assert.match(issue.message, /Cross-Origin-Opener-Policy: same-origin/);
    assert.match(issue.message, /Cross-Origin-Embedder-Policy: require-corp/);
    // v86 needs no shared memory: the guest still boots.
    assert.deepEqual(await startVm(page, 'plain', imageUrl()), { ok: undefined });
    await waitBanner(page, 'plain');
    await context.close();
  } finally {
    dropProfile(profile);
  }
});
