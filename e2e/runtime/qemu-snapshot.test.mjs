// Snapshots on the QEMU engine (wasm64 build found through QEMUWEB_QEMU_DIR, as in
// qemu.test.mjs), with the x86 test guest on linux-x86_64-pc-nographic: a sector is written
// and half a command typed, the VM is saved (saveSnapshot: QMP stop, snapshot-save into a
// qcow2 image in the module's filesystem, cont), the guest runs on; the page is reloaded;
// resuming against another machine or engine is refused with `snapshot-mismatch` and
// changes nothing; the real resume continues the same guest (no banner again, the half
// typed command completes) with the sector written before the save. The snapshot is
// exported and imported like a v86 one (the same file format). Prints cold boot-to-prompt,
// resume-to-prompt, save time and state size (one run; not asserted).
//
// Without a build (QEMUWEB_QEMU_DIR unset or incomplete) the test is SKIPPED, loudly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { newProfile } from '../lib/browser.mjs';
import { browserWithPage, converse, dropProfile, readReply, setUp } from './common.mjs';
import { installQemu, QEMU_ASSETS, qemuMissing, runsProfile } from './qemu-assets.mjs';

const BANNER = 'QEMUWEB-GUEST x86 v1';
const PROFILE = 'linux-x86_64-pc-nographic';
const VM = 'q-snap';
const LBA = 321;
const missing = qemuMissing() ?? (runsProfile(PROFILE) ? null : `the build has no module for ${PROFILE}`);
if (missing) {
  console.error(`\n${'!'.repeat(78)}\n!! QEMU build missing: ${missing}\n!! The QEMU snapshot test is SKIPPED (not passed).\n${'!'.repeat(78)}\n`);
}

let env;

before(async () => {
  env = await setUp();
  if (!missing) installQemu(env.webRoot);
});

after(async () => {
  await env?.tearDown();
});

/** Starts VM in the page's client (made if needed); returns {ok} or {error, message}. */
function start(page, { profile = PROFILE, engine = 'qemu', ...options } = {}) {
  const inputs = { disk: { source: { kind: 'url', url: `${env.images.url}/x86-bios.qcow2` } } };
  return page.evaluate(async ([vm, profile, inputs, engine, options, assets]) => {
    window.client ??= makeClient({ workerUrl: './pkg/worker.js', assets });
    await window.client.init();
    return attempt(() => window.client.startVm(vm, profiles[profile], inputs, { engine, ...options }));
  }, [VM, profile, inputs, engine, options, QEMU_ASSETS]);
}

test('QEMU engine: a saved guest resumes after a reload where it was, with its disk; other machines are refused', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  const profile = newProfile();
  try {
    const { page } = await browserWithPage(profile, env.web, 'qemu-snap');
    let t0 = Date.now();
    assert.deepEqual(await start(page), { ok: undefined });
    await page.evaluate(([vm, banner]) => waitSerial(vm, banner + '\r\n> ', 0, 120000), [VM, BANNER]);
    const coldBoot = Date.now() - t0;
    const filled = Buffer.alloc(512, 0xa7);
    await converse(page, VM, `write ${LBA} A7`, `WROTE SECTOR ${LBA} FILL A7\r\n> `, 60000);
    // Half a command: the rest is typed into the resumed guest.
    await page.evaluate((vm) => client.sendSerialIn(vm, 'echo snap'), VM);
    await page.waitForTimeout(300);

    t0 = Date.now();
    const saved = await page.evaluate((vm) => attempt(() => client.saveSnapshot(vm, { id: 's1', name: 'half a command' })), VM);
    const saveMs = Date.now() - t0;
    assert.equal(saved.ok?.id, 's1', JSON.stringify(saved));
    assert.equal(saved.ok.engine, 'qemu');
    assert.equal(saved.ok.profileId, PROFILE);
    assert.deepEqual(saved.ok.disks.map((d) => d.id), ['disk0']);
    assert.ok(saved.ok.stateBytes > 64 << 10, JSON.stringify(saved.ok));
    // The guest runs on after the save (this line is not in the snapshot).
    assert.match(await converse(page, VM, 'ped', 'snapped\r\n> ', 60000), /snapped/);

    await page.reload();
    await page.waitForFunction(() => document.title === 'ready');
    // Another machine, another engine: typed refusals before anything starts.
    const memory = await start(page, { overrides: { memoryMiB: 384 }, resume: { kind: 'snapshot', id: 's1' } });
    assert.equal(memory.error, 'snapshot-mismatch', JSON.stringify(memory));
    assert.match(memory.message, /machine/);
    const engine = await start(page, { profile: 'linux-i386-pc-nographic', engine: 'v86', resume: { kind: 'snapshot', id: 's1' } });
    assert.equal(engine.error, 'snapshot-mismatch', JSON.stringify(engine));
    assert.match(engine.message, /engine/);

    t0 = Date.now();
    assert.deepEqual(await start(page, { resume: { kind: 'snapshot', id: 's1' } }), { ok: undefined });
    const out = await converse(page, VM, 'shot', 'snapshot\r\n> ', 60000);
    const resumeMs = Date.now() - t0;
    const serial = await page.evaluate((vm) => window.serial[vm], VM);
    assert.ok(!serial.includes(BANNER), `the guest was rebooted: ${JSON.stringify(serial)}`);
    assert.ok(!out.includes('snapped'), 'the line typed after the save is not in the snapshot');
    await converse(page, VM, `read ${LBA}`, `${readReply(LBA, filled)}\r\n> `, 60000);

    // Export and import: the same file format as v86's.
    const copied = await page.evaluate(async (vm) => {
      const blob = await client.exportSnapshot(vm, 's1');
      const imported = await attempt(() => client.importSnapshot(blob, { vmId: 'q-snap-copy' }));
      return { size: blob.size, imported, listed: (await client.listSnapshots()).map((s) => `${s.vmId}/${s.id}/${s.engine}`).sort() };
    }, VM);
    assert.equal(copied.imported.ok?.engine, 'qemu', JSON.stringify(copied.imported));
    assert.deepEqual(copied.listed, ['q-snap-copy/s1/qemu', 'q-snap/s1/qemu']);
    assert.deepEqual(await page.evaluate((vm) => attempt(() => client.stopVm(vm)), VM), { ok: undefined });
    console.log(`QEMU snapshot (${PROFILE}): cold boot to prompt ${coldBoot} ms, save ${saveMs} ms, `
      + `state ${saved.ok.stateBytes} bytes (file ${copied.size}), resume to prompt ${resumeMs} ms`);
  } finally {
    dropProfile(profile);
  }
});
