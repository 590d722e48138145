// Benchmark (not a test) of the QEMU engine's wasm64 build, in one run: page start to the
// test guest's banner through QemuClient (the x86 test guest on linux-x86_64-pc-nographic
// and minimal-x86_64, the aarch64 test kernel on linux-aarch64-virt-nographic, the image a
// qcow2 over HTTP), against native qemu-system-x86_64 / qemu-system-aarch64 with TCG on the
// same image and the same profile's native command line (qemuweb-config's builder, through
// its qemu_args example); printed as medians and ratios. Also the bytes the page fetched
// over HTTP for the image against the image's size.
//
//   node e2e/runtime/bench-qemu.mjs [--runs N]      (scripts/bench-qemu.sh builds what it needs)
//
// Needs QEMUWEB_QEMU_DIR (a qemuweb-wasm-build output directory).
import { execFileSync, spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { launch, newProfile } from '../lib/browser.mjs';
import { REPO, TARGET } from '../lib/server.mjs';
import { dropProfile, openPage, setUp } from './common.mjs';
import { installQemu, QEMU_ASSETS, qemuMissing } from './qemu-assets.mjs';

const argv = process.argv.slice(2);
const runs = Number(argv[argv.indexOf('--runs') + 1]) || (argv.includes('--runs') ? NaN : 5);
if (!(runs > 0)) throw new Error('--runs N: a positive number');
const missing = qemuMissing();
if (missing) throw new Error(`QEMU build missing: ${missing}`);

const X86 = 'QEMUWEB-GUEST x86 v1';
const ARM = 'QEMUWEB-GUEST aarch64 v1';
const CASES = [
  { profile: 'linux-x86_64-pc-nographic', banner: X86 },
  { profile: 'minimal-x86_64', banner: X86 },
  { profile: 'linux-aarch64-virt-nographic', banner: ARM, kernel: 'aarch64-virt.img' },
];

const env = await setUp();
installQemu(env.webRoot);
const browserProfile = newProfile();
const context = await launch(browserProfile);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = {};
const fetched = {};
const record = (name, ms) => (results[name] ??= []).push(ms);
const image = join(env.imageRoot, 'x86-bios.qcow2');
const imageSize = statSync(image).size;

/** QemuClient on the QEMU engine in a fresh page: ms from the page's start to `banner`. */
async function wasm(c) {
  const name = `wasm64 ${c.profile}`;
  const page = await openPage(context, env.web, name);
  await env.images.log();
  const inputs = { disk: { source: { kind: 'url', url: `${env.images.url}/x86-bios.qcow2` } } };
  if (c.kernel) inputs.kernel = { kind: 'url', url: `${env.images.url}/${c.kernel}` };
  const vm = `bench-${Date.now()}`;
  const ms = await page.evaluate(async ([vm, profile, inputs, banner, assets]) => {
    window.client = makeClient({ workerUrl: './pkg/worker.js', assets });
    await client.init();
    await client.startVm(vm, profiles[profile], inputs, { engine: 'qemu' });
    const at = await waitSerial(vm, banner, 0, 300000);
    await client.stopVm(vm, true);
    return at;
  }, [vm, c.profile, inputs, c.banner, QEMU_ASSETS]);
  await page.close();
  record(name, ms);
  const bytes = (await env.images.log()).map((l) => l.split('\t'))
    .filter(([method, path]) => method === 'GET' && path === '/x86-bios.qcow2')
    .reduce((n, g) => n + Number(g[4]), 0);
  (fetched[c.profile] ??= []).push(bytes);
}

/** The profile's native command line (TCG) from qemuweb-config's builder. */
function nativeArgs(c) {
  const args = ['--profile', c.profile, '--accel', 'tcg'];
  if (c.kernel) args.push('--kernel', join(env.imageRoot, c.kernel));
  const bin = join(TARGET, 'debug', 'examples', 'qemu_args');
  const out = execFileSync(bin, [...args, image], { encoding: 'utf8', cwd: REPO });
  const line = out.split('\n').find((l) => l.startsWith('qemu-system-'));
  return line.split(' ');
}

/** Native QEMU with TCG: ms from spawning it to `banner` on its serial stdout. */
function native(c) {
  const [program, ...args] = nativeArgs(c);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(program, [...args, '-snapshot'], { stdio: ['pipe', 'pipe', 'ignore'], detached: true });
    const kill = () => { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } };
    let text = '';
    let done = false;
    const timer = setTimeout(() => { kill(); reject(new Error(`native ${c.profile}: no banner: ${JSON.stringify(text)}`)); }, 60000);
    child.stdout.on('data', (d) => {
      text += d;
      if (!done && text.includes(c.banner)) {
        done = true;
        record(`native ${c.profile}`, performance.now() - t0);
        clearTimeout(timer);
        kill();
        resolve();
      }
    });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

try {
  for (let i = 0; i < runs; i++) {
    for (const c of CASES) {
      // Alternate the order so neither side always runs on a warmer machine.
      const steps = [() => wasm(c), () => native(c)];
      for (const s of i % 2 ? steps.reverse() : steps) await s();
    }
  }
} finally {
  await context.close();
  dropProfile(browserProfile);
  await env.tearDown();
}

const line = (name) => `${name.padEnd(42)} median ${median(results[name]).toFixed(0).padStart(7)} ms   runs: ${results[name].map((x) => x.toFixed(0)).join(', ')}`;
console.log(`page start -> test guest banner, QEMU wasm64 (TCI) vs native QEMU (TCG), ${runs} runs each`);
for (const c of CASES) {
  const w = `wasm64 ${c.profile}`;
  const n = `native ${c.profile}`;
  console.log(`  ${line(w)}`);
  console.log(`  ${line(n)}`);
  console.log(`  ratio wasm64 / native (${c.profile}): ${(median(results[w]) / median(results[n])).toFixed(1)}`);
  const f = median(fetched[c.profile]);
  console.log(`  fetched over HTTP: ${f} of ${imageSize} bytes of the qcow2 image (${((100 * f) / imageSize).toFixed(1)} %)`);
}
