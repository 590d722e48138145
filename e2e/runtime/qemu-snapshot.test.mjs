// Snapshots on the QEMU engine (wasm64 build found through QEMUWEB_QEMU_DIR, as in
// qemu.test.mjs), with the x86 test guest on linux-x86_64-pc-nographic and the aarch64 test
// kernel on linux-aarch64-virt-nographic (when the build has its module): a sector is written
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
import { browserWithPage, converse, dropProfile, readReply, setUpQemu } from './common.mjs';
import { QEMU_ASSETS, qemuMissing, runsProfile, warnQemuSkipped } from './qemu-assets.mjs';

// The guests: the x86 test guest on x86_64, and (when the build has the module) the aarch64
// test kernel with the same disk.
const GUESTS = [
  { profile: 'linux-x86_64-pc-nographic', vm: 'q-snap', banner: 'QEMUWEB-GUEST x86 v1', lba: 321 },
  { profile: 'linux-aarch64-virt-nographic', vm: 'q-snap-arm', banner: 'QEMUWEB-GUEST aarch64 v1', lba: 322, kernel: 'aarch64-virt.img' },
];
const missing = qemuMissing() ?? (runsProfile(GUESTS[0].profile) ? null : `the build has no module for ${GUESTS[0].profile}`);
warnQemuSkipped(missing, 'The QEMU snapshot test is');
const guests = missing ? [] : GUESTS.filter((g) => runsProfile(g.profile));

let env;

before(async () => {
  env = await setUpQemu(missing);
});

after(async () => {
  await env?.tearDown();
});

/** Starts `guest` in the page's client (made if needed); returns {ok} or {error, message}. */
function start(page, guest, { profile = guest.profile, engine = 'qemu', ...options } = {}) {
  const inputs = { disk: { source: { kind: 'url', url: `${env.images.url}/x86-bios.qcow2` } } };
  if (guest.kernel) inputs.kernel = { kind: 'url', url: `${env.images.url}/${guest.kernel}` };
  return page.evaluate(async ([vm, profile, inputs, engine, options, assets]) => {
    window.client ??= makeClient({ workerUrl: './pkg/worker.js', assets });
    await window.client.init();
    return attempt(() => window.client.startVm(vm, profiles[profile], inputs, { engine, ...options }));
  }, [guest.vm, profile, inputs, engine, options, QEMU_ASSETS]);
}

const filled = (lba) => Buffer.alloc(512, lba & 0xff);
const hex = (lba) => (lba & 0xff).toString(16).toUpperCase().padStart(2, '0');

test('QEMU engine: a saved guest resumes after a reload where it was, with its disk; other machines are refused', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  const profile = newProfile();
  try {
    const { page } = await browserWithPage(profile, env.web, 'qemu-snap');
    const numbers = {};
    for (const g of guests) {
      let t0 = Date.now();
      assert.deepEqual(await start(page, g), { ok: undefined }, g.profile);
      await page.evaluate(([vm, banner]) => waitSerial(vm, banner + '\r\n> ', 0, 120000), [g.vm, g.banner]);
      const coldBoot = Date.now() - t0;
      await converse(page, g.vm, `write ${g.lba} ${hex(g.lba)}`, `WROTE SECTOR ${g.lba} FILL ${hex(g.lba)}\r\n> `, 60000);
      // Half a command: the rest is typed into the resumed guest.
      await page.evaluate((vm) => client.sendSerialIn(vm, 'echo snap'), g.vm);
      await page.waitForTimeout(300);
      t0 = Date.now();
      const saved = await page.evaluate((vm) => attempt(() => client.saveSnapshot(vm, { id: 's1', name: 'half a command' })), g.vm);
      const saveMs = Date.now() - t0;
      assert.equal(saved.ok?.id, 's1', JSON.stringify(saved));
      assert.equal(saved.ok.engine, 'qemu');
      assert.equal(saved.ok.profileId, g.profile);
      assert.deepEqual(saved.ok.disks.map((d) => d.id), ['disk0']);
      assert.ok(saved.ok.stateBytes > 64 << 10, JSON.stringify(saved.ok));
      // The guest runs on after the save (this line is not in the snapshot).
      assert.match(await converse(page, g.vm, 'ped', 'snapped\r\n> ', 60000), /snapped/);
      assert.deepEqual(await page.evaluate((vm) => attempt(() => client.stopVm(vm)), g.vm), { ok: undefined });
      numbers[g.profile] = { coldBoot, saveMs, stateBytes: saved.ok.stateBytes };
    }

    await page.reload();
    await page.waitForFunction(() => document.title === 'ready');
    const x86 = guests[0];
    // Another machine, another engine: typed refusals before anything starts.
    const memory = await start(page, x86, { overrides: { memoryMiB: 384 }, resume: { kind: 'snapshot', id: 's1' } });
    assert.equal(memory.error, 'snapshot-mismatch', JSON.stringify(memory));
    assert.match(memory.message, /machine/);
    const engine = await start(page, x86, { profile: 'linux-i386-pc-nographic', engine: 'v86', resume: { kind: 'snapshot', id: 's1' } });
    assert.equal(engine.error, 'snapshot-mismatch', JSON.stringify(engine));
    assert.match(engine.message, /engine/);

    for (const g of guests) {
      const t0 = Date.now();
      assert.deepEqual(await start(page, g, { resume: { kind: 'snapshot', id: 's1' } }), { ok: undefined }, g.profile);
      const out = await converse(page, g.vm, 'shot', 'snapshot\r\n> ', 60000);
      const resumeMs = Date.now() - t0;
      const serial = await page.evaluate((vm) => window.serial[vm], g.vm);
      assert.ok(!serial.includes(g.banner), `${g.profile}: the guest was rebooted: ${JSON.stringify(serial)}`);
      assert.ok(!out.includes('snapped'), 'the line typed after the save is not in the snapshot');
      await converse(page, g.vm, `read ${g.lba}`, `${readReply(g.lba, filled(g.lba))}\r\n> `, 60000);
      assert.deepEqual(await page.evaluate((vm) => attempt(() => client.stopVm(vm)), g.vm), { ok: undefined });
      const n = numbers[g.profile];
      console.log(`QEMU snapshot (${g.profile}): cold boot to prompt ${n.coldBoot} ms, save ${n.saveMs} ms, `
        + `state ${n.stateBytes} bytes, resume to prompt ${resumeMs} ms`);
    }

    // Export and import: the same file format as v86's.
    const copied = await page.evaluate(async (vm) => {
      const blob = await client.exportSnapshot(vm, 's1');
      const imported = await attempt(() => client.importSnapshot(blob, { vmId: 'q-snap-copy' }));
      return { size: blob.size, imported, listed: (await client.listSnapshots()).map((s) => `${s.vmId}/${s.id}/${s.engine}`).sort() };
    }, x86.vm);
    assert.equal(copied.imported.ok?.engine, 'qemu', JSON.stringify(copied.imported));
    assert.deepEqual(copied.listed, ['q-snap-copy/s1/qemu', ...guests.map((g) => `${g.vm}/s1/qemu`)].sort());
    assert.ok(copied.size > numbers[x86.profile].stateBytes, JSON.stringify(copied));
  } finally {
    dropProfile(profile);
  }
});
