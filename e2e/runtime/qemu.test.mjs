// The QEMU engine end to end in headless Chromium, on a build of qemuweb-wasm-build (found
// through QEMUWEB_QEMU_DIR, served as assets.qemuDir): the wasm64 JIT build scripts/test makes
// (qemu-system-x86_64 and qemu-system-aarch64), or another plan's (the wasm32
// qemu-system-i386, an interpreter-only wasm64). Every default profile the build has a module for starts through QemuClient with the guest it is meant
// for (the x86 test guest from a qcow2 image served over HTTP by qemuweb-test-server; on the
// aarch64 profiles the aarch64 test kernel with the same qcow2 as its virtio disk): banner,
// echo, a sector written, the page reloaded, the sector read back from our IndexedDB overlay
// under QEMU's raw disk; every other default profile is refused with a typed `unsupported`
// error naming the arch. Also: typed refusals (no Memory64, before any download; too much RAM
// for the module, after reading only qemu-build.json; no build; no isolation), a disk host
// that goes away, reset and stop, the execution mode the engine reports (the JIT and what it
// compiled, or the interpreter with options.qemu.jit false), and the headless runner with
// --engine qemu.
//
// Without a build (QEMUWEB_QEMU_DIR unset or incomplete) the QEMU tests are SKIPPED, loudly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGroup } from '../lib/proc.mjs';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { serve, TARGET } from '../lib/server.mjs';
import { browserWithPage, converse, dropProfile, initialSector, readReply, setUpQemu, NO_ISOLATION } from './common.mjs';
import { archOf, QEMU_ASSETS, qemuBuild, qemuMissing, runsProfile, warnQemuSkipped } from './qemu-assets.mjs';

const X86_BANNER = 'QEMUWEB-GUEST x86 v1';
const ARM_BANNER = 'QEMUWEB-GUEST aarch64 v1';
const missing = qemuMissing();
warnQemuSkipped(missing, 'The QEMU engine tests are');

let env;

before(async () => {
  env = await setUpQemu(missing);
  // The VM worker as a browser without Memory64 runs it, beside the page (./pkg/ is the runtime).
  cpSync(join(import.meta.dirname, 'no-memory64-worker.js'), join(env.webRoot, 'no-memory64-worker.js'));
});

after(async () => {
  await env?.tearDown();
});

const imageUrl = () => `${env.images.url}/x86-bios.qcow2`;
const kernelUrl = () => `${env.images.url}/aarch64-virt.img`;

/** The guest of `profileId`: [banner, inputs] (aarch64: the test kernel and the disk). */
function guestOf(profileId, disk = imageUrl()) {
  const source = { kind: 'url', url: disk };
  if (profileId.includes('aarch64')) {
    return [ARM_BANNER, { kernel: { kind: 'url', url: kernelUrl() }, disk: { source } }];
  }
  return [X86_BANNER, { disk: { source } }];
}

/** Starts `vm` with `profileId` on the QEMU engine in the page's client. */
function startQemu(page, vm, profileId, { disk, overrides, assets = QEMU_ASSETS, qemu } = {}) {
  const [, inputs] = guestOf(profileId, disk);
  return page.evaluate(async ([vm, profileId, inputs, overrides, assets, qemu]) => {
    window.client ??= makeClient({ workerUrl: './pkg/worker.js', assets });
    await window.client.init();
    return attempt(() => window.client.startVm(vm, profiles[profileId], inputs, { overrides, engine: 'qemu', qemu }));
  }, [vm, profileId, inputs, overrides, assets, qemu]);
}

const waitBanner = (page, vm, banner, from = 0) =>
  page.evaluate(([vm, banner, from]) => waitSerial(vm, banner + '\r\n> ', from, 180000), [vm, banner, from]);

const DEFAULT_PROFILES = [
  'linux-x86_64-pc-nographic',
  'linux-x86_64-pc-graphics',
  'linux-aarch64-virt-nographic',
  'linux-aarch64-virt-graphics',
  'minimal-x86_64',
  'linux-i386-pc-nographic',
  'linux-i386-pc-graphics',
];
// What the build runs, and what it must refuse.
const PROFILES = missing ? [] : DEFAULT_PROFILES.filter((id) => runsProfile(id));
const REFUSED = missing ? [] : DEFAULT_PROFILES.filter((id) => !runsProfile(id));
// The x86 profile of the single-profile tests: x86_64 on a wasm64 build, i386 on a wasm32 one.
const X86 = PROFILES.find((id) => archOf(id) !== 'aarch64') ?? 'linux-x86_64-pc-nographic';

test('QEMU engine: every default profile boots its guest from a qcow2 over HTTP, and a written sector survives a reload', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  const profile = newProfile();
  const filled = (lba) => Buffer.alloc(512, lba & 0xff);
  const lbaOf = (i) => 100 + 10 * i;
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'qemu');
    // The server keeps its whole log: what this test fetched starts here.
    const logStart = (await env.images.log()).length;
    for (const [i, id] of PROFILES.entries()) {
      const [banner] = guestOf(id);
      const vm = `q-${id}`;
      const lba = lbaOf(i);
      const byte = (lba & 0xff).toString(16).toUpperCase().padStart(2, '0');
      const t0 = Date.now();
      assert.deepEqual(await startQemu(page, vm, id), { ok: undefined }, id);
      await waitBanner(page, vm, banner);
      const booted = Date.now() - t0;
      assert.match(await converse(page, vm, `echo hello ${id}`, `hello ${id}\r\n> `, 60000), /\r\n> $/);
      await converse(page, vm, `read ${lba}`, `${readReply(lba, initialSector(lba))}\r\n> `, 60000);
      await converse(page, vm, `write ${lba} ${byte}`, `WROTE SECTOR ${lba} FILL ${byte}\r\n> `, 60000);
      await converse(page, vm, `read ${lba}`, `${readReply(lba, filled(lba))}\r\n> `, 60000);
      // stopVm syncs the overlay to IndexedDB.
      assert.deepEqual(await page.evaluate((vm) => attempt(() => client.stopVm(vm)), vm), { ok: undefined });
      console.log(`${id}: banner ${booted} ms after start, echo and a sector written`);
    }
    const started = await page.evaluate(() => events.filter((e) => e.type === 'started').map((e) => e.args[0]));
    assert.deepEqual(started, PROFILES.map(() => 'qemu'));
    // Profiles of archs the build has no module for: a typed refusal naming the arch.
    for (const id of REFUSED) {
      const got = await startQemu(page, `q-${id}`, id);
      assert.equal(got.error, 'unsupported', `${id}: ${JSON.stringify(got)}`);
      assert.match(got.message, new RegExp(`no emulator for ${archOf(id)} guests`), id);
      console.log(`${id}: refused (${got.message})`);
    }

    // Lazy: Range requests only, for a fraction of the image.
    const size = statSync(join(env.imageRoot, 'x86-bios.qcow2')).size;
    const gets = (await env.images.log()).slice(logStart).map((l) => l.split('\t'))
      .filter(([method, path]) => method === 'GET' && path === '/x86-bios.qcow2');
    assert.ok(gets.length > 0);
    for (const [, , range, status] of gets) {
      assert.notEqual(range, '-', 'every image GET is a Range request');
      assert.equal(status, '206');
    }
    const fetched = gets.reduce((n, g) => n + Number(g[4]), 0);
    console.log(`QEMU engine, ${PROFILES.length} profiles: image ${size} bytes, fetched ${fetched} bytes in ${gets.length} Range requests`);

    // Reload: the workers die with the page; new QEMUs read the writes back from IndexedDB.
    await page.reload();
    await page.waitForFunction(() => document.title === 'ready');
    for (const [i, id] of PROFILES.entries()) {
      const [banner] = guestOf(id);
      const vm = `q-${id}`;
      const lba = lbaOf(i);
      assert.deepEqual(await startQemu(page, vm, id), { ok: undefined }, id);
      await waitBanner(page, vm, banner);
      await converse(page, vm, `read ${lba}`, `${readReply(lba, filled(lba))}\r\n> `, 60000);
      await converse(page, vm, `read ${lba + 1}`, `${readReply(lba + 1, initialSector(lba + 1))}\r\n> `, 60000);
      if (i === 0) {
        // Reset starts QEMU again on the same disks.
        const from = await page.evaluate((vm) => window.serial[vm].length, vm);
        assert.deepEqual(await page.evaluate((vm) => attempt(() => client.resetVm(vm)), vm), { ok: undefined });
        await waitBanner(page, vm, banner, from);
        await converse(page, vm, `read ${lba}`, `${readReply(lba, filled(lba))}\r\n> `, 60000);
      }
      assert.deepEqual(await page.evaluate((vm) => attempt(() => client.stopVm(vm)), vm), { ok: undefined });
    }
    const errors = await page.evaluate(() => events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('QEMU engine: execution events say whether the JIT or the interpreter runs, and what the JIT compiled', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  const jitBuild = qemuBuild().tcg === 'jit';
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'qemu-jit');
    const runs = jitBuild ? [['q-jit', undefined, 'jit'], ['q-tci', { jit: false }, 'interpreter']] : [['q-tci', undefined, 'interpreter']];
    for (const [vm, qemu, mode] of runs) {
      assert.deepEqual(await startQemu(page, vm, X86, { qemu }), { ok: undefined }, vm);
      await waitBanner(page, vm, X86_BANNER);
      // The guest's command loop and a sector read: hot blocks for the JIT.
      for (let i = 0; i < 3; i++) await converse(page, vm, `read ${i}`, '\r\n> ', 60000);
      const stats = await page.evaluate(([vm, mode]) => new Promise((resolve, reject) => {
        const t0 = performance.now();
        const tick = () => {
          const got = events.filter((e) => e.type === 'execution' && e.vmId === vm).map((e) => e.args[0]);
          const last = got.at(-1);
          if (last && last.mode === mode && (mode !== 'jit' || last.blocksCompiled > 0)) return resolve(got);
          if (performance.now() - t0 > 30000) return reject(new Error(`no ${mode} execution event for ${vm}: ${JSON.stringify(got)}`));
          setTimeout(tick, 100);
        };
        tick();
      }), [vm, mode]);
      const last = stats.at(-1);
      assert.ok(stats.every((s) => s.mode === mode), JSON.stringify(stats));
      if (mode === 'jit') {
        assert.ok(last.modules > 0 && last.wasmBytes > 0 && last.compileMs > 0 && last.hotThreshold > 0, JSON.stringify(last));
      } else {
        assert.equal(last.blocksCompiled, 0, JSON.stringify(last));
      }
      const logs = await page.evaluate((vm) => events.filter((e) => e.type === 'log' && e.vmId === vm).map((e) => e.args[1]), vm);
      assert.ok(logs.some((l) => l.includes(mode === 'jit' ? 'on the WebAssembly JIT' : 'on its interpreter (TCI)')), JSON.stringify(logs));
      console.log(`${vm}: ${logs.filter((l) => l.startsWith('QEMU runs')).at(-1)}`);
      await page.evaluate((vm) => client.stopVm(vm, true), vm);
    }
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('QEMU engine: no Memory64, too much RAM and no build are typed errors, before the module or disk is fetched', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  const profile = newProfile();
  // A second copy of the build on the logging server: what the refusals fetched shows there.
  const qemuRoot = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-qemu-host-'));
  cpSync(process.env.QEMUWEB_QEMU_DIR, qemuRoot, { recursive: true });
  // Our build needs no Memory64 (64-bit pointers in a 32-bit memory); this copy's manifest
  // says it does, as a wasm64 build linked without lowering would, for the refusal.
  const ownNeedsMemory64 = Boolean(qemuBuild().requirements?.memory64);
  const hosted = JSON.parse(readFileSync(join(qemuRoot, 'qemu-build.json'), 'utf8'));
  hosted.requirements = { ...hosted.requirements, memory64: true };
  writeFileSync(join(qemuRoot, 'qemu-build.json'), JSON.stringify(hosted));
  const qemuHost = await serve(qemuRoot);
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'qemu-errors');
    const logStart = (await env.images.log()).length;
    const disk = { disk: { source: { kind: 'url', url: imageUrl() } } };
    const limit = Math.min(...qemuBuild().modules.map((m) => m.maxGuestRamMib));
    const tooMuch = limit + 256;
    const out = await page.evaluate(async ([disk, qemuDir, x86, tooMuch]) => {
      const r = {};
      const noMemory64 = makeClient({ workerUrl: './no-memory64-worker.js', assets: { qemuDir } });
      await noMemory64.init();
      r.noMemory64 = await attempt(() => noMemory64.startVm('q-nom64', profiles[x86], disk, { engine: 'qemu' }));
      // What the VM's worker reported when it came up.
      r.caps = events.filter((e) => e.type === 'capabilities').map((e) => e.args[0]).find((c) => !c.memory64);
      const c = makeClient({ workerUrl: './pkg/worker.js', assets: { qemuDir } });
      r.tooBig = await attempt(() => c.startVm('q-big', { ...profiles[x86], maxMemoryMiB: 8192 },
        disk, { overrides: { memoryMiB: tooMuch }, engine: 'qemu' }));
      r.noDir = await attempt(() => c.startVm('q-nodir', profiles[x86], disk, { assets: {}, engine: 'qemu' }));
      r.badDir = await attempt(() => c.startVm('q-baddir', profiles[x86], disk,
        { assets: { qemuDir: `${qemuDir}nope/` }, engine: 'qemu' }));
      r.v86x64 = await attempt(() => c.startVm('q-v86', profiles['linux-x86_64-pc-nographic'], disk, { engine: 'v86' }));
      return r;
    }, [disk, `${qemuHost.url}/`, X86, tooMuch]);
    // The VM's worker reports its capabilities when it comes up for the start.
    assert.ok(out.caps, 'the worker reported no Memory64');
    assert.ok(out.caps.issues.some((i) => i.code === 'no-memory64'), JSON.stringify(out.caps.issues));
    assert.equal(out.noMemory64.error, 'unsupported', JSON.stringify(out.noMemory64));
    assert.match(out.noMemory64.message, /Memory64/);
    assert.match(out.noMemory64.message, /Chrome or Edge 133 or later, or Firefox 134 or later/);
    // The wasm64 plan lowers its memory: the build under test needs no Memory64.
    if (qemuBuild().wasm_cpu === 'wasm64') assert.equal(ownNeedsMemory64, false, 'the wasm64 build needs Memory64');
    assert.equal(out.tooBig.error, 'unsupported', JSON.stringify(out.tooBig));
    assert.match(out.tooBig.message, new RegExp(`${tooMuch} MiB .*at most ${limit} MiB`));
    assert.equal(out.noDir.error, 'invalid-inputs', JSON.stringify(out.noDir));
    assert.match(out.noDir.message, /qemuDir/);
    assert.equal(out.badDir.error, 'fetch', JSON.stringify(out.badDir));
    assert.equal(out.v86x64.error, 'unsupported');
    // Nothing but manifests was fetched: no module, no firmware, no disk byte.
    const qemuGets = (await qemuHost.log()).map((l) => l.split('\t')[1]);
    assert.deepEqual([...new Set(qemuGets)].sort(), ['/nope/qemu-build.json', '/qemu-build.json']);
    assert.equal(qemuGets.filter((p) => p === '/qemu-build.json').length, 2, 'the Memory64 and RAM checks read the manifest, nothing else');
    assert.deepEqual((await env.images.log()).slice(logStart), []);
    await context.close();
  } finally {
    await qemuHost.stop();
    rmSync(qemuRoot, { recursive: true, force: true });
    dropProfile(profile);
  }
});

test('QEMU engine: a disk host that goes away under a running guest is an I/O error, not a hang', async (t) => {
  if (missing) return t.skip(`QEMU build missing: ${missing}`);
  const profile = newProfile();
  const root = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-qemu-gone-'));
  cpSync(join(env.imageRoot, 'x86-bios.qcow2'), join(root, 'x86-bios.qcow2'));
  const host = await serve(root);
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'qemu-gone');
    const id = X86;
    assert.deepEqual(await startQemu(page, 'q-gone', id, { disk: `${host.url}/x86-bios.qcow2` }), { ok: undefined });
    await waitBanner(page, 'q-gone', X86_BANNER);
    await host.stop();
    // Wait for the whole reply line and the next prompt: serial arrives in batches.
    const reply = await converse(page, 'q-gone', 'read 8000', '\r\n> ', 120000);
    assert.match(reply, /ERR disk status [0-9A-F]{2}/);
    const errors = await page.evaluate(() => events.filter((e) => e.type === 'error' && e.vmId === 'q-gone').map((e) => e.args[0]));
    assert.ok(errors.some((e) => e.code === 'storage'), JSON.stringify(errors));
    // The guest still answers.
    await converse(page, 'q-gone', 'echo still here', 'still here\r\n> ', 60000);
    await page.evaluate(() => client.stopVm('q-gone', true));
    await context.close();
  } finally {
    await host.stop();
    rmSync(root, { recursive: true, force: true });
    dropProfile(profile);
  }
});

test('QEMU engine: refused with the COOP/COEP fix when the page is not cross-origin isolated', async () => {
  // Needs no QEMU build: the check comes before anything is loaded.
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'qemu-noiso');
    await page.goto(`${env.web.url}${NO_ISOLATION}/page.html`);
    await page.waitForFunction(() => document.title === 'ready');
    const got = await startQemu(page, 'q-noiso', 'linux-x86_64-pc-nographic');
    assert.equal(got.error, 'unsupported', JSON.stringify(got));
    assert.match(got.message, /Cross-Origin-Opener-Policy: same-origin/);
    assert.match(got.message, /Cross-Origin-Embedder-Policy: require-corp/);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

for (const [id, args, banner] of [
  [X86, (img) => ['--disk', join(img, 'x86-bios.qcow2')], X86_BANNER],
  ['linux-aarch64-virt-nographic', (img) => ['--kernel', join(img, 'aarch64-virt.img'), '--disk', join(img, 'x86-bios.qcow2')], ARM_BANNER],
].filter(([id]) => missing || runsProfile(id))) {
  test(`headless runner: --engine qemu boots ${id} and bridges serial`, async (t) => {
    if (missing) return t.skip(`QEMU build missing: ${missing}`);
    const bin = join(TARGET, 'debug', 'examples', 'headless');
    assert.ok(existsSync(bin), `${bin} is missing: cargo build -p qemuweb-runtime --example headless`);
    // Its own process group, killed by a watchdog after 300 s and in `finally`.
    const runner = startGroup(bin, ['--profile', id, ...args(env.imageRoot), '--engine', 'qemu',
      '--qemu-dir', process.env.QEMUWEB_QEMU_DIR], { name: `headless runner (qemu, ${id})`, limitMs: 300000 });
    try {
      await runner.waitFor(`${banner}\r\n> `, 180000);
      runner.child.stdin.write('echo via qemu runner\n');
      await runner.waitFor('via qemu runner\r\n> ', 180000);
      runner.child.stdin.end();
      assert.equal((await runner.exit).code, 0, runner.output().err);
    } finally {
      await runner.stop();
    }
  });
}
