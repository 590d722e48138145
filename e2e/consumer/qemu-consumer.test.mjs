// The QEMU engine as a stranger gets it: a scratch project (fixture-qemu/, copied to a
// temporary directory, far from this repository) installs the tarballs of @qemuweb/runtime
// (scripts/build-npm) and @qemuweb/qemu-wasm (scripts/build-qemu-npm, the QEMU modules packed
// by qemuweb-wasm-build) plus vite and typescript from the registry, type-checks with
// `tsc --strict`, copies the module package's dist/ to public/qemu/, bundles with
// `vite build`, and the bundle, served with COOP/COEP, boots the x86 test guest on the
// x86_64 profile in headless Chromium: banner, then an echo over serial.
//
// Without the @qemuweb/qemu-wasm tarball (no QEMU build) the test is SKIPPED, loudly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withFreshPage } from '../lib/browser.mjs';
import { REPO, serve, TARGET, writeGuests } from '../lib/server.mjs';

const NPM_DIR = join(TARGET, 'npm');
const BANNER = 'QEMUWEB-GUEST x86 v1';
const VERSION = readFileSync(join(REPO, 'Cargo.toml'), 'utf8').match(/\[workspace\.package\][^[]*?^version\s*=\s*"([^"]+)"/m)[1];
const RUNTIME = join(NPM_DIR, `qemuweb-runtime-${VERSION}.tgz`);
const QEMU = join(NPM_DIR, `qemuweb-qemu-wasm-${VERSION}.tgz`);
// @qemuweb/runtime depends on @qemuweb/firmware, which is not published either.
const FIRMWARE = join(NPM_DIR, `qemuweb-firmware-${VERSION}.tgz`);
const missing = existsSync(QEMU) ? null : `${QEMU} is missing (scripts/build-qemu-npm packs it from a QEMU build)`;
if (missing) {
  console.error(`\n${'!'.repeat(78)}\n!! ${missing}\n!! The QEMU consumer test is SKIPPED (not passed).\n${'!'.repeat(78)}\n`);
}

let project;

function mustRun(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: project, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

before(() => {
  if (missing) return;
  for (const tgz of [RUNTIME, FIRMWARE]) {
    if (!existsSync(tgz)) throw new Error(`${tgz} is missing: run scripts/build-npm`);
  }
  project = mkdtempSync(join(tmpdir(), 'qemuweb-qemu-consumer-'));
  cpSync(join(import.meta.dirname, 'fixture-qemu'), project, {
    recursive: true,
    filter: (src) => !/[/\\](node_modules|dist)([/\\]|$)/.test(src),
  });
  mustRun('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', RUNTIME, FIRMWARE, QEMU]);
});

after(() => {
  if (project) rmSync(project, { recursive: true, force: true });
});

test('@qemuweb/qemu-wasm installs with its modules, firmware, manifest, sources and patches', (t) => {
  if (missing) return t.skip(missing);
  const dir = join(project, 'node_modules', '@qemuweb', 'qemu-wasm');
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  assert.equal(pkg.name, '@qemuweb/qemu-wasm');
  assert.equal(pkg.version, VERSION);
  const manifest = JSON.parse(readFileSync(join(dir, 'dist', 'qemu-build.json'), 'utf8'));
  // The build's own: x86_64 and aarch64 (wasm64, Memory64) or i386 (wasm32).
  const built = JSON.parse(readFileSync(join(process.env.QEMUWEB_QEMU_DIR, 'qemu-build.json'), 'utf8'));
  assert.deepEqual(manifest.modules, built.modules);
  assert.ok(manifest.modules.length > 0);
  assert.equal(manifest.requirements.memory64, manifest.modules.some((m) => m.memory.memory64));
  for (const f of manifest.files) assert.ok(existsSync(join(dir, 'dist', f.name)), f.name);
  const sources = readFileSync(join(dir, 'SOURCES.md'), 'utf8');
  assert.match(sources, /qemu_10\.2\.2\+ds\.orig\.tar\.xz/);
  for (const p of manifest.plan.qemu.patches.patches) {
    assert.ok(existsSync(join(dir, 'patches', manifest.plan.qemu.patches.name, p.file)), p.file);
  }
  // The runtime ships its QEMU worker, self-contained like its VM worker.
  const qemuWorker = readFileSync(join(project, 'node_modules', '@qemuweb', 'runtime', 'qemu-worker.js'), 'utf8');
  assert.doesNotMatch(qemuWorker, /^\s*import\s/m);
  assert.match(qemuWorker, /class QemuDiskPort/);
});

test('tsc --strict, vite build, and the bundle boots an x86 profile (x86_64 on wasm64, i386 on wasm32) on the QEMU engine in Chromium', async (t) => {
  if (missing) return t.skip(missing);
  mustRun('npx', ['--no-install', 'tsc', '--strict', '--noEmit', '-p', '.']);
  const pub = join(project, 'public');
  cpSync(join(project, 'node_modules', '@qemuweb', 'qemu-wasm', 'dist'), join(pub, 'qemu'), { recursive: true });
  mkdirSync(join(pub, 'images'), { recursive: true });
  await writeGuests(join(pub, 'images'));
  mustRun('npx', ['--no-install', 'vite', 'build', '--logLevel', 'warn']);
  const dist = join(project, 'dist');
  const assets = readdirSync(join(dist, 'assets'));
  assert.ok(assets.some((f) => /^qemu-worker-.*\.js$/.test(f)), `the QEMU worker is an emitted asset: ${assets}`);
  const server = await serve(dist);
  try {
    await withFreshPage('qemu-consumer', async (page) => {
      const manifest = JSON.parse(readFileSync(join(pub, 'qemu', 'qemu-build.json'), 'utf8'));
      const x86_64 = manifest.modules.some((m) => m.arch === 'x86_64');
      await page.goto(`${server.url}/index.html?profile=${x86_64 ? 'linux-x86_64-pc-nographic' : 'linux-i386-pc-nographic'}`);
      await page.waitForFunction(() => document.title !== 'loading', null, { timeout: 120000 });
      const state = await page.evaluate(() => ({ ...window.consumer, send: undefined }));
      assert.deepEqual(state.errors, []);
      assert.equal(state.engine, 'qemu');
      assert.equal(state.caps.memory64, true);
      assert.match(state.qemuWorkerUrl, new RegExp(`^${server.url}/assets/qemu-worker-[^#]+\\.js$`));
      const waitSerial = (text, from = 0) => page.waitForFunction(
        ([text, from]) => window.consumer.serial.slice(from).includes(text), [text, from], { timeout: 180000 });
      await waitSerial(`${BANNER}\r\n> `);
      const from = await page.evaluate(() => window.consumer.serial.length);
      await page.evaluate(() => window.consumer.send('echo hello from a packaged QEMU'));
      await waitSerial('hello from a packaged QEMU\r\n> ', from);
      assert.deepEqual(await page.evaluate(() => window.consumer.errors), []);
    });
  } finally {
    await server.stop();
  }
});
