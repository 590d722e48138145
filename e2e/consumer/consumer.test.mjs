// The npm packages as a stranger gets them: a scratch project (fixture/, copied to a temporary
// directory, far from this repository) installs the tarballs scripts/build-npm packed
// (@qemuweb/runtime, @qemuweb/config, @qemuweb/storage, @qemuweb/firmware) plus vite,
// typescript and v86 from the registry. Every TypeScript example of the packages' READMEs
// (read from the installed packages, verbatim) and the fixture's own program type-check with
// `tsc --strict` against the generated declarations; `vite build` bundles them, and the bundle,
// served with COOP/COEP, runs in headless Chromium: the runtime README's "Boot a VM" program
// boots the x86 test guest with nothing but the installed packages, and the fixture's program
// boots it too (banner, an echo over serial), then checks listeners, an aborted start and a
// Blob disk's progress. Vite's dev server runs them too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withFreshPage } from '../lib/browser.mjs';
import { freePort, REPO, serve, TARGET, writeGuests } from '../lib/server.mjs';

const NPM_DIR = join(TARGET, 'npm');
const SEABIOS = process.env.QEMUWEB_SEABIOS_DIR || '/usr/share/seabios';
const BANNER = 'QEMUWEB-GUEST x86 v1';
const VERSION = readFileSync(join(REPO, 'Cargo.toml'), 'utf8').match(/\[workspace\.package\][^[]*?^version\s*=\s*"([^"]+)"/m)[1];

let project;

/** Runs `cmd` in the scratch project; returns { status, out } (stdout and stderr). */
function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: project, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

function mustRun(cmd, args) {
  const r = run(cmd, args);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.out}`);
  return r.out;
}

const PACKAGES = ['runtime', 'config', 'storage', 'firmware'];

/** The ```ts blocks of a README, in order. */
function tsBlocks(readme) {
  return [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

before(() => {
  const tarballs = PACKAGES.map((p) => join(NPM_DIR, `qemuweb-${p}-${VERSION}.tgz`));
  for (const t of tarballs) {
    if (!existsSync(t)) throw new Error(`${t} is missing: run scripts/build-npm`);
  }
  project = mkdtempSync(join(tmpdir(), 'qemuweb-consumer-'));
  cpSync(join(import.meta.dirname, 'fixture'), project, {
    recursive: true,
    filter: (src) => !/[/\\](node_modules|dist)([/\\]|$)/.test(src),
  });
  // The registry packages of fixture/package.json and the three tarballs, as `npm install
  // ./x.tgz` in any project would add them.
  mustRun('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs]);
  // The READMEs' examples, verbatim from the installed packages: src/readme/PACKAGE-N.ts.
  mkdirSync(join(project, 'src', 'readme'), { recursive: true });
  for (const p of ['runtime', 'config', 'storage']) {
    const readme = readFileSync(join(project, 'node_modules', '@qemuweb', p, 'README.md'), 'utf8');
    tsBlocks(readme).forEach((code, i) => writeFileSync(join(project, 'src', 'readme', `${p}-${i + 1}.ts`), code));
  }
});

after(() => {
  if (project) rmSync(project, { recursive: true, force: true });
});

/**
 * public/: SeaBIOS for the fixture's program (which names its assets itself), and the x86
 * test guest, also as images/disk.qcow2 (the disk of the README's program).
 */
async function prepareGuest() {
  const pub = join(project, 'public');
  if (existsSync(join(pub, 'images', 'x86-bios.qcow2'))) return;
  mkdirSync(join(pub, 'bios'), { recursive: true });
  for (const f of ['bios-256k.bin', 'vgabios-stdvga.bin']) cpSync(join(SEABIOS, f), join(pub, 'bios', f));
  mkdirSync(join(pub, 'images'), { recursive: true });
  await writeGuests(join(pub, 'images'));
  cpSync(join(pub, 'images', 'x86-bios.qcow2'), join(pub, 'images', 'disk.qcow2'));
}

/** Opens `url`/readme.html (the runtime README's first example): the guest's banner in the console. */
function readmeBootsInChromium(url, tag) {
  return withFreshPage(tag, async (page) => {
    let out = '';
    page.on('console', (m) => { if (m.type() === 'log') out += m.text(); });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${url}/readme.html`);
    for (let i = 0; !out.includes(`${BANNER}\r\n> `); i++) {
      assert.ok(i < 1200 && errors.length === 0, `no banner from the README's program: ${JSON.stringify(out.slice(-300))} ${errors}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // The program names no asset: its worker, v86 and SeaBIOS came from the installed packages.
  });
}

/** Opens `url`/index.html in Chromium: the program's checks, the banner, an echo. */
function bootsInChromium(url, tag, workerPattern) {
  return withFreshPage(tag, async (page) => {
    await page.goto(`${url}/index.html`);
    await page.waitForFunction(() => document.title !== 'loading', null, { timeout: 60000 });
    const state = await page.evaluate(() => ({ ...window.consumer, send: undefined }));
    assert.deepEqual(state.errors, []);
    assert.equal(state.started, true);
    assert.equal(state.caps.crossOriginIsolated, true);
    assert.deepEqual(state.caps.issues, []);
    assert.match(state.workerUrl, workerPattern(url));
    // @qemuweb/config: a command line for the profile, with the disk.
    assert.ok(Array.isArray(state.args.args) && state.args.args.length > 0, JSON.stringify(state.args));
    // @qemuweb/storage: data sector 100 of the guest starts with its LBA, then (i + 31 * 100) & 0xff.
    const expected = [100, 0, 0, 0, 0, 0, 0, 0, ...Array.from({ length: 8 }, (_, k) => (8 + k + 3100) & 0xff)];
    assert.deepEqual(state.sector, expected);

    const waitSerial = (text, from = 0) => page.waitForFunction(
      ([text, from]) => window.consumer.serial.slice(from).includes(text), [text, from], { timeout: 60000 });
    await waitSerial(`${BANNER}\r\n> `);
    const from = await page.evaluate(() => window.consumer.serial.length);
    await page.evaluate(() => window.consumer.send('echo hello from a packaged consumer'));
    await waitSerial('hello from a packaged consumer\r\n> ', from);
    assert.deepEqual(await page.evaluate(() => window.consumer.errors), []);

    // Two listeners of serialOut both heard every event; the one removed at once heard
    // none; the `once` listener one.
    const heard = await page.evaluate(() => window.consumer.heard);
    assert.ok(heard.first > 0, JSON.stringify(heard));
    assert.equal(heard.second, heard.first, JSON.stringify(heard));
    assert.equal(heard.removed, 0, JSON.stringify(heard));
    assert.equal(heard.once, 1, JSON.stringify(heard));

    // An aborted start: rejected with QemuError `aborted`, and neither its worker nor its
    // disk's Web Lock is left.
    const workers = page.workers().length;
    await page.evaluate(() => window.consumer.abortStart());
    const aborted = await page.evaluate(() => window.consumer.aborted);
    assert.deepEqual(
      { code: aborted.code, isQemuError: aborted.isQemuError, vmIds: aborted.vmIds, state: aborted.state, locks: aborted.locks },
      { code: 'aborted', isQemuError: true, vmIds: ['vm'], state: 'stopped', locks: [] },
    );
    for (let i = 0; page.workers().length !== workers; i++) {
      assert.ok(i < 100, `the aborted start left a worker: ${page.workers().map((w) => w.url()).join(', ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await page.evaluate(() => window.consumer.restartAndBlob());
    assert.equal((await page.evaluate(() => window.consumer.aborted)).restarted, true);

    // The Blob disk reported how much of the file was read, of the file's size; the start
    // went through its three phases.
    const blob = await page.evaluate(() => window.consumer.blob);
    const disk0 = blob.events.filter((e) => e.what === 'disk0');
    assert.ok(disk0.length > 0, JSON.stringify(blob.events));
    for (const e of disk0) {
      assert.equal(e.total, blob.size);
      assert.equal(e.totalOf, 'file-size');
      assert.ok(e.loaded > 0 && e.loaded <= blob.size, JSON.stringify(e));
    }
    assert.deepEqual(blob.phases, ['1/3 assets', '2/3 disks', '3/3 engine']);
    assert.deepEqual(await page.evaluate(() => window.consumer.errors), []);
  });
}

test('the tarballs install as @qemuweb/* packages of the workspace version with ES module exports, licenses and complete metadata', () => {
  for (const p of PACKAGES) {
    const dir = join(project, 'node_modules', '@qemuweb', p);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    assert.equal(pkg.name, `@qemuweb/${p}`);
    assert.equal(pkg.version, VERSION);
    for (const k of ['description', 'license', 'author', 'homepage', 'keywords', 'repository', 'bugs']) {
      assert.ok(pkg[k], `${p}: package.json has no ${k}`);
    }
    assert.ok(existsSync(join(dir, 'README.md')));
    if (p === 'firmware') {
      for (const f of ['bios-256k.bin', 'vgabios-stdvga.bin', 'COPYRIGHT', 'LGPL-3']) assert.ok(existsSync(join(dir, f)), `firmware: ${f}`);
      assert.equal(pkg.license, 'SEE LICENSE IN COPYRIGHT');
      continue;
    }
    assert.equal(pkg.license, 'MIT OR Apache-2.0');
    for (const f of ['LICENSE-MIT', 'LICENSE-APACHE']) assert.ok(existsSync(join(dir, f)), `${p}: ${f}`);
    // The README is the reference: it points at no file of the repository.
    assert.doesNotMatch(readFileSync(join(dir, 'README.md'), 'utf8'), /repository's `?[\w-]+\/|see the repository/i);
    assert.equal(pkg.type, 'module');
    const dot = pkg.exports['.'];
    assert.deepEqual(Object.keys(dot), ['types', 'import', 'default'], 'types must come first');
    for (const f of [dot.types, dot.import, pkg.types]) assert.ok(existsSync(join(dir, f)), `${p}: ${f}`);
    const wasm = readdirSync(dir).filter((f) => f.endsWith('_bg.wasm'));
    assert.equal(wasm.length, 1, `${p}: ${readdirSync(dir)}`);
    assert.ok(existsSync(join(dir, 'README.md')));
  }
  const runtime = join(project, 'node_modules', '@qemuweb', 'runtime');
  // The worker is copied verbatim by bundlers: it must not import its siblings.
  const worker = readFileSync(join(runtime, 'worker.js'), 'utf8');
  assert.doesNotMatch(worker, /^\s*import\s/m);
  assert.match(worker, /workerMain\(\);/);
  // The runtime's declarations are the generated ones (tsify types of the Rust crates).
  const dts = readFileSync(join(runtime, 'qemuweb_runtime.d.ts'), 'utf8');
  for (const t of ['interface ClientOptions', 'interface RuntimeCapabilities', 'interface VmProfile', 'class QemuClient']) {
    assert.ok(dts.includes(`export ${t}`), t);
  }
});

test('tsc --strict accepts the program and every README example, and rejects misuse of the generated types', () => {
  const examples = readdirSync(join(project, 'src', 'readme'));
  for (const p of ['runtime', 'config', 'storage']) assert.ok(examples.includes(`${p}-1.ts`), `${p}: no ts example in ${examples}`);
  mustRun('npx', ['--no-install', 'tsc', '--strict', '--noEmit', '-p', '.']);
  // The same compiler sees the types for what they are, not `any`: each of these is an error.
  const bad = join(project, 'src', 'bad.ts');
  writeFileSync(bad, `import { QemuClient, QemuError, defaultProfiles } from "@qemuweb/runtime";
import { buildQemuArgs } from "@qemuweb/config";
import { Disk } from "@qemuweb/storage";
const memory: string = defaultProfiles()[0].memoryMiB;
new QemuClient({ assets: { bios: { kind: "ftp", url: "x" } } });
buildQemuArgs(defaultProfiles()[0], { disk: { source: { kind: "url" } } }, null, { kind: "browser" });
Disk.memory("big");
const client = new QemuClient();
client.on("serialOut", (e) => e.level);
client.on("serialout", () => {});
void client.startVm("vm", defaultProfiles()[0], {}, { memoryMiB: 64 });
const running: boolean = client.getVmState("vm") === "runing";
void client.exportOverlay("vm", "disk0", "zip");
const code: "nope" = new QemuError("fetch", "m").code;
client.on("progress", (e) => e.total.toFixed());
export { memory, running, code };
`);
  try {
    const r = run('npx', ['--no-install', 'tsc', '--strict', '--noEmit', '-p', '.']);
    assert.notEqual(r.status, 0, r.out);
    const errors = r.out.split('\n').filter((l) => l.startsWith('src/bad.ts('));
    const lines = new Set(errors.map((l) => Number(l.match(/^src\/bad\.ts\((\d+),/)[1])));
    assert.deepEqual([...lines].sort((a, b) => a - b), [4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15], r.out);
  } finally {
    rmSync(bad);
  }
});

test('vite build bundles it, and the bundle boots the test guest in Chromium', async () => {
  await prepareGuest();
  mustRun('npx', ['--no-install', 'vite', 'build', '--logLevel', 'warn']);
  const dist = join(project, 'dist');
  const assets = readdirSync(join(dist, 'assets'));
  assert.ok(assets.some((f) => /^worker-.*\.js$/.test(f)), `the worker is an emitted asset: ${assets}`);
  assert.ok(assets.some((f) => /^qemuweb_runtime_bg-.*\.wasm$/.test(f)), `${assets}`);
  assert.ok(assets.some((f) => /^qemuweb_config_js_bg-.*\.wasm$/.test(f)), `${assets}`);
  assert.ok(assets.some((f) => /^qemuweb_storage_js_bg-.*\.wasm$/.test(f)), `${assets}`);

  assert.ok(assets.some((f) => /^libv86-.*\.mjs$/.test(f)), `v86 from the installed package is an emitted asset: ${assets}`);
  assert.ok(assets.some((f) => /^bios-256k-.*\.bin$/.test(f)), `SeaBIOS from @qemuweb/firmware is an emitted asset: ${assets}`);

  const server = await serve(dist);
  try {
    await readmeBootsInChromium(server.url, 'consumer-readme');
    await bootsInChromium(server.url, 'consumer', (url) => new RegExp(`^${url}/assets/worker-[^#]+\\.js#wasm=`));
  } finally {
    await server.stop();
  }
});

test('the Vite dev server serves the packages so that the guest boots', async () => {
  await prepareGuest();
  const port = await freePort();
  const vite = spawn('npx', ['--no-install', 'vite', '--host', '127.0.0.1', '--port', String(port), '--strictPort'], {
    cwd: project, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' }, detached: true,
  });
  let out = '';
  vite.stdout.on('data', (d) => { out += d; });
  vite.stderr.on('data', (d) => { out += d; });
  const url = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0; !out.includes(url); i++) {
      assert.ok(i < 600 && vite.exitCode === null, `vite did not start:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await readmeBootsInChromium(url, 'consumer-dev-readme');
    await bootsInChromium(url, 'consumer-dev', (u) => new RegExp(`^${u}/node_modules/@qemuweb/runtime/worker\\.js#wasm=`));
    assert.doesNotMatch(out, /error/i, out);
  } finally {
    process.kill(-vite.pid);
  }
});
