// Benchmark (not a test), one run: page start to the shell prompt of a disk image on the
// v86 engine, by a cold boot against a resume of the state `qemuweb prepare --boot-state`
// published beside it, each in a fresh browser profile, with the bytes the image host sent
// for each; and a second cold boot of the same image in the first profile (the persistent
// read cache keeps what the first one fetched).
//
//   node e2e/runtime/bench-snapshot.mjs DISK --prompt TEXT [--memory MIB] [--timeout S]
//
// DISK is any image `qemuweb prepare` takes (scripts/bench-snapshot passes the Debian i386
// disk of scripts/debian-disk). Needs what scripts/e2e-tests.sh builds and the qemuweb CLI.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { launch, newProfile } from '../lib/browser.mjs';
import { REPO, TARGET } from '../lib/server.mjs';
import { dropProfile, openPage, setUp, V86_BUILD } from './common.mjs';

const argv = process.argv.slice(2);
const opt = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
const disk = argv.find((a, i) => !a.startsWith('--') && !argv[i - 1]?.startsWith('--'));
const prompt = opt('--prompt');
const memory = Number(opt('--memory', '0')) || undefined;
const timeout = Number(opt('--timeout', '900'));
if (!disk || !prompt) throw new Error('usage: bench-snapshot.mjs DISK --prompt TEXT [--memory MIB] [--timeout S]');

const QEMUWEB = join(TARGET, 'debug', 'qemuweb');
const work = mkdtempSync(join(tmpdir(), 'qemuweb-bench-snapshot-'));
const site = join(work, 'site');
const mib = (n) => `${(n / (1 << 20)).toFixed(2)} MiB`;

console.log(`preparing ${disk} with its boot state (boots it once headless, until ${JSON.stringify(prompt)})`);
let t = performance.now();
execFileSync(QEMUWEB, ['prepare', disk, site, '--boot-state', '--boot-until', prompt, '--boot-timeout', String(timeout),
  '--v86-dir', V86_BUILD, ...(memory ? ['--memory', String(memory)] : [])], { stdio: ['ignore', 'ignore', 'inherit'] });
console.log(`prepare --boot-state took ${((performance.now() - t) / 1000).toFixed(0)} s`);
const vmJson = JSON.parse(readFileSync(join(site, 'vm.json'), 'utf8'));
const state = JSON.parse(readFileSync(join(site, 'boot-state', 'boot-state.json'), 'utf8'));

const env = await setUp();
cpSync(join(site, 'disk.qcow2'), join(env.imageRoot, 'disk.qcow2'));
cpSync(join(site, 'boot-state'), join(env.imageRoot, 'boot-state'), { recursive: true });
const diskUrl = `${env.images.url}/disk.qcow2`;
const inputs = { ...vmJson.inputs, disk: { ...vmJson.inputs.disk, source: { kind: 'url', url: diskUrl } } };
const overrides = vmJson.overrides;

/** Bytes the image host sent since the last call, by path prefix. */
let seen = 0;
async function sent() {
  const lines = (await env.images.log()).map((l) => l.split('\t')).filter(([m]) => m === 'GET');
  const fresh = lines.slice(seen);
  seen = lines.length;
  const sum = (f) => fresh.filter(([, p]) => f(p)).reduce((n, g) => n + Number(g[4]), 0);
  return { disk: sum((p) => p === '/disk.qcow2'), state: sum((p) => p.startsWith('/boot-state/')), requests: fresh.length };
}

/** A run in `context`: page start to the prompt (ms) and what the page fetched besides the images. */
async function run(context, name, resume) {
  const page = await openPage(context, env.web, name);
  await sent();
  const vm = `bench-${name}`;
  const result = await page.evaluate(async ([vm, profile, inputs, overrides, resume, prompt, ms]) => {
    window.client = makeClient();
    await client.init();
    await client.startVm(vm, profiles[profile], inputs, { overrides, resume });
    // A resumed guest sits at its prompt already: ask for a new one.
    if (resume) client.sendSerialIn(vm, '\r');
    const at = await waitSerial(vm, prompt, 0, ms);
    await client.stopVm(vm, true);
    const assets = performance.getEntriesByType('resource').reduce((n, e) => n + (e.transferSize || 0), 0);
    return { at, assets };
  }, [vm, vmJson.profile.id, inputs, overrides, resume, prompt, timeout * 1000]);
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
console.log(`\nimage ${disk}: published state ${mib(state.fileBytes)} in ${state.parts.length} parts`);
console.log('run          page start -> prompt   disk bytes     state bytes    page assets (transferSize)');
for (const r of results) {
  console.log(`${r.name.padEnd(12)} ${(r.ms / 1000).toFixed(1).padStart(10)} s          ${mib(r.disk).padStart(12)}   ${mib(r.state).padStart(12)}   ${mib(r.assets).padStart(12)}`);
}
console.log(`\nresume vs cold boot: ${(cold.ms / resume.ms).toFixed(1)}x faster; bytes from the image host ${mib(resume.disk + resume.state)} vs ${mib(cold.disk)}`);
console.log(`second cold boot of the same image: ${again.disk} bytes of the disk fetched, ${((100 * again.disk) / cold.disk).toFixed(3)} % of the first (${cold.disk} bytes)`);
console.log(`(second cold boot: ${(again.ms / 1000).toFixed(1)} s to the prompt)`);
