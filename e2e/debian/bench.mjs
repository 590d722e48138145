// Benchmark (not a test): real Debian disks (scripts/debian-disk), the full boot to the root
// shell prompt, in one run:
//   - amd64 and arm64: page start -> prompt on the QEMU engine (wasm64 module; QemuClient, the
//     qcow2 over HTTP from 127.0.0.1) against native qemu-system-x86_64/-aarch64 (TCG) from
//     spawn -> prompt on the same image; ratios; bytes fetched over HTTP against the image size;
//   - i386 (the JIT issue's row): page start -> prompt on QEMU-wasm against the v86 engine
//     (both through QemuClient, same qcow2), and native qemu-system-i386 (TCG).
// SYSLINUX's 5 s prompt is skipped with Enter on every side alike. Each QEMU-wasm row also
// prints the engine's last `execution` event at the prompt (JIT or interpreter, blocks
// compiled, time spent translating, compiling and instantiating). The `tci` engine runs the
// same module with its JIT off (startVm's `qemu: {jit: false}`).
//
//   node e2e/debian/bench.mjs [--runs N] [--arch amd64,arm64,i386] [--engines native,qemu,tci,v86]
//                             [--results FILE] [--boot-minutes M]
//
// Each wait (SYSLINUX's prompt, the shell prompt) is bounded by M minutes (20 by default, over
// three times the slowest recent full boot, 6 minutes); a boot that does not get there fails
// with its serial output's tail instead of holding the machine.
//
// --engines runs only those rows; --results FILE keeps the measurements (JSON) across
// invocations, adding to what FILE holds, so rows measured apart are printed and divided
// together (say so when quoting such ratios: the machine's load differs between runs).
//
// Rows whose QEMU module is missing are left out with a note. Needs what scripts/e2e-debian.sh
// page builds (scripts/bench-runtime.sh --debian does that, then runs this).
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, newProfile } from '../lib/browser.mjs';
import { dropProfile, openPage, setUp } from '../runtime/common.mjs';
import { debianDisks, NativeGuest, nativeIo, steps } from './common.mjs';
import { executionStats, pageIo, publish, qemuMissing, qemuTcg, startDebian } from './page.mjs';

const argv = process.argv.slice(2);
const opt = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
/** The number option `name` (`dflt` when absent), refused unless positive. */
const positive = (name, metavar, dflt) => {
  const v = Number(opt(name, dflt));
  if (!(v > 0)) throw new Error(`${name} ${metavar}: a positive number`);
  return v;
};
const runs = positive('--runs', 'N', '1');
const archs = opt('--arch', 'amd64,arm64,i386').split(',');
const engines = opt('--engines', 'native,qemu,v86').split(',');
const resultsFile = opt('--results', null);
const BOOT_MS = positive('--boot-minutes', 'M', '20') * 60000;

const disks = debianDisks(archs);
const env = await setUp();
for (const arch of archs) publish(env, arch, disks[arch]);
const profile = newProfile();
const context = await launch(profile);
const saved = resultsFile && existsSync(resultsFile) ? JSON.parse(readFileSync(resultsFile, 'utf8')) : {};
const results = saved.results ?? {};
const record = (name, ms) => (results[name] ??= []).push(ms);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fetchedBytes = saved.fetchedBytes ?? {};
const jitStats = saved.jitStats ?? {};

/** Native QEMU (TCG) on an overlay of the image: ms from spawn to the root shell prompt. */
async function native(name, arch) {
  const d = disks[arch];
  const { execFileSync } = await import('node:child_process');
  const overlay = join(env.imageRoot, `${arch}-native-${Date.now()}.qcow2`);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', d.disk, '-F', 'qcow2', overlay]);
  const g = new NativeGuest(d, overlay, { limitS: BOOT_MS / 1000 });
  try {
    const io = nativeIo(g);
    await steps.bootPrompt(io, d.boot, '', BOOT_MS);
    record(name, await steps.rootShell(io, d.boot, BOOT_MS));
  } finally {
    await g.kill();
  }
}

/** Ours: a fresh page, a fresh VM id (an empty overlay); ms from page start to the prompt. */
async function ours(name, arch, engine, qemu) {
  const d = disks[arch];
  const page = await openPage(context, env.web, name);
  const vm = `bench-${arch}-${Date.now()}`;
  await env.images.log();
  const started = await startDebian(page, env, arch, d, vm, { engine, qemu });
  if (!started || started.error) throw new Error(`${name}: ${JSON.stringify(started)}`);
  const io = pageIo(page, vm);
  await steps.bootPrompt(io, d.boot, '', BOOT_MS);
  record(name, await steps.rootShell(io, d.boot, BOOT_MS));
  if (engine === 'qemu') jitStats[name] = await executionStats(page, vm);
  const log = (await env.images.log()).map((l) => l.split('\t')).filter(([m, p]) => m === 'GET' && p.startsWith(`/${arch}/`));
  fetchedBytes[name] = log.reduce((n, g) => n + Number(g[4]), 0);
  await page.evaluate((vm) => client.stopVm(vm, true), vm);
  await page.close();
}

const rows = [];
try {
  for (let i = 0; i < runs; i++) {
    for (const arch of archs) {
      const contenders = [];
      if (engines.includes('native')) contenders.push(() => native(`native ${arch}`, arch));
      if (engines.includes('qemu')) {
        if (!qemuMissing(arch)) contenders.push(() => ours(`qemu-wasm ${arch}`, arch, 'qemu'));
        else if (i === 0) console.error(`!! ${arch}: no QEMU module (${qemuMissing(arch)}): its QEMU-wasm row is left out`);
      }
      if (engines.includes('tci') && !qemuMissing(arch) && qemuTcg(arch) === 'jit') {
        contenders.push(() => ours(`qemu-wasm-tci ${arch}`, arch, 'qemu', { jit: false }));
      }
      if (arch === 'i386' && engines.includes('v86')) contenders.push(() => ours('v86 i386', arch, 'v86'));
      for (const c of i % 2 ? contenders.reverse() : contenders) await c();
    }
  }
} finally {
  await context.close();
  dropProfile(profile);
  await env.tearDown();
}

if (resultsFile) writeFileSync(resultsFile, JSON.stringify({ results, fetchedBytes, jitStats }, null, 1));
const line = (name) => `  ${name.padEnd(16)} median ${(median(results[name]) / 1000).toFixed(1).padStart(7)} s   runs: ${results[name].map((x) => (x / 1000).toFixed(1)).join(', ')}`;
const ratio = (a, b) => (results[a] && results[b] ? (median(results[a]) / median(results[b])).toFixed(2) : 'n/a');
console.log(`Debian bookworm, full boot to the root shell prompt (${runs} run(s) each; page rows from page start)`);
for (const arch of archs) {
  if (!qemuMissing(arch)) console.log(`  qemu-wasm ${arch}: TCG ${qemuTcg(arch)} (qemu-build.json of ${process.env.QEMUWEB_QEMU64_DIR || process.env.QEMUWEB_QEMU_DIR})`);
}
for (const arch of archs) {
  const d = disks[arch];
  for (const n of [`qemu-wasm ${arch}`, `qemu-wasm-tci ${arch}`, `v86 ${arch}`, `native ${arch}`]) if (results[n]) rows.push(line(n));
  if (results[`qemu-wasm ${arch}`]) rows.push(`  ratio qemu-wasm ${arch} / native TCG: ${ratio(`qemu-wasm ${arch}`, `native ${arch}`)}`);
  if (results[`qemu-wasm-tci ${arch}`]) rows.push(`  ratio qemu-wasm TCI ${arch} / JIT: ${ratio(`qemu-wasm-tci ${arch}`, `qemu-wasm ${arch}`)}`);
  for (const n of [`qemu-wasm ${arch}`, `qemu-wasm-tci ${arch}`]) {
    const j = jitStats[n];
    if (!results[n]) continue;
    if (!j) rows.push(`  ${n}: no execution event by the prompt`);
    else rows.push(`  ${n} at the prompt: ${j.mode}, ${j.blocksCompiled} blocks compiled in ${j.modules} modules ` +
      `(${Math.round(j.wasmBytes / 1024)} KiB), ${j.refused} refused, ${j.flushes} flushes; compiling ` +
      `${((j.translateMs + j.compileMs + j.instantiateMs) / 1000).toFixed(2)} s (translate ${(j.translateMs / 1000).toFixed(2)} s, ` +
      `WebAssembly.Module ${(j.compileMs / 1000).toFixed(2)} s, instantiate ${(j.instantiateMs / 1000).toFixed(2)} s)`);
  }
  if (arch === 'i386') {
    rows.push(`  ratio qemu-wasm i386 / v86 engine: ${ratio('qemu-wasm i386', 'v86 i386')}`);
    rows.push(`  ratio v86 engine i386 / native TCG: ${ratio('v86 i386', 'native i386')}`);
  }
  const size = statSync(d.disk).size + (d.boot.bootloader === 'none' ? statSync(d.kernel).size + statSync(d.initrd).size : 0);
  for (const n of [`qemu-wasm ${arch}`, `qemu-wasm-tci ${arch}`, `v86 ${arch}`]) {
    if (fetchedBytes[n] !== undefined) rows.push(`  ${n}: fetched ${fetchedBytes[n]} bytes over HTTP of ${size} (${(100 * fetchedBytes[n] / size).toFixed(1)} %; image${d.boot.bootloader === 'none' ? ' + kernel + initramfs' : ''})`);
  }
}
console.log(rows.join('\n'));
