// The example app examples/vm-launcher, as a user clicks through it. The app is copied to a
// scratch project, installs its lockfile's registry packages and the tarballs
// scripts/build-npm packed, copies SeaBIOS with its own `npm run bios`, type-checks and is
// built with Vite. The build is served on 127.0.0.1 by qemuweb-test-server with the
// COOP/COEP that the app's own public/_headers asks of a host (checked to be the same), and
// the test guest by another qemuweb-test-server (Range, ETag, CORS) on another port. Headless Chromium, driven by
// playwright-core, then: boots the guest by URL, types into the xterm.js terminal, writes
// a sector, reloads and finds it persisted, exports the overlay as qcow2 (checked with
// qemu-img against the expected disk), resets the disk; boots an uploaded and a dropped
// file on the graphics profile (screen canvas); and, served without COOP/COEP, shows the
// capability warning with its fix. Screenshots are kept in $TARGET/e2e-artifacts/vm-launcher.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { withFreshPage } from '../lib/browser.mjs';
import { freePort, REPO, serve, TARGET, writeGuests } from '../lib/server.mjs';

const APP = join(REPO, 'examples', 'vm-launcher');
const SEABIOS = process.env.QEMUWEB_SEABIOS_DIR || '/usr/share/seabios';
const ARTIFACTS = join(TARGET, 'e2e-artifacts', 'vm-launcher');
const NGINX = process.env.QEMUWEB_NGINX || '/usr/sbin/nginx';
const BANNER = 'QEMUWEB-GUEST x86 v1';
const VERSION = readFileSync(join(REPO, 'Cargo.toml'), 'utf8').match(/\[workspace\.package\][^[]*?^version\s*=\s*"([^"]+)"/m)[1];

let project;
let images;
let isolated;
let plain;

function mustRun(cmd, args, env = {}) {
  const r = spawnSync(cmd, args, { cwd: project, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', ...env } });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
}

/** Netlify's `_headers` format: a path pattern line, then indented `Name: value` lines. */
function parseHeadersFile(text) {
  const rules = [];
  for (const line of text.split('\n')) {
    if (!line.trim() || line.trim().startsWith('#')) continue;
    if (!/^\s/.test(line)) rules.push({ pattern: line.trim(), headers: [] });
    else rules.at(-1).headers.push(line.trim().split(/:\s*/, 2));
  }
  return rules;
}

/** The headers `_headers` gives every path (its `/*` rule), lower-cased names. */
function headersForAll(root) {
  const rule = parseHeadersFile(readFileSync(join(root, '_headers'), 'utf8')).find((r) => r.pattern === '/*');
  assert.ok(rule, '_headers has a /* rule');
  return Object.fromEntries(rule.headers.map(([k, v]) => [k.toLowerCase(), v]));
}

before(async () => {
  const tarballs = ['runtime', 'firmware'].map((p) => join(TARGET, 'npm', `qemuweb-${p}-${VERSION}.tgz`));
  for (const t of tarballs) {
    if (!existsSync(t)) throw new Error(`${t} is missing: run scripts/build-npm`);
  }
  project = mkdtempSync(join(tmpdir(), 'qemuweb-vm-launcher-'));
  cpSync(APP, project, {
    recursive: true,
    filter: (src) => !/[/\\](node_modules|dist|bios|images)([/\\]|$)/.test(src.slice(APP.length)),
  });
  // `npm install` (not `npm ci`): it keeps the lockfile's versions and tolerates a registry
  // without some platforms' optional packages, which `npm ci` refuses.
  mustRun('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error']);
  mustRun('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs]);
  mustRun('npm', ['run', '-s', 'bios'], { SEABIOS_DIR: SEABIOS });
  mustRun('npm', ['run', '-s', 'build']); // tsc --noEmit (strict), then vite build

  const imageDir = join(project, 'guest-images');
  mkdirSync(imageDir);
  await writeGuests(imageDir);
  images = await serve(imageDir);
  images.dir = imageDir;
  // The host's isolation headers are the ones the app's _headers asks for.
  const wanted = headersForAll(join(project, 'dist'));
  assert.equal(wanted['cross-origin-opener-policy'], 'same-origin');
  assert.equal(wanted['cross-origin-embedder-policy'], 'require-corp');
  isolated = await serve(join(project, 'dist'));
  const answer = await fetch(`${isolated.url}/index.html`);
  for (const name of ['cross-origin-opener-policy', 'cross-origin-embedder-policy']) {
    assert.equal(answer.headers.get(name), wanted[name], name);
  }
  // The same build as a host without those headers serves it (the server's no-isolation
  // misbehaviour under a path prefix).
  plain = { url: `${isolated.url}/__mis/plain/no-isolation` };
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await images?.stop();
  await isolated?.stop();
  if (project) rmSync(project, { recursive: true, force: true });
});

/** Opens the app in a fresh browser profile; `run(page)` then clicks through it. */
function withApp(url, tag, run) {
  return withFreshPage(tag, async (page) => {
    await page.goto(url);
    await ready(page);
    await run(page);
  });
}

async function ready(page) {
  await page.waitForSelector('body[data-ready]', { timeout: 60000 });
  assert.equal(await page.getAttribute('body', 'data-ready'), 'true', await page.textContent('#error'));
}

/** The terminal's visible text (xterm.js DOM renderer), one string. */
const terminalText = (page) => page.evaluate(() => document.querySelector('.xterm-rows').textContent.replace(/\u00a0/g, ' '));

async function waitTerminal(page, text) {
  try {
    await page.waitForFunction((t) => document.querySelector('.xterm-rows').textContent.replace(/\u00a0/g, ' ').includes(t), text, { timeout: 60000 });
  } catch (e) {
    throw new Error(`"${text}" not in the terminal: ${await terminalText(page)}\nerror: ${await page.textContent('#error')}`, { cause: e });
  }
}

/** Types a line into the xterm.js terminal, as a user does. */
async function typeLine(page, line) {
  await page.click('#terminal');
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
}

async function startVm(page) {
  await page.click('#start');
  await page.waitForSelector('#state[data-state="running"], #state[data-state="failed"]', { timeout: 60000 });
  assert.equal(await page.getAttribute('#state', 'data-state'), 'running', await page.textContent('#error'));
  await waitTerminal(page, BANNER);
}

async function stopVm(page) {
  await page.click('#stop');
  await page.waitForSelector('#state[data-state="stopped"]', { timeout: 30000 });
}

const blocks = (page) => page.getAttribute('#persistence', 'data-blocks').then(Number);
const crcHex = (buf) => crc32(buf).toString(16).toUpperCase().padStart(8, '0');

test('by URL: boots, echoes what is typed in xterm.js, keeps a written sector across a reload, exports it as qcow2, resets the disk', async (t) => {
  const diskUrl = `${images.url}/x86-bios.qcow2`;
  const raw = readFileSync(join(images.dir, 'x86-bios.raw'));
  const original = crcHex(raw.subarray(100 * 512, 101 * 512));
  const written = crcHex(Buffer.alloc(512, 0xab));
  await withApp(`${isolated.url}/index.html?disk=${encodeURIComponent(diskUrl)}`, 'launcher', async (page) => {
    assert.equal(await page.locator('#warnings li').count(), 0, await page.textContent('#warnings'));
    assert.equal(await page.inputValue('#profile'), 'linux-i386-pc-nographic');
    await page.waitForSelector('#persistence[data-blocks="0"]');
    await startVm(page);
    assert.match(await page.textContent('#progress-text'), /^(disk0|v86Wasm): .* read$/);

    await typeLine(page, 'echo typed into xterm.js');
    await waitTerminal(page, 'typed into xterm.js> ');
    await typeLine(page, `read 100`);
    await waitTerminal(page, `SECTOR 100 CRC32 ${original}`);
    await typeLine(page, 'write 100 AB');
    await waitTerminal(page, 'WROTE SECTOR 100 FILL AB');
    const shot = join(ARTIFACTS, 'launcher.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);

    // The overlay as qcow2, on top of the image it names as its backing file.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    assert.equal(download.suggestedFilename(), 'x86-bios.overlay.qcow2');
    const overlay = join(images.dir, 'x86-bios.overlay.qcow2');
    await download.saveAs(overlay);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', overlay], { encoding: 'utf8' }));
    assert.equal(info.format, 'qcow2');
    assert.equal(info['backing-filename'], 'x86-bios.qcow2');
    assert.equal(info['virtual-size'], raw.length);
    const expected = Buffer.from(raw);
    expected.fill(0xab, 100 * 512, 101 * 512);
    writeFileSync(join(images.dir, 'expected.raw'), expected);
    const cmp = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', join(images.dir, 'expected.raw'), overlay], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, `qemu-img compare: ${cmp.stdout}${cmp.stderr}`);

    await stopVm(page);
    await page.waitForFunction(() => Number(document.querySelector('#persistence').dataset.blocks) > 0);
    await page.reload();
    await ready(page);
    await page.waitForSelector('#persistence[data-blocks]');
    assert.ok(await blocks(page) > 0);
    assert.match(await page.textContent('#persistence'), /^Persisted: /);
    await startVm(page);
    await typeLine(page, 'read 100');
    await waitTerminal(page, `SECTOR 100 CRC32 ${written}`);

    await page.click('#reset-disk');
    await page.waitForSelector('#state[data-state="stopped"]');
    await page.waitForSelector('#persistence[data-blocks="0"]');
    await startVm(page);
    await typeLine(page, 'read 100');
    await waitTerminal(page, `SECTOR 100 CRC32 ${original}`);
    assert.equal(await page.textContent('#error'), '');
    await stopVm(page);
  });
});

test('a file from the file picker and one dropped on the page boot on the graphics profile, the screen on the canvas', async (t) => {
  await withApp(`${isolated.url}/index.html`, 'launcher-file', async (page) => {
    await page.selectOption('#profile', 'linux-i386-pc-graphics');
    await page.setInputFiles('#disk-file', join(images.dir, 'x86-bios.qcow2'));
    await page.waitForSelector('#persistence[data-blocks="0"]');
    const uploadedVm = await page.getAttribute('#persistence', 'data-vm-id');
    await startVm(page);
    assert.equal(await page.isVisible('#screen'), true);
    await page.waitForFunction(() => document.querySelector('#screen').width === 720, null, { timeout: 90000 });
    // The screen takes the keyboard and the pointer: the guest's `keys` mode reports
    // every PS/2 byte on its serial port (the terminal).
    await typeLine(page, 'keys');
    await waitTerminal(page, 'KEYS ON');
    await page.click('#screen');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'screen', 'a click focuses the screen');
    await waitTerminal(page, 'M 09 00 00');
    await page.keyboard.press('Shift+KeyH');
    await page.keyboard.type('i there');
    await page.keyboard.press('Enter');
    await waitTerminal(page, 'LINE Hi there');
    await page.click('#ctrl-alt-del');
    await waitTerminal(page, 'K 9D'); // Ctrl released last: the chord went in
    // The screenshot button saves the screen as a PNG of the guest's size.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#screenshot')]);
    const png = readFileSync(await download.path());
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
    assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [720, 400]);
    assert.match(download.suggestedFilename(), /\.png$/);
    // Fullscreen shows the display alone, the canvas scaled to fit and focused.
    await page.click('#fullscreen');
    await page.waitForFunction(() => document.fullscreenElement?.id === 'display', null, { timeout: 10000 });
    // The app focuses the canvas on `fullscreenchange`, which fires after fullscreenElement is set.
    await page.waitForFunction(() => document.activeElement?.id === 'screen', null, { timeout: 10000 })
      .catch(async () => assert.fail(`fullscreen focuses the screen (focus on ${await page.evaluate(() => document.activeElement?.id)})`));
    await page.evaluate(() => document.exitFullscreen());
    await page.keyboard.press('Escape');
    await waitTerminal(page, 'KEYS OFF');
    await typeLine(page, 'echo from a local file');
    await waitTerminal(page, 'from a local file> ');
    await stopVm(page);

    // Drag-and-drop: a DataTransfer holding a File, dropped on the disk fieldset.
    const dataTransfer = await page.evaluateHandle(async (url) => {
      const dt = new DataTransfer();
      dt.items.add(new File([await (await fetch(url)).blob()], 'dropped.qcow2'));
      return dt;
    }, `${images.url}/x86-bios.qcow2`);
    await page.dispatchEvent('#disk', 'drop', { dataTransfer });
    await page.waitForFunction((vm) => document.querySelector('#persistence').dataset.vmId !== vm, uploadedVm);
    await startVm(page);
    await typeLine(page, 'info');
    await waitTerminal(page, 'DISK SECTORS 8192');
    const shot = join(ARTIFACTS, 'launcher-graphics.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);
    assert.equal(await page.textContent('#error'), '');
    await stopVm(page);
  });
});

test('an aarch64 profile says how it boots (an EFI disk or a kernel); the kernel fields on request; without a QEMU build the error names the missing manifest', async () => {
  await withApp(`${isolated.url}/index.html`, 'launcher-kernel', async (page) => {
    assert.equal(await page.isVisible('#kernel-url'), false);
    await page.selectOption('#profile', 'linux-aarch64-virt-nographic');
    // Its disks boot through UEFI firmware, so a kernel is optional: the help says both.
    assert.match(await page.textContent('#profile-help'), /EFI.*kernel/is);
    await page.click('#kernel-boot summary');
    assert.equal(await page.isVisible('#kernel-url'), true);
    await page.fill('#kernel-url', `${images.url}/aarch64-virt.img`);
    await page.click('#start');
    await page.waitForSelector('#state[data-state="failed"]', { timeout: 30000 });
    // This app is served without @qemuweb/qemu-wasm: the start fails on its manifest, before
    // any module is fetched.
    assert.match(await page.textContent('#error'), /^fetch: .*qemu-build\.json.*404/);
    assert.equal(await page.isEnabled('#start'), true, 'a failed start can be retried');
  });
});

test('served without COOP/COEP, the page warns with the fix and boots on the serial console only', async (t) => {
  const diskUrl = `${images.url}/x86-bios.qcow2`;
  await withApp(`${plain.url}/index.html?disk=${encodeURIComponent(diskUrl)}`, 'launcher-plain', async (page) => {
    const warning = await page.textContent('#warnings li[data-code="cross-origin-isolation"]');
    assert.match(warning, /Cross-Origin-Opener-Policy: same-origin/);
    assert.match(warning, /_headers/);
    assert.ok(await page.isVisible('#warnings li[data-code="no-display"]'));
    await page.selectOption('#profile', 'linux-i386-pc-graphics');
    await startVm(page);
    assert.equal(await page.isVisible('#screen'), false);
    const shot = join(ARTIFACTS, 'launcher-not-isolated.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);
    await stopVm(page);
  });
});

test('the shipped nginx.conf serves the app cross-origin isolated and the disk with Range requests', { skip: !existsSync(NGINX) && `${NGINX} is not installed (scripts/setup)` }, async (t) => {
  const dist = join(project, 'dist');
  mkdirSync(join(dist, 'images'), { recursive: true });
  cpSync(join(images.dir, 'x86-bios.qcow2'), join(dist, 'images', 'x86-bios.qcow2'));
  const port = await freePort();
  const conf = join(project, 'nginx');
  mkdirSync(conf);
  // The example's server block, as a deployer adapts it: the address and the root.
  const server = readFileSync(join(APP, 'nginx.conf'), 'utf8')
    .replace('listen 80;', `listen 127.0.0.1:${port};`)
    .replace('root /srv/vm-launcher/dist;', `root ${dist};`);
  assert.ok(server.includes(`root ${dist};`) && server.includes(`127.0.0.1:${port}`), 'nginx.conf has the expected listen and root lines');
  writeFileSync(join(conf, 'server.conf'), server);
  writeFileSync(join(conf, 'nginx.conf'), `daemon off;
user root;
pid ${conf}/nginx.pid;
error_log ${conf}/error.log;
events {}
http {
  include /etc/nginx/mime.types;
  access_log ${conf}/access.log;
  client_body_temp_path ${conf}; proxy_temp_path ${conf}; fastcgi_temp_path ${conf}; uwsgi_temp_path ${conf}; scgi_temp_path ${conf};
  include ${conf}/server.conf;
}
`);
  const test = spawnSync(NGINX, ['-t', '-p', conf, '-c', join(conf, 'nginx.conf')], { encoding: 'utf8' });
  assert.equal(test.status, 0, test.stderr);
  const nginx = spawn(NGINX, ['-p', conf, '-c', join(conf, 'nginx.conf')], { stdio: 'inherit' });
  try {
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      if (await fetch(`${url}/`).then((r) => r.ok, () => false)) break;
      assert.ok(i < 100 && nginx.exitCode === null, 'nginx did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    await withApp(`${url}/?disk=images/x86-bios.qcow2&profile=linux-i386-pc-graphics`, 'launcher-nginx', async (page) => {
      assert.equal(await page.locator('#warnings li').count(), 0, await page.textContent('#warnings'));
      await startVm(page);
      assert.equal(await page.isVisible('#screen'), true);
      await typeLine(page, 'echo served by nginx');
      await waitTerminal(page, 'served by nginx> ');
      await stopVm(page);
    });
    const log = readFileSync(join(conf, 'access.log'), 'utf8');
    assert.match(log, /"GET \/images\/x86-bios\.qcow2 HTTP\/1\.1" 206 /, 'the disk was read with Range requests');
    t.diagnostic(`${log.split('\n').filter((l) => l.includes('x86-bios.qcow2')).length} requests for the disk`);
  } finally {
    nginx.kill();
  }
});

test('scripts/demo --serve builds the launcher, serves it with the test guest preselected and prints the URL', async () => {
  const port = await freePort();
  const demo = spawn(join(REPO, 'scripts', 'demo'), ['--serve', '--port', String(port)], {
    cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, CARGO_TARGET_DIR: TARGET },
  });
  let out = '';
  demo.stdout.on('data', (d) => { out += d; });
  demo.stderr.on('data', (d) => { out += d; });
  try {
    // The first build of the app takes a while; the server's own line comes last.
    for (let i = 0; !out.includes(`Serving `); i++) {
      assert.ok(i < 6000 && demo.exitCode === null, `scripts/demo --serve did not serve:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const url = out.match(/open (http:\/\/127\.0\.0\.1:\d+\/\S*)/)?.[1];
    assert.equal(url, `http://127.0.0.1:${port}/?disk=images/x86-bios.qcow2&echo=1`, out);
    await withApp(url, 'launcher-demo', async (page) => {
      assert.equal(await page.locator('#warnings li').count(), 0, await page.textContent('#warnings'));
      assert.equal(await page.isChecked('#local-echo'), true);
      await startVm(page);
      await typeLine(page, 'echo from the demo');
      // Rows follow each other in the text: the local echo, then the guest's answer.
      await waitTerminal(page, '> echo from the demofrom the demo> ');
      await stopVm(page);
    });
  } finally {
    process.kill(-demo.pid);
  }
});
