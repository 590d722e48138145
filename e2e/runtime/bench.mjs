// Benchmark (not a test): page start to the test guest's banner, and to the Linux shell
// prompt, through QemuClient (worker, storage stack, v86 engine) against v86 used directly
// with the same guest, in the same Chromium run. Prints medians and ratios.
//
//   node e2e/runtime/bench.mjs [--runs N] [--linux]
//
// Needs what scripts/e2e-tests.sh builds; --linux also runs scripts/linux-guest (cached).
import { copyFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
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
const profile = newProfile();
const context = await launch(profile);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = {};
const record = (name, ms) => (results[name] ??= []).push(ms);

/** Ours: a fresh page; ms from navigation start to `marker` on the VM's serial output. */
async function ours(name, inputs, marker, memoryMiB) {
  const page = await openPage(context, env.web, name);
  const vm = `bench-${Date.now()}`;
  const ms = await page.evaluate(async ([vm, inputs, marker, memoryMiB]) => {
    window.client = makeClient();
    await client.init();
    await client.startVm(vm, profiles['linux-i386-pc-nographic'], inputs, { memoryMiB });
    const at = await waitSerial(vm, marker, 0, 180000);
    await client.stopVm(vm, true);
    return at;
  }, [vm, inputs, marker, memoryMiB]);
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
    ];
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
for (const n of ['ours qcow2', 'ours raw', 'v86 raw']) console.log('  ' + line(n));
console.log(`  ratio ours qcow2 / v86: ${(median(results['ours qcow2']) / median(results['v86 raw'])).toFixed(2)}`);
console.log(`  ratio ours raw   / v86: ${(median(results['ours raw']) / median(results['v86 raw'])).toFixed(2)}`);
if (withLinux) {
  console.log('page start -> Linux shell prompt');
  for (const n of ['ours linux', 'v86 linux']) console.log('  ' + line(n));
  console.log(`  ratio ours / v86: ${(median(results['ours linux']) / median(results['v86 linux'])).toFixed(2)}`);
}
