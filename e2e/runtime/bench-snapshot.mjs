// Benchmark (not a test), one run: page start to the shell prompt of a disk image on the
// v86 engine (or the QEMU engine), by a cold boot against a resume of the state `qemuweb
// prepare --boot-state` published beside it, each in a fresh browser profile, with the
// bytes the image host sent for each; and a second cold boot of the same image in the first
// profile (the persistent read cache keeps what the first one fetched).
//
//   node e2e/runtime/bench-snapshot.mjs DISK --prompt TEXT [--memory MIB] [--timeout S]
//        [--engine qemu [--profile ID]]
//   node e2e/runtime/bench-snapshot.mjs --kernel K --initrd I --append CMDLINE --prompt TEXT
//        [--engine qemu] [--profile ID] [--memory MIB] [--timeout S]
//
// DISK is any image `qemuweb prepare` takes (scripts/bench-snapshot passes the Debian i386
// disk of scripts/debian-disk). A kernel boot (scripts/linux-guest's) has no disk image for
// `prepare`: its state is saved by `qemuweb boot --browser --save` over a 1 MiB scratch disk,
// in the same published format, and the page fetches the kernel and initrd too (counted
// with the disk's bytes). `--engine qemu` needs QEMUWEB_QEMU_DIR. Needs what
// scripts/e2e-tests.sh builds and the qemuweb CLI.
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { launch, newProfile } from '../lib/browser.mjs';
import { REPO, TARGET } from '../lib/server.mjs';
import { dropProfile, openPage, setUp, V86_BUILD } from './common.mjs';
import { installQemu, QEMU_ASSETS, qemuMissing } from './qemu-assets.mjs';

const argv = process.argv.slice(2);
const opt = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
const disk = argv.find((a, i) => !a.startsWith('--') && !argv[i - 1]?.startsWith('--'));
const prompt = opt('--prompt');
const memory = Number(opt('--memory', '0')) || undefined;
const timeout = Number(opt('--timeout', '900'));
const engine = opt('--engine', 'v86');
const kernel = opt('--kernel');
const initrd = opt('--initrd');
const append = opt('--append');
const qemu = engine === 'qemu';
const profileId = opt('--profile', qemu ? 'linux-x86_64-pc-nographic' : 'linux-i386-pc-nographic');
if (!(disk || kernel) || !prompt || !['v86', 'qemu'].includes(engine)) {
  throw new Error('usage: bench-snapshot.mjs DISK|--kernel K [--initrd I] [--append CMDLINE] --prompt TEXT [--engine v86|qemu] [--profile ID] [--memory MIB] [--timeout S]');
}
if (qemu && qemuMissing()) throw new Error(`QEMU build missing: ${qemuMissing()}`);

const QEMUWEB = join(TARGET, 'debug', 'qemuweb');
const work = mkdtempSync(join(tmpdir(), 'qemuweb-bench-snapshot-'));
const site = join(work, 'site');
const mib = (n) => `${(n / (1 << 20)).toFixed(2)} MiB`;
const engineArgs = ['--engine', engine, '--profile', profileId, ...(memory ? ['--memory', String(memory)] : []),
  ...(qemu ? [] : ['--v86-dir', V86_BUILD])];

/**
 * `qemuweb boot --browser --save` of the kernel over `scratch`, its input closed once the
 * prompt is on its console: the state in `scratch.boot-state/`.
 */
function saveKernelBoot(scratch) {
  const args = ['boot', '--browser', ...engineArgs, '--kernel', kernel, ...(initrd ? ['--initrd', initrd] : []),
    ...(append ? ['--append', append] : []), '--save', '--timeout', String(timeout), scratch];
  return new Promise((resolve, reject) => {
    const child = spawn(QEMUWEB, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      // A moment of quiet at the prompt, as prepare --boot-until waits, then the end of input saves.
      if (out.includes(prompt) && !child.stdin.writableEnded) setTimeout(() => child.stdin.end(), 2000);
    });
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`qemuweb boot --save exited ${code}: ${out.slice(-2000)}`))));
  });
}

let t = performance.now();
let vmJson;
let stateDir;
let diskName;
if (kernel) {
  diskName = 'scratch.raw';
  const scratch = join(work, diskName);
  writeFileSync(scratch, Buffer.alloc(1 << 20));
  console.log(`booting ${kernel} once headless on ${engine} until ${JSON.stringify(prompt)} to save its state`);
  await saveKernelBoot(scratch);
  console.log(`boot --browser --save took ${((performance.now() - t) / 1000).toFixed(0)} s`);
  stateDir = `${scratch}.boot-state`;
  vmJson = {
    profile: { id: profileId },
    inputs: { disk: { source: null, format: 'raw' }, kernelCmdline: append },
    overrides: memory ? { memoryMiB: memory } : undefined,
  };
} else {
  diskName = 'disk.qcow2';
  console.log(`preparing ${disk} with its boot state on ${engine} (boots it once headless, until ${JSON.stringify(prompt)})`);
  execFileSync(QEMUWEB, ['prepare', disk, site, ...engineArgs, '--boot-state', '--boot-until', prompt,
    '--boot-timeout', String(timeout)], { stdio: ['ignore', 'ignore', 'inherit'] });
  console.log(`prepare --boot-state took ${((performance.now() - t) / 1000).toFixed(0)} s`);
  vmJson = JSON.parse(readFileSync(join(site, 'vm.json'), 'utf8'));
  stateDir = join(site, 'boot-state');
}
const state = JSON.parse(readFileSync(join(stateDir, 'boot-state.json'), 'utf8'));

const env = await setUp();
if (qemu) installQemu(env.webRoot);
cpSync(kernel ? join(work, diskName) : join(site, diskName), join(env.imageRoot, diskName));
cpSync(stateDir, join(env.imageRoot, 'boot-state'), { recursive: true });
const diskUrl = `${env.images.url}/${diskName}`;
const inputs = { ...vmJson.inputs, disk: { ...vmJson.inputs.disk, source: { kind: 'url', url: diskUrl } } };
if (kernel) {
  cpSync(kernel, join(env.imageRoot, 'kernel'));
  inputs.kernel = { kind: 'url', url: `${env.images.url}/kernel` };
  if (initrd) {
    cpSync(initrd, join(env.imageRoot, 'initrd'));
    inputs.initrd = { kind: 'url', url: `${env.images.url}/initrd` };
  }
}
const overrides = vmJson.overrides;

/** Bytes the image host sent since the last call, by path prefix. */
let seen = 0;
async function sent() {
  const lines = (await env.images.log()).map((l) => l.split('\t')).filter(([m]) => m === 'GET');
  const fresh = lines.slice(seen);
  seen = lines.length;
  const sum = (f) => fresh.filter(([, p]) => f(p)).reduce((n, g) => n + Number(g[4]), 0);
  return { disk: sum((p) => !p.startsWith('/boot-state/')), state: sum((p) => p.startsWith('/boot-state/')), requests: fresh.length };
}

/** A run in `context`: page start to the prompt (ms) and what the page fetched besides the images. */
async function run(context, name, resume) {
  const page = await openPage(context, env.web, name);
  await sent();
  const vm = `bench-${name}`;
  const result = await page.evaluate(async ([vm, profile, inputs, overrides, resume, prompt, ms, engine, qemuAssets]) => {
    window.client = engine === 'qemu' ? makeClient({ workerUrl: './pkg/worker.js', assets: qemuAssets }) : makeClient();
    await client.init();
    await client.startVm(vm, profiles[profile], inputs, { overrides, resume, engine });
    // A resumed guest sits at its prompt already: ask for a new one.
    if (resume) client.sendSerialIn(vm, '\r');
    const at = await waitSerial(vm, prompt, 0, ms);
    await client.stopVm(vm, true);
    const assets = performance.getEntriesByType('resource').reduce((n, e) => n + (e.transferSize || 0), 0);
    return { at, assets };
  }, [vm, vmJson.profile.id, inputs, overrides, resume, prompt, timeout * 1000, engine, QEMU_ASSETS]);
  await page.close();
  return { name, ms: result.at, ...(await sent()), assets: result.assets };
}

const coldProfile = newProfile();
const resumeProfile = newProfile();
const results = [];
try {
  let context = await launch(coldProfile);
  results.push(await run(context, 'cold', undefined));
  results.push(await run(context, 'cold-again', undefined));
  await context.close();
  context = await launch(resumeProfile);
  results.push(await run(context, 'resume', { kind: 'published', url: `${env.images.url}/boot-state/boot-state.json` }));
  await context.close();
} finally {
  dropProfile(coldProfile);
  dropProfile(resumeProfile);
  await env.tearDown();
  rmSync(work, { recursive: true, force: true });
}

const [cold, again, resume] = results;
console.log(`\n${engine}, ${profileId}, ${kernel ? `kernel ${kernel}` : `image ${disk}`}: published state ${mib(state.fileBytes)} in ${state.parts.length} parts`);
console.log(`run          page start -> prompt   ${kernel ? 'disk+kernel+initrd' : 'disk bytes    '} state bytes    page assets (transferSize)`);
for (const r of results) {
  console.log(`${r.name.padEnd(12)} ${(r.ms / 1000).toFixed(1).padStart(10)} s          ${mib(r.disk).padStart(12)}   ${mib(r.state).padStart(12)}   ${mib(r.assets).padStart(12)}`);
}
console.log(`\nresume vs cold boot: ${(cold.ms / resume.ms).toFixed(1)}x faster; bytes from the image host ${mib(resume.disk + resume.state)} vs ${mib(cold.disk)}`);
console.log(`second cold boot of the same image: ${again.disk} bytes of the disk fetched, ${((100 * again.disk) / cold.disk).toFixed(3)} % of the first (${cold.disk} bytes)`);
console.log(`(second cold boot: ${(again.ms / 1000).toFixed(1)} s to the prompt)`);
