// QemuClient's JavaScript API in headless Chromium, on the raw wasm-bindgen build (the npm
// package's own checks are in e2e/consumer): typed events to any number of listeners, the
// steps and progress of a start, the options object of startVm (the old positional shape is
// refused), persistence in memory or IndexedDB, and the stored overlays shown and removed
// through the client itself.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { newProfile } from '../lib/browser.mjs';
import { browserWithPage, converse, dropProfile, initialSector, readReply, setUp, waitBanner } from './common.mjs';

let env;

before(async () => {
  env = await setUp();
});

after(async () => {
  await env?.tearDown();
});

const imageUrl = () => `${env.images.url}/x86-bios.qcow2`;

test('listeners: several per event, each removable; events carry their VM; a start reports its steps and what it read', async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'api-events');
    const started = await page.evaluate(async (url) => {
      const c = (window.client = makeClient());
      await c.init();
      const seen = (window.apiSeen = { a: [], b: [], removed: 0, off: 0, once: 0, serial: 0, all: [], fromOption: [], reported: [] });
      window.addEventListener('error', (e) => { seen.reported.push(e.message); e.preventDefault(); });
      c.on('started', (e) => seen.a.push(e));
      c.on('started', () => { throw new Error('a listener that throws'); });
      c.on('started', (e) => seen.b.push(e.engine));
      c.on('started', () => seen.removed++)();
      const counted = () => seen.off++;
      c.on('serialOut', counted);
      c.on('serialOut', counted);
      c.off('serialOut', counted);
      c.once('serialOut', () => seen.once++);
      c.on('serialOut', () => seen.serial++);
      for (const type of ['phase', 'progress', 'log', 'error', 'capabilities', 'stopped']) c.on(type, (e) => seen.all.push(e));
      return attempt(() => c.startVm('api-a', profiles['linux-i386-pc-nographic'], { disk: { source: { kind: 'url', url } } },
        { overrides: { memoryMiB: 64 }, progress: (e) => seen.fromOption.push(e.type) }));
    }, imageUrl());
    assert.deepEqual(started, { ok: undefined });
    await waitBanner(page, 'api-a');
    const heardAtStart = await page.evaluate(() => apiSeen.fromOption.length);
    await converse(page, 'api-a', 'read 8000', readReply(8000, initialSector(8000)));
    await page.evaluate(() => client.stopVm('api-a'));
    const seen = await page.evaluate(() => apiSeen);

    assert.deepEqual(seen.a.map((e) => [e.type, e.vmId, e.engine]), [['started', 'api-a', 'v86']]);
    // A listener that throws does not stop the next one; its exception is reported.
    assert.deepEqual(seen.b, ['v86']);
    assert.ok(seen.reported.some((m) => m.includes('a listener that throws')), JSON.stringify(seen.reported));
    assert.equal(seen.removed, 0);
    assert.equal(seen.off, 0, 'off removed the listener added twice');
    assert.equal(seen.once, 1);
    assert.ok(seen.serial > 1, `${seen.serial} serialOut events`);
    // Every event names its VM, the capabilities event too.
    for (const e of seen.all) assert.equal(e.vmId, 'api-a', JSON.stringify(e));
    assert.ok(seen.all.some((e) => e.type === 'capabilities'));
    assert.deepEqual(seen.all.filter((e) => e.type === 'stopped').map((e) => e.reason), ['requested']);
    const phases = seen.all.filter((e) => e.type === 'phase').map((e) => `${e.step}/${e.steps} ${e.phase}`);
    assert.deepEqual(phases, ['1/3 assets', '2/3 disks', '3/3 engine']);
    const progress = seen.all.filter((e) => e.type === 'progress');
    const whats = new Set(progress.map((e) => e.what));
    for (const what of ['bios', 'vgaBios', 'v86Wasm', 'disk0']) assert.ok(whats.has(what), `${what} in ${[...whats]}`);
    for (const e of progress) {
      assert.equal(e.totalOf, 'file-size');
      assert.ok(e.total === undefined || e.loaded <= e.total, JSON.stringify(e));
    }
    const bios = progress.filter((e) => e.what === 'bios').at(-1);
    assert.ok(bios.total > 0 && bios.loaded === bios.total, JSON.stringify(bios));
    // The recommended profile's network (for native QEMU) is no warning in the browser.
    const warnings = seen.all.filter((e) => e.type === 'log' && e.level === 'warn').map((e) => e.message);
    assert.ok(!warnings.some((m) => /network/.test(m)), warnings.join('\n'));
    // The start's own callback heard phases and progress until the start settled, no more.
    assert.ok(seen.fromOption.includes('phase') && seen.fromOption.includes('progress'), seen.fromOption.join());
    assert.equal(seen.fromOption.length, heardAtStart);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('startVm takes one options object: the old positional shape and bad options are refused as malformed; rejections are QemuErrors', async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'api-options');
    const r = await page.evaluate(async (url) => {
      const c = (window.client = makeClient());
      const i386 = profiles['linux-i386-pc-nographic'];
      const disk = { disk: { source: { kind: 'url', url } } };
      const caught = async (f) => { try { await f(); return null; } catch (e) { return { name: e.name, code: e.code, vmId: e.vmId, message: e.message, isError: e instanceof Error }; } };
      return {
        positional: await caught(() => c.startVm('o-1', i386, disk, { memoryMiB: 64 }, { engine: 'v86' })),
        badEngine: await caught(() => c.startVm('o-2', i386, disk, { engine: 'bochs' })),
        badProgress: await caught(() => c.startVm('o-3', i386, disk, { progress: 5 })),
        badSignal: await caught(() => c.startVm('o-4', i386, disk, { signal: {} })),
        preAborted: await caught(() => c.startVm('o-5', i386, disk, { signal: AbortSignal.abort('no') })),
        badFormat: await caught(() => c.exportOverlay('o-6', 'disk0', 'zip')),
        state: c.getVmState('o-5'),
        vmIds: c.vmIds(),
      };
    }, imageUrl());
    for (const k of ['positional', 'badEngine', 'badProgress', 'badSignal']) {
      assert.ok(r[k], `${k} was accepted: ${JSON.stringify(r)}`);
      assert.equal(r[k].code, 'malformed', `${k}: ${JSON.stringify(r[k])}`);
      assert.equal(r[k].name, 'QemuError');
      assert.equal(r[k].isError, true);
    }
    assert.match(r.positional.message, /memoryMiB/);
    assert.equal(r.preAborted.code, 'aborted');
    assert.equal(r.preAborted.vmId, 'o-5');
    assert.equal(r.badFormat.code, 'malformed');
    assert.equal(r.state, undefined);
    assert.deepEqual(r.vmIds, []);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('writes persist by VM id and disk id unless persistence is memory; the client lists, resets and deletes stored overlays', async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'api-overlays');
    const start = (vm, persistence) => page.evaluate(async ([vm, url, persistence]) => {
      window.client ??= makeClient();
      return attempt(() => client.startVm(vm, profiles['linux-i386-pc-nographic'], { disk: { source: { kind: 'url', url } } },
        { overrides: { memoryMiB: 64 }, persistence }));
    }, [vm, imageUrl(), persistence]);
    const overlays = (vm) => page.evaluate((vm) => client.overlays(vm), vm);
    const filled = Buffer.alloc(512, 0x5a);

    // In memory: nothing is stored, and the next start reads the image as it is.
    assert.deepEqual(await start('o-mem', 'memory'), { ok: undefined });
    await waitBanner(page, 'o-mem');
    await converse(page, 'o-mem', 'write 200 5A', 'WROTE SECTOR 200 FILL 5A');
    await page.evaluate(() => client.stopVm('o-mem'));
    assert.deepEqual(await overlays('o-mem'), []);

    // In IndexedDB (the default): stored by VM id and disk id.
    assert.deepEqual(await start('o-idb'), { ok: undefined });
    await waitBanner(page, 'o-idb');
    await converse(page, 'o-idb', 'write 200 5A', 'WROTE SECTOR 200 FILL 5A');
    const refused = await page.evaluate(() => attempt(() => client.deleteOverlays('o-idb')));
    assert.equal(refused.error, 'out-of-order');
    await page.evaluate(() => client.stopVm('o-idb'));
    const stored = await overlays('o-idb');
    assert.equal(stored.length, 1, JSON.stringify(stored));
    assert.equal(stored[0].diskId, 'disk0');
    assert.equal(stored[0].blockSize, 4096);
    assert.ok(stored[0].blocks >= 1);
    assert.equal(stored[0].bytes, stored[0].blocks * 4096);
    assert.match(stored[0].base, /^qcow2 \d+ bytes, /);
    assert.deepEqual(await start('o-idb'), { ok: undefined });
    const from = await page.evaluate(() => serial['o-idb'].length);
    await waitBanner(page, 'o-idb', from);
    await converse(page, 'o-idb', 'read 200', readReply(200, filled));
    await page.evaluate(() => client.stopVm('o-idb'));

    // resetOverlay forgets one disk; deleteOverlays all of a VM's.
    await page.evaluate(() => client.resetOverlay('o-idb', 'disk0'));
    assert.deepEqual(await overlays('o-idb'), []);
    assert.deepEqual(await start('o-idb'), { ok: undefined });
    const again = await page.evaluate(() => serial['o-idb'].length);
    await waitBanner(page, 'o-idb', again);
    await converse(page, 'o-idb', 'read 200', readReply(200, initialSector(200)));
    await converse(page, 'o-idb', 'write 201 5A', 'WROTE SECTOR 201 FILL 5A');
    await page.evaluate(() => client.stopVm('o-idb'));
    assert.equal((await overlays('o-idb')).length, 1);
    await page.evaluate(() => client.deleteOverlays('o-idb'));
    assert.deepEqual(await overlays('o-idb'), []);
    const bad = await page.evaluate(() => attempt(() => client.overlays('../x')));
    assert.equal(bad.error, 'malformed');
    await context.close();
  } finally {
    dropProfile(profile);
  }
});
