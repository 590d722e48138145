// Benchmark (not a test): page start to the test guest's banner, and to the Linux shell
// prompt, through QemuClient (worker, storage stack, v86 engine) against v86 used directly
// with the same guest, in the same Chromium run. With a QEMU build (QEMUWEB_QEMU_DIR), also
// QemuClient on the QEMU engine (the i386 profile on the wasm64 qemu-system-x86_64) against
// the v86 engine and against native qemu-system-i386 (TCG) started from this process. Prints
// medians and ratios. The wasm64 engine against native QEMU on 64-bit profiles:
// bench-qemu.mjs.
//
//   node e2e/runtime/bench.mjs [--runs N] [--linux]
//
// Needs what scripts/e2e-tests.sh builds; --linux also runs scripts/linux-guest (cached).
import { spawn } from 'node:child_process';
import { copyFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { installQemu, QEMU_ASSETS, qemuMissing } from './qemu-assets.mjs';
import { launch, newProfile } from '../lib/browser.mjs';
import { dropProfile, linuxGuest, openPage, setUp } from './common.mjs';

const argv = process.argv.slice(2);
const runs = Number(argv[argv.indexOf('--runs') + 1]) || (argv.includes('--runs') ? NaN : 5);
const withLinux = argv.includes('--linux');
if (!(runs > 0)) throw new Error('--runs N: a positive number');

const env = await setUp();
// Both contenders read the images from the page's own origin (the static server, with Range).
for (const f of ['x86-bios.qcow2', 'x86-bios.raw']) copyFileSync(join(env.imageRoot, f), join(env.webRoot, f));
if (withLinux) {
  const [kernel, initrd] = linuxGuest();
  copyFileSync(kernel, join(env.webRoot, 'bzImage'));
  copyFileSync(initrd, join(env.webRoot, 'initrd.img'));
}
const qemuMissingWhy = qemuMissing();
if (qemuMissingWhy) {
  console.error(`!! QEMU module not built (${qemuMissingWhy}): the QEMU-wasm rows are left out`);
} else {
  installQemu(env.webRoot);
}
const profile = newProfile();
const context = await launch(profile);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = {};
const record = (name, ms) => (results[name] ??= []).push(ms);

/** Ours: a fresh page; ms from navigation start to `marker` on the VM's serial output. */
async function ours(name, inputs, marker, memoryMiB, engine = 'v86') {
  const page = await openPage(context, env.web, name);
  const vm = `bench-${Date.now()}`;
  const ms = await page.evaluate(async ([vm, inputs, marker, memoryMiB, engine, qemuAssets]) => {
    window.client = engine === 'qemu' ? makeClient({ workerUrl: './pkg/worker.js', assets: qemuAssets }) : makeClient();
    await client.init();
    await client.startVm(vm, profiles['linux-i386-pc-nographic'], inputs, { overrides: { memoryMiB }, engine });
    const at = await waitSerial(vm, marker, 0, 180000);
    await client.stopVm(vm, true);
    return at;
  }, [vm, inputs, marker, memoryMiB, engine, QEMU_ASSETS]);
  await page.close();
  record(name, ms);
}

/** v86 directly: a fresh page; ms from navigation start to `marker` on COM1. */
async function direct(name, options, marker) {
  const page = await context.newPage();
  await page.goto(`${env.web.url}/bench-v86.html`);
  await page.waitForFunction(() => document.title === 'ready');
  const ms = await page.evaluate(([options, marker]) => runV86(options, marker), [options, marker]);
  await page.close();
  record(name, ms);
}

/** Native qemu-system-i386 (TCG): ms from spawning it to `marker` on its serial stdout. */
function native(name, image, marker) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('qemu-system-i386', ['-nodefaults', '-no-user-config', '-machine', 'pc', '-accel', 'tcg',
      '-m', '64', '-display', 'none', '-serial', 'stdio', '-snapshot',
      '-drive', `file=${image},format=qcow2,if=ide,index=0,media=disk`], { stdio: ['pipe', 'pipe', 'ignore'] });
    let text = '';
    let done = false;
    const timer = setTimeout(() => { child.kill(); reject(new Error(`native: no ${marker}: ${JSON.stringify(text)}`)); }, 60000);
    child.stdout.on('data', (d) => {
      text += d;
      if (!done && text.includes(marker)) {
        done = true;
        record(name, performance.now() - t0);
        clearTimeout(timer);
        child.kill();
        resolve();
      }
    });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

const img = env.web.url;
const rawSize = statSync(join(env.imageRoot, 'x86-bios.raw')).size;
const banner = 'QEMUWEB-GUEST x86 v1';
try {
  for (let i = 0; i < runs; i++) {
    // Alternate the order so neither side always runs on a warmer browser.
    const steps = [
      () => ours('ours qcow2', { disk: { source: { kind: 'url', url: `${img}/x86-bios.qcow2` } } }, banner, 64),
      () => ours('ours raw', { disk: { source: { kind: 'url', url: `${img}/x86-bios.raw` } } }, banner, 64),
      () => direct('v86 raw', { memory_size: 64 << 20, hda: { url: `${img}/x86-bios.raw`, async: true, size: rawSize } }, banner),
      () => native('native qemu', join(env.imageRoot, 'x86-bios.qcow2'), banner),
    ];
    if (!qemuMissingWhy) {
      steps.push(() => ours('qemu-wasm', { disk: { source: { kind: 'url', url: `${img}/x86-bios.qcow2` } } }, banner, 64, 'qemu'));
    }
    for (const s of i % 2 ? steps.reverse() : steps) await s();
  }
  if (withLinux) {
    const linuxRuns = Math.max(1, Math.min(runs, 3));
    const cmdline = 'console=ttyS0 quiet';
    for (let i = 0; i < linuxRuns; i++) {
      const steps = [
        () => ours('ours linux', { kernel: { kind: 'url', url: `${img}/bzImage` }, initrd: { kind: 'url', url: `${img}/initrd.img` }, kernelCmdline: cmdline }, 'qemuweb# ', 256),
        () => direct('v86 linux', { memory_size: 256 << 20, bzimage: { url: `${img}/bzImage` }, initrd: { url: `${img}/initrd.img` }, cmdline }, 'qemuweb# '),
      ];
      for (const s of i % 2 ? steps.reverse() : steps) await s();
    }
  }
} finally {
  await context.close();
  dropProfile(profile);
  await env.tearDown();
}

const line = (name) => `${name.padEnd(12)} median ${median(results[name]).toFixed(0).padStart(6)} ms   runs: ${results[name].map((x) => x.toFixed(0)).join(', ')}`;
console.log(`page start -> x86 test guest banner (${runs} runs each, one Chromium)`);
const ratio = (a, b) => (median(results[a]) / median(results[b])).toFixed(2);
for (const n of ['ours qcow2', 'ours raw', 'v86 raw', 'qemu-wasm', 'native qemu']) if (results[n]) console.log('  ' + line(n));
console.log(`  ratio ours qcow2 / v86: ${ratio('ours qcow2', 'v86 raw')}`);
console.log(`  ratio ours raw   / v86: ${ratio('ours raw', 'v86 raw')}`);
if (results['qemu-wasm']) {
  console.log(`  ratio qemu-wasm (QemuClient, qcow2) / v86 engine (QemuClient, qcow2): ${ratio('qemu-wasm', 'ours qcow2')}`);
  console.log(`  ratio qemu-wasm / native qemu-system-i386 (TCG): ${ratio('qemu-wasm', 'native qemu')}`);
}
console.log(`  ratio v86 engine (QemuClient, qcow2) / native qemu-system-i386 (TCG): ${ratio('ours qcow2', 'native qemu')}`);
if (withLinux) {
  console.log('page start -> Linux shell prompt');
  for (const n of ['ours linux', 'v86 linux']) console.log('  ' + line(n));
  console.log(`  ratio ours / v86: ${(median(results['ours linux']) / median(results['v86 linux'])).toFixed(2)}`);
}
