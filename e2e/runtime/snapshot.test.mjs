// Snapshots with a Linux guest at a shell (Debian's i386 kernel and the busybox initramfs of
// scripts/linux-guest that mounts a minix disk on /mnt), on each engine: the session is
// saved, the page reloaded, the VM resumed, and the shell variable, the file on the disk,
// the boot id and the uptime show it is the same session; after more writes, resuming the
// older snapshot gives the disk as it was at that save. Snapshots resumed against another
// machine, and damaged or truncated snapshot files, are refused with typed errors and change
// nothing; an exported snapshot resumes in another browser profile. Prints cold boot to the
// prompt, save and resume times and the state size (one run; not asserted).
//
// The engines: v86, and QEMU (the build QEMUWEB_QEMU_DIR names, as in qemu.test.mjs) on the
// same profile, linux-i386-pc-nographic: its `pc` machine has the IDE disk (ata_piix, /dev/sda)
// the initramfs has modules for; linux-x86_64-pc-nographic's q35 with virtio-blk is not one it
// can mount. Without a QEMU build the QEMU test is SKIPPED, loudly (scripts/e2e-linux.sh
// records it for scripts/test's summary); a QEMUWEB_QEMU_DIR that names an unusable build fails.
//
// Heavier than the other runtime tests (Linux boots), so it runs with the Linux step:
// scripts/e2e-linux.sh (which sets QEMUWEB_E2E_LINUX=1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { browserWithPage, converse, dropProfile, linuxGuest, setUp } from './common.mjs';
import { installQemu, QEMU_ASSETS, qemuMissing, runsProfile } from './qemu-assets.mjs';

const enabled = process.env.QEMUWEB_E2E_LINUX === '1';
const VM = 'snap-linux';
const PROFILE = 'linux-i386-pc-nographic';
const MEMORY = 96;
// Why the QEMU variant cannot run, or null.
const qemuGone = qemuMissing() ?? (runsProfile(PROFILE) ? null : `the build has no module for ${PROFILE}`);
if (enabled && qemuGone) {
  console.error(`\n${'!'.repeat(78)}\n!! QEMU build missing: ${qemuGone}\n!! The QEMU Linux snapshot test ${process.env.QEMUWEB_QEMU_DIR ? 'FAILS' : 'is SKIPPED (not passed)'}.\n${'!'.repeat(78)}\n`);
}
// The engines: startVm's `engine` option and the client's options.
const ENGINES = [
  { engine: 'v86', client: undefined },
  { engine: 'qemu', client: { workerUrl: './pkg/worker.js', assets: QEMU_ASSETS } },
];
let env;

before(async () => {
  if (!enabled) return;
  const [kernel, , diskInitrd] = linuxGuest();
  env = await setUp();
  if (!qemuGone) installQemu(env.webRoot);
  copyFileSync(kernel, join(env.imageRoot, 'bzImage'));
  copyFileSync(diskInitrd, join(env.imageRoot, 'initrd-disk.img'));
  // An 8 MiB disk with an empty minix file system (the guest mounts it on /mnt).
  const disk = join(env.imageRoot, 'minix.raw');
  writeFileSync(disk, Buffer.alloc(8 << 20));
  execFileSync('mkfs.minix', [disk], { stdio: 'ignore' });
});

after(async () => {
  await env?.tearDown();
});

const inputs = () => ({
  kernel: { kind: 'url', url: `${env.images.url}/bzImage` },
  initrd: { kind: 'url', url: `${env.images.url}/initrd-disk.img` },
  kernelCmdline: 'console=ttyS0 quiet',
  disk: { source: { kind: 'url', url: `${env.images.url}/minix.raw` } },
});

/** Starts VM on `engine` in the page's client (made if needed) with `options`; returns {ok} or {error}. */
function start(page, { engine, client }, options) {
  return page.evaluate(async ([vm, profile, inputs, engine, client, options]) => {
    window.client ??= client ? makeClient(client) : makeClient();
    await window.client.init();
    window.snapEvents ??= [];
    window.client.on('snapshotProgress', (e) => window.snapEvents.push(e));
    return attempt(() => window.client.startVm(vm, profiles[profile], inputs, { engine, ...options }));
  }, [VM, PROFILE, inputs(), engine, client, options]);
}

/**
 * What the shell says about the session: the variable, the file, the boot id, uptime. (The
 * answer starts with S42S, which the echoed command line does not have: a line typed before
 * the prompt is echoed whole by the tty, and would match too.)
 */
async function session(page) {
  const out = await converse(page, VM,
    'echo "S$((6*7))S var=[$SNAPVAR] f=[$(cat /mnt/f 2>&1)] g=[$(cat /mnt/g 2>&1)] boot=[$(cat /proc/sys/kernel/random/boot_id)] up=[$(cut -d" " -f1 /proc/uptime)] END"',
    ' END\r\n', 60000);
  const m = out.match(/S42S var=\[(.*?)\] f=\[(.*?)\] g=\[(.*?)\] boot=\[(.*?)\] up=\[(.*?)\] END/);
  assert.ok(m, out);
  return { v: m[1], f: m[2], g: m[3], boot: m[4], up: Number(m[5]) };
}

for (const e of ENGINES) {
  const skip = !enabled ? 'set QEMUWEB_E2E_LINUX=1 (scripts/e2e-linux.sh)'
    : e.engine === 'qemu' && qemuGone && !process.env.QEMUWEB_QEMU_DIR ? `QEMU build missing: ${qemuGone}` : false;
  test(`${e.engine}: a Linux session saved with its disk resumes after a reload, and an older snapshot brings the older disk back`, { skip }, () => linuxSession(e));
}

/** The test on engine `e`. */
async function linuxSession(e) {
  // QEMUWEB_QEMU_DIR names a build that cannot run this: a failure, not a skip.
  assert.ok(e.engine !== 'qemu' || !process.env.QEMUWEB_QEMU_DIR || !qemuGone, qemuGone);
  const profile = newProfile();
  const other = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'snap');
    const options = { overrides: { memoryMiB: MEMORY } };
    let t0 = Date.now();
    assert.deepEqual(await start(page, e, options), { ok: undefined });
    await page.evaluate((vm) => waitSerial(vm, 'qemuweb# ', 0, 240000), VM);
    const coldBoot = Date.now() - t0;
    await converse(page, VM, 'SNAPVAR=first-session; echo one > /mnt/f; sync; echo W$((1+1))', 'W2');
    const before = await session(page);
    assert.equal(before.v, 'first-session');
    assert.equal(before.f, 'one');
    t0 = Date.now();
    const saved = await page.evaluate((vm) => attempt(() => client.saveSnapshot(vm, { id: 's1', name: 'at the prompt' })), VM);
    assert.equal(saved.ok?.id, 's1', JSON.stringify(saved));
    const saveMs = Date.now() - t0;
    assert.equal(saved.ok.engine, e.engine);
    assert.deepEqual(saved.ok.disks.map((d) => d.id), ['disk0']);
    const saveProgress = await page.evaluate(() => snapEvents.filter((e) => e.operation === 'save'));
    assert.ok(saveProgress.length > 0 && saveProgress.at(-1).loaded === saveProgress.at(-1).total, JSON.stringify(saveProgress.at(-1)));
    // The guest runs on after the save.
    await converse(page, VM, 'echo A$((2+3))', 'A5');

    // Reload: the worker dies; a new page resumes the snapshot.
    await page.reload();
    await page.waitForFunction(() => document.title === 'ready');
    t0 = Date.now();
    assert.deepEqual(await start(page, e, { ...options, resume: { kind: 'snapshot', id: 's1' } }), { ok: undefined });
    const resumeStarted = Date.now() - t0;
    const resumed = await session(page);
    console.log(`${e.engine} Linux snapshot: cold boot to the prompt ${coldBoot} ms, save ${saveMs} ms, `
      + `state ${saved.ok.stateBytes} bytes, resume started in ${resumeStarted} ms, the shell answering ${Date.now() - t0} ms`);
    assert.equal(resumed.v, 'first-session', 'the shell variable survived');
    assert.equal(resumed.f, 'one');
    assert.equal(resumed.boot, before.boot, 'the same boot');
    assert.ok(resumed.up >= before.up && resumed.up < before.up + 120, `uptime ${before.up} -> ${resumed.up}`);
    const restoreProgress = await page.evaluate(() => snapEvents.filter((e) => e.operation === 'restore').length);
    assert.ok(restoreProgress > 0);

    // More writes, then back to s1: the disk as it was at s1.
    await converse(page, VM, 'SNAPVAR=later; echo two > /mnt/f; echo extra > /mnt/g; sync; echo W$((1+2))', 'W3');
    const later = await session(page);
    assert.deepEqual([later.v, later.f, later.g], ['later', 'two', 'extra']);
    await page.evaluate((vm) => client.stopVm(vm), VM);
    assert.deepEqual(await start(page, e, { ...options, resume: { kind: 'snapshot', id: 's1' } }), { ok: undefined });
    const back = await session(page);
    assert.equal(back.v, 'first-session');
    assert.equal(back.f, 'one', 'the file as it was at s1');
    assert.match(back.g, /No such file/, 'a file written after s1 is gone');
    assert.equal(back.boot, before.boot);
    await page.evaluate((vm) => client.stopVm(vm), VM);

    // Another machine (more memory): a typed mismatch, and nothing changes.
    const mismatch = await start(page, e, { overrides: { memoryMiB: MEMORY * 2 }, resume: { kind: 'snapshot', id: 's1' } });
    assert.equal(mismatch.error, 'snapshot-mismatch', JSON.stringify(mismatch));
    assert.match(mismatch.message, /machine/);
    const missing = await start(page, e, { ...options, resume: { kind: 'snapshot', id: 'nope' } });
    assert.equal(missing.error, 'snapshot-not-found', JSON.stringify(missing));

    // Export; damaged and truncated copies are refused and change nothing.
    const file = await page.evaluate(async (vm) => {
      const blob = await client.exportSnapshot(vm, 's1');
      window.exported = new Uint8Array(await blob.arrayBuffer());
      return { size: blob.size };
    }, VM);
    assert.ok(file.size > MEMORY << 10, JSON.stringify(file));
    const refused = await page.evaluate(async (vm) => {
      const flipped = exported.slice();
      flipped[flipped.length >> 1] ^= 1;
      const out = {};
      for (const [name, bytes] of [['flipped', flipped], ['truncated', exported.slice(0, exported.length - 100)], ['header', exported.slice(0, 64)]]) {
        out[name] = await attempt(() => client.importSnapshot(new Blob([bytes]), { vmId: 'snap-imported' }));
      }
      out.listed = (await client.listSnapshots()).map((s) => `${s.vmId}/${s.id}`);
      return out;
    }, VM);
    for (const name of ['flipped', 'truncated', 'header']) assert.equal(refused[name].error, 'snapshot-corrupt', `${name}: ${JSON.stringify(refused[name])}`);
    assert.deepEqual(refused.listed, [`${VM}/s1`]);
    // After every refusal s1 still resumes whole.
    assert.deepEqual(await start(page, e, { ...options, resume: { kind: 'snapshot', id: 's1' } }), { ok: undefined });
    assert.equal((await session(page)).f, 'one');
    await page.evaluate((vm) => client.stopVm(vm, true), VM);
    // Downloaded as a user would, then opened from a file input in another profile.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.evaluate(() => {
        const a = document.createElement('a');
        a.href = URL.createObjectURL(new Blob([exported]));
        a.download = 's1.qwsnap';
        document.body.append(a);
        a.click();
      }),
    ]);
    const saveDir = mkdtempSync(join(tmpdir(), 'qemuweb-snap-'));
    const savedFile = join(saveDir, 's1.qwsnap');
    await download.saveAs(savedFile);
    assert.equal(statSync(savedFile).size, file.size);
    await context.close();

    // The file resumes in another browser profile (no overlay, no snapshot there yet).
    const fresh = await browserWithPage(other, env.web, 'snap-other');
    await fresh.page.evaluate(() => {
      const input = document.createElement('input');
      input.type = 'file';
      input.id = 'snapfile';
      document.body.append(input);
    });
    await fresh.page.setInputFiles('#snapfile', savedFile);
    assert.equal(await fresh.page.evaluate(() => document.getElementById('snapfile').files[0]?.size), file.size);
    const imported = await fresh.page.evaluate(async (options) => {
      window.client = options ? makeClient(options) : makeClient();
      await client.init();
      return attempt(() => client.importSnapshot(document.getElementById('snapfile').files[0]));
    }, e.client);
    // (The browser reads a File from its disk as it is read: remove it only now.)
    rmSync(saveDir, { recursive: true, force: true });
    assert.equal(imported.ok?.id, 's1', JSON.stringify(imported));
    assert.deepEqual(await start(fresh.page, e, { ...options, resume: { kind: 'snapshot', id: 's1' } }), { ok: undefined });
    const there = await session(fresh.page);
    assert.deepEqual([there.v, there.f, there.boot], ['first-session', 'one', before.boot]);
    await fresh.page.evaluate((vm) => client.stopVm(vm, true), VM);
    await fresh.context.close();
  } finally {
    dropProfile(profile);
    dropProfile(other);
  }
}
