// `qemuweb prepare --app`: the example app (examples/vm-launcher, built by
// scripts/build-example) is copied next to a prepared disk; `qemuweb serve` serves the
// directory and headless Chromium, driven by playwright-core, opens its index.html with no
// query: the page is preset to the disk and profile, and the guest boots and echoes in
// its xterm.js terminal. manifest.json's SHA-256s are checked against the files. With
// `--boot-state --boot-until PROMPT` the disk is booted once headless and its VM's state
// published beside it: the page, in a fresh browser profile, resumes at the prompt instead
// of booting; a published state that is damaged or of another image is refused with its
// error code shown and the disk boots cold. The same on the QEMU engine
// (`--engine qemu --profile linux-x86_64-pc-nographic`, the build from QEMUWEB_QEMU_DIR
// copied into the site's qemu/): the page resumes the state QEMU saved.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withFreshPage } from '../lib/browser.mjs';
import { REPO, TARGET, writeGuests } from '../lib/server.mjs';
import { qemuMissing, warnQemuSkipped } from '../runtime/qemu-assets.mjs';

const QEMUWEB = join(TARGET, 'debug', 'qemuweb');
const BANNER = 'QEMUWEB-GUEST x86 v1';

let work;
let site;
let server;
let stateSite;
let stateServer;
let dist;
const X86_64 = 'linux-x86_64-pc-nographic';
const qemuIsMissing = qemuMissing();
warnQemuSkipped(qemuIsMissing, 'The QEMU case of prepare --app --boot-state is');

/** `qemuweb serve DIR` on a free port: {child, url}. */
async function serveSite(dir) {
  const child = spawn(QEMUWEB, ['serve', dir, '--port', '0', '--quiet'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/http:\/\/\S+/);
      if (m) resolve(m[0].replace(/\/$/, ''));
    });
    child.on('exit', (code) => reject(new Error(`qemuweb serve exited (${code}): ${out}`)));
  });
  return { child, url };
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-prepare-'));
  execFileSync('cargo', ['build', '-q', '-p', 'qemuweb-cli'], { cwd: REPO, stdio: 'inherit' });
  dist = execFileSync(join(REPO, 'scripts', 'build-example'), [join(work, 'app')], { encoding: 'utf8' }).trim().split('\n').at(-1);
  await writeGuests(join(work, 'guests'));
  site = join(work, 'site');
  execFileSync(QEMUWEB, ['prepare', '--app', dist, join(work, 'guests', 'x86-bios.raw'), site], { stdio: ['ignore', 'ignore', 'inherit'] });
  server = await serveSite(site);
  stateSite = join(work, 'site-state');
  execFileSync(QEMUWEB, ['prepare', '--app', dist, '--boot-state', '--boot-until', '> ', '--boot-timeout', '240',
    '--v86-dir', join(REPO, 'e2e', 'node_modules', 'v86', 'build'), join(work, 'guests', 'x86-bios.raw'), stateSite],
  { stdio: ['ignore', 'ignore', 'inherit'], timeout: 300000, killSignal: 'SIGKILL' });
  stateServer = await serveSite(stateSite);
});

after(() => {
  server?.child.kill();
  stateServer?.child.kill();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('prepare --app: the manifest covers the app, its SHA-256s match', () => {
  const manifest = JSON.parse(readFileSync(join(site, 'manifest.json'), 'utf8'));
  const paths = manifest.files.map((f) => f.path);
  for (const p of ['disk.qcow2', 'vm.json', '_headers', 'index.html']) assert.ok(paths.includes(p), `${p} in ${paths}`);
  assert.ok(paths.some((p) => p.startsWith('assets/')), paths.join(' '));
  for (const f of manifest.files) {
    const bytes = readFileSync(join(site, f.path));
    assert.equal(f.size, bytes.length, f.path);
    assert.equal(f.sha256, createHash('sha256').update(bytes).digest('hex'), f.path);
  }
  // The app's own _headers (cross-origin isolation for every file) is kept.
  assert.match(readFileSync(join(site, '_headers'), 'utf8'), /Cross-Origin-Embedder-Policy: require-corp/);
});

test('prepare --app: the page opens on the prepared disk and boots it', async () => {
  await withFreshPage('prepared-site', async (page) => {
    await page.goto(`${server.url}/`);
    await page.waitForSelector('body[data-ready]', { timeout: 60000 });
    assert.equal(await page.getAttribute('body', 'data-ready'), 'true', await page.textContent('#error'));
    assert.match(page.url(), /\?disk=disk\.qcow2&profile=linux-i386-pc-nographic$/);
    assert.equal(await page.inputValue('#profile'), 'linux-i386-pc-nographic');
    await page.click('#start');
    await page.waitForSelector('#state[data-state="running"], #state[data-state="failed"]', { timeout: 60000 });
    assert.equal(await page.getAttribute('#state', 'data-state'), 'running', await page.textContent('#error'));
    const terminal = () => page.evaluate(() => document.querySelector('.xterm-rows').textContent.replace(/\u00a0/g, ' '));
    const waitTerminal = async (text) => {
      try {
        await page.waitForFunction((t) => document.querySelector('.xterm-rows').textContent.replace(/\u00a0/g, ' ').includes(t), text, { timeout: 60000 });
      } catch (e) {
        throw new Error(`"${text}" not in the terminal: ${await terminal()}\nerror: ${await page.textContent('#error')}`, { cause: e });
      }
    };
    await waitTerminal(BANNER);
    await page.click('#terminal');
    await page.keyboard.type('echo from a prepared site');
    await page.keyboard.press('Enter');
    await waitTerminal('from a prepared site> ');
  });
});

/** Opens `url` in a fresh browser profile, starts the VM and checks it resumed the published state (no banner). */
async function resumesPublished(name, url) {
  await withFreshPage(name, async (page) => {
    const fetched = [];
    page.on('request', (r) => fetched.push(new URL(r.url()).pathname));
    await page.goto(`${url}/`);
    await page.waitForSelector('body[data-ready]', { timeout: 60000 });
    assert.equal(await page.getAttribute('body', 'data-ready'), 'true', await page.textContent('#error'));
    assert.match(page.url(), /&bootState=boot-state\/boot-state\.json/);
    assert.equal(await page.isVisible('#resume-label'), true);
    await page.click('#start');
    await page.waitForSelector('#state[data-state="running"], #state[data-state="failed"]', { timeout: 120000 });
    assert.equal(await page.getAttribute('#state', 'data-state'), 'running', await page.textContent('#error'));
    const warnings = await page.textContent('#warnings');
    assert.ok(!warnings.includes('cannot be resumed'), warnings);
    assert.ok(fetched.includes('/boot-state/boot-state.json') && fetched.includes('/boot-state/state.000'), fetched.join(' '));
    const terminal = () => page.evaluate(() => document.querySelector('.xterm-rows').textContent.replace(/\u00a0/g, ' '));
    await page.click('#terminal');
    await page.keyboard.type('echo resumed');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('.xterm-rows').textContent.replace(/\u00a0/g, ' ').includes('resumed> '), null, { timeout: 60000 })
      .catch(async (e) => { throw new Error(`no echo: ${await terminal()}`, { cause: e }); });
    // Resumed, not booted: the guest never printed its banner in this page.
    assert.ok(!(await terminal()).includes(BANNER), await terminal());
  });
}

test('prepare --boot-state: a fresh browser profile resumes the published state at the prompt', async () => {
  const manifest = JSON.parse(readFileSync(join(stateSite, 'manifest.json'), 'utf8'));
  assert.equal(manifest.bootState.manifest, 'boot-state/boot-state.json');
  const vm = JSON.parse(readFileSync(join(stateSite, 'vm.json'), 'utf8'));
  assert.equal(vm.bootState, 'boot-state/boot-state.json');
  await resumesPublished('boot-state-site', stateServer.url);
});

test('prepare --app --engine qemu --boot-state: the page resumes the state QEMU saved', async (t) => {
  if (qemuIsMissing) return t.skip(`QEMU build missing: ${qemuIsMissing}`);
  const qemuSite = join(work, 'site-qemu');
  execFileSync(QEMUWEB, ['prepare', '--app', dist, '--engine', 'qemu', '--profile', X86_64, '--memory', '64',
    '--boot-state', '--boot-until', '> ', '--boot-timeout', '240', join(work, 'guests', 'x86-bios.raw'), qemuSite],
  { stdio: ['ignore', 'ignore', 'inherit'], timeout: 300000, killSignal: 'SIGKILL' });
  const vm = JSON.parse(readFileSync(join(qemuSite, 'vm.json'), 'utf8'));
  assert.equal(vm.engine, 'qemu');
  assert.equal(JSON.parse(readFileSync(join(qemuSite, 'boot-state', 'boot-state.json'), 'utf8')).engine, 'qemu');
  const paths = JSON.parse(readFileSync(join(qemuSite, 'manifest.json'), 'utf8')).files.map((f) => f.path);
  assert.ok(paths.includes('qemu/qemu-build.json'), paths.join(' '));
  assert.match(readFileSync(join(qemuSite, 'index.html'), 'utf8'), /&engine=qemu&qemuDir=qemu\//);
  const served = await serveSite(qemuSite);
  try {
    await resumesPublished('boot-state-qemu-site', served.url);
  } finally {
    served.child.kill();
  }
});

test('prepare --boot-state: a damaged state, or one of another image, is refused and the disk boots cold', async () => {
  const cases = [
    {
      name: 'damaged',
      code: 'snapshot-corrupt',
      damage(dir) {
        const part = join(dir, 'boot-state', 'state.000');
        const bytes = readFileSync(part);
        bytes[bytes.length >> 1] ^= 0x5a;
        writeFileSync(part, bytes);
      },
    },
    {
      name: 'another-image',
      code: 'snapshot-mismatch',
      damage(dir) {
        // The manifest of an image of another size (the page can compare sizes, not hash).
        const path = join(dir, 'boot-state', 'boot-state.json');
        const m = JSON.parse(readFileSync(path, 'utf8'));
        m.disks[0].fileSize += 65536;
        writeFileSync(path, JSON.stringify(m));
      },
    },
  ];
  for (const c of cases) {
    const dir = join(work, `site-${c.name}`);
    cpSync(stateSite, dir, { recursive: true });
    c.damage(dir);
    const served = await serveSite(dir);
    try {
      await withFreshPage(`boot-state-${c.name}`, async (page) => {
        await page.goto(`${served.url}/`);
        await page.waitForSelector('body[data-ready]', { timeout: 60000 });
        await page.click('#start');
        await page.waitForSelector('#state[data-state="running"], #state[data-state="failed"]', { timeout: 60000 });
        assert.equal(await page.getAttribute('#state', 'data-state'), 'running', await page.textContent('#error'));
        const warning = await page.textContent('#warnings li[data-code="boot-state"]');
        assert.ok(warning.includes(`(${c.code}:`) && warning.includes('booting cold'), warning);
        await page.waitForFunction((t) => document.querySelector('.xterm-rows').textContent.includes(t), BANNER, { timeout: 60000 })
          .catch(async (e) => { throw new Error(`no banner: ${await page.textContent('.xterm-rows')}`, { cause: e }); });
      });
    } finally {
      served.child.kill();
    }
  }
});
