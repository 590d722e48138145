// The QemuWeb DevTools extension (extensions/chrome, built by scripts/build-extension) in
// headless Chromium: a page makes its QemuClient with `devtools: true` and boots the x86
// test guest on v86 over a persistent IndexedDB overlay; the extension's panel page
// (chrome-extension://ID/panel.html?tabId=N, connected to that tab through the service
// worker as the DevTools panel is) lists the VM, shows the guest's banner in its xterm.js
// console, sends `echo hi` typed into the console and shows the answer, shows the overlay
// grow after `write 100 AB`, saves the VM's state, exports its overlay (a download of the
// page) and resets the VM; closed, it detaches (the page stops pushing), and a new panel
// shows the console's history and stops the VM. Messages the hook must not act on change
// nothing: another origin's frame asking to stop the VM, and the page's own window posting
// a wrong version, an unknown command and wrong types (each answered with its typed
// failure). A page whose client was made without the hook shows no VMs and never hears
// from the extension. Screenshots of the panel go to $TARGET/e2e-artifacts/devtools.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, logPage, newProfile, removeProfile } from '../lib/browser.mjs';
import { TARGET } from '../lib/server.mjs';
import { BANNER, openPage, setUp, startVm, waitBanner } from '../runtime/common.mjs';

const EXTENSION = process.env.QEMUWEB_EXTENSION_DIR || join(TARGET, 'extension', 'chrome');
const ARTIFACTS = join(TARGET, 'e2e-artifacts', 'devtools');
let env;

before(async () => {
  if (!existsSync(join(EXTENSION, 'manifest.json'))) {
    throw new Error(`${EXTENSION} is missing: run scripts/build-extension`);
  }
  env = await setUp();
  mkdirSync(ARTIFACTS, { recursive: true });
  // A page of another origin (the image server) that the VM page frames: it asks the
  // parent to stop the VM, as a hostile frame would.
  writeFileSync(join(env.imageRoot, 'frame.html'), `<!doctype html><meta charset="utf-8"><script>
    parent.postMessage({ source: 'qemuweb-devtools', direction: 'panel', version: 1, id: 900,
      command: { type: 'stop', vmId: 'dt', force: true } }, '*');
    document.title = 'posted';
  </script>`);
});

after(async () => {
  await env?.tearDown();
});

/** Chromium on a fresh profile with the extension loaded. */
function launchWithExtension(profile) {
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, `--disable-extensions-except=${EXTENSION}`, `--load-extension=${EXTENSION}`],
    ignoreDefaultArgs: ['--disable-extensions'],
  });
}

/** The tab id of `page`, as the extension knows it (the active tab once `page` is in front). */
async function tabIdOf(sw, page) {
  await page.bringToFront();
  const id = await sw.evaluate(async () => (await chrome.tabs.query({ active: true, lastFocusedWindow: true }))[0]?.id);
  assert.equal(typeof id, 'number', 'the extension sees no active tab');
  return id;
}

/** Records every hook message the page's window hears (`window.devtoolsHeard`). */
function recordHookMessages(page) {
  return page.evaluate(() => {
    window.devtoolsHeard = [];
    window.addEventListener('message', (e) => {
      if (e.data?.source === 'qemuweb-devtools') window.devtoolsHeard.push(e.data);
    });
  });
}

/** The panel's console text, one string per terminal row. */
const consoleRows = (panel) => panel.locator('#console .xterm-rows > div').allInnerTexts();

/** Waits until the panel's console has a row for which `match(row)` holds. */
async function waitRow(panel, match, what, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const rows = (await consoleRows(panel)).map((r) => r.replace(/\u00a0/g, ' ').trimEnd());
    if (rows.some(match)) return rows;
    if (Date.now() > deadline) throw new Error(`the panel's console shows no ${what} in ${ms} ms:\n${rows.filter(Boolean).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The overlay cell of disk0 in the panel, as `{blocks, text}`. */
async function overlayOf(panel) {
  const text = await panel.locator('#disks tr[data-disk-id="disk0"] td.overlay').innerText();
  const m = /^(\d+) blocks?,/.exec(text);
  return { blocks: m ? Number(m[1]) : 0, text };
}

test('the DevTools panel shows and drives the VMs of a page with the hook, and nothing of a page without', async () => {
  const profile = newProfile();
  let context;
  try {
    context = await launchWithExtension(profile);
    const sw = context.serviceWorkers()[0] ?? await context.waitForEvent('serviceworker', { timeout: 20000 });
    const extensionId = new URL(sw.url()).host;
    assert.match(extensionId, /^[a-p]{32}$/);

    // The page with the hook boots the guest.
    const page = await openPage(context, env.web, 'dt-page');
    await recordHookMessages(page);
    const tabId = await tabIdOf(sw, page);
    await page.evaluate(() => {
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: ASSETS, devtools: true });
    });
    assert.deepEqual(await startVm(page, 'dt', `${env.images.url}/x86-bios.qcow2`), { ok: undefined });
    await waitBanner(page, 'dt');

    // The panel, opened after the boot, lists the VM and shows the console so far.
    const openPanel = async (tag) => {
      const p = await context.newPage();
      logPage(p, tag);
      await p.setViewportSize({ width: 1000, height: 500 });
      await p.goto(`chrome-extension://${extensionId}/panel.html?tabId=${tabId}`);
      return p;
    };
    let panel = await openPanel('panel');
    let row = panel.locator('#vms tbody tr[data-vm-id="dt"]');
    await row.waitFor({ timeout: 20000 });
    const cells = await row.locator('td').allInnerTexts();
    assert.deepEqual(cells.slice(0, 4), ['dt', 'v86', 'linux-i386-pc-nographic', 'running'], cells.join(' | '));
    assert.match(cells[4], /^\d+ s$/, `uptime ${cells[4]}`);
    await waitRow(panel, (r) => r.includes(BANNER), 'banner');

    // Typed into the panel's console: the guest answers there (and in the page).
    const from = await page.evaluate(() => window.serial.dt.length);
    await panel.locator('#console .xterm-helper-textarea').focus();
    await panel.keyboard.type('echo hi');
    await panel.keyboard.press('Enter');
    // The guest does not echo what it reads: the row is its prompt and its answer.
    await waitRow(panel, (r) => r === '> hi', 'answer to echo hi');
    await page.evaluate(([from]) => waitSerial('dt', 'hi\r\n> ', from, 20000), [from]);

    // The disk: bytes read over HTTP of the image's size, the base image's identity, and an
    // overlay that grows with the guest's write.
    await panel.locator('#disks tr[data-disk-id="disk0"]').waitFor({ timeout: 20000 });
    const read = await panel.locator('#disks tr[data-disk-id="disk0"] td.read').innerText();
    assert.match(read, /^[\d.]+ (B|KiB|MiB) of [\d.]+ (B|KiB|MiB)$/, read);
    const before = await overlayOf(panel);
    await panel.locator('#console .xterm-helper-textarea').focus();
    await panel.keyboard.type('write 100 AB');
    await panel.keyboard.press('Enter');
    await waitRow(panel, (r) => r.includes('WROTE SECTOR 100 FILL AB'), 'answer to the write');
    const deadline = Date.now() + 15000;
    let grown = before;
    while (grown.blocks <= before.blocks) {
      if (Date.now() > deadline) throw new Error(`the overlay did not grow: ${before.text} -> ${grown.text}`);
      await new Promise((r) => setTimeout(r, 250));
      grown = await overlayOf(panel);
    }
    const base = await panel.locator('#disks tr[data-disk-id="disk0"] td.base').innerText();
    assert.match(base, /qcow2/, `base image identity: ${base}`);
    console.log(`disk0: read ${read}; overlay ${before.text} -> ${grown.text}; base ${base}`);
    await panel.screenshot({ path: join(ARTIFACTS, 'panel-running.png') });

    // What the hook must not act on: another origin's frame, and malformed messages of the
    // page's own window (each answered with its typed failure).
    await page.evaluate((url) => new Promise((resolve, reject) => {
      const f = document.createElement('iframe');
      f.src = url;
      f.onload = resolve;
      f.onerror = reject;
      document.body.append(f);
    }), `${env.images.url}/frame.html`);
    const bad = [
      [901, 2, { type: 'stop', vmId: 'dt' }],
      [902, 1, { type: 'eval', vmId: 'dt' }],
      [903, 1, { type: 'stop', vmId: 'dt', force: 'yes' }],
      [904, 1, { type: 'serialIn', vmId: 'dt', data: 12 }],
    ];
    const failures = await page.evaluate(async (bad) => {
      for (const [id, version, command] of bad) {
        window.postMessage({ source: 'qemuweb-devtools', direction: 'panel', version, id, command }, location.origin);
      }
      await new Promise((r) => setTimeout(r, 1500));
      return window.devtoolsHeard.filter((m) => m.direction === 'page' && m.body.type === 'failure').map((m) => [m.body.id, m.body.code]);
    }, bad);
    assert.deepEqual(failures.filter(([id]) => id >= 900).sort(), [[901, 'version-mismatch'], [902, 'unknown-command'], [903, 'malformed'], [904, 'malformed']]);
    assert.equal(await page.evaluate(() => client.getVmState('dt')), 'running');
    assert.equal((await row.locator('td').allInnerTexts())[3], 'running');
    // The frame's message did reach the page's window, and was not answered.
    const frame = await page.evaluate(() => window.devtoolsHeard.filter((m) => m.id === 900 || m.body?.id === 900).map((m) => m.direction));
    assert.deepEqual(frame, ['panel'], 'the frame\'s message did not arrive, or was answered');

    // Save state: a snapshot the page's client lists.
    await panel.locator('#snapshot').click();
    await panel.locator('#result', { hasText: /^save state: done/ }).waitFor({ timeout: 30000 });
    const saved = /\((snap-[^)]+)\)/.exec(await panel.locator('#result').innerText())?.[1];
    assert.ok(saved, await panel.locator('#result').innerText());
    const snapshots = await page.evaluate(() => client.listSnapshots('dt').then((l) => l.map((s) => s.id)));
    assert.deepEqual(snapshots, [saved]);

    // Export overlay: the page saves the qcow2 overlay as a download.
    await panel.locator('#export-format').selectOption('qcow2');
    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: 20000 }),
      panel.locator('#export').click(),
    ]);
    assert.equal(download.suggestedFilename(), 'dt-disk0.overlay.qcow2');
    const chunks = [];
    for await (const c of await download.createReadStream()) chunks.push(c);
    const qcow2 = Buffer.concat(chunks);
    assert.equal(qcow2.subarray(0, 4).toString('latin1'), 'QFI\xfb', 'not a qcow2 file');
    await panel.locator('#result', { hasText: `export overlay: done (dt-disk0.overlay.qcow2 (${qcow2.length} bytes))` }).waitFor({ timeout: 5000 });

    console.log(`saved ${saved}; exported ${qcow2.length} bytes of qcow2`);

    // Reset: the guest boots again (a second banner).
    await panel.locator('#reset').click();
    await waitRow(panel, (r) => r === BANNER, 'banner').then(async () => {
      const deadline = Date.now() + 30000;
      while ((await consoleRows(panel)).filter((r) => r.includes(BANNER)).length < 2) {
        if (Date.now() > deadline) throw new Error('no second banner after reset');
        await new Promise((r) => setTimeout(r, 100));
      }
    });

    // Closing the panel detaches the page: it stops pushing (the guest runs on).
    await panel.close();
    await page.waitForFunction(() => window.devtoolsHeard.some((m) => m.command?.type === 'detach'), null, { timeout: 10000 });
    const pushes = () => page.evaluate(() => window.devtoolsHeard.filter((m) => m.direction === 'page').length);
    const pushed = await pushes();
    const quiet = await page.evaluate(() => window.serial.dt.length);
    await page.evaluate(() => client.sendSerialIn('dt', 'echo quiet\r'));
    await page.evaluate(([from]) => waitSerial('dt', 'quiet\r\n> ', from, 20000), [quiet]);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await pushes(), pushed, 'the page pushed to a closed panel');

    // A new panel attaches again and shows the console's history.
    panel = await openPanel('panel-2');
    row = panel.locator('#vms tbody tr[data-vm-id="dt"]');
    await row.waitFor({ timeout: 20000 });
    await waitRow(panel, (r) => r === '> quiet', 'serial output from while no panel listened');

    // The events so far, then stop from the panel.
    await panel.locator('#events li', { hasText: 'started on v86' }).waitFor({ timeout: 5000 });
    await panel.locator('#stop').click();
    await panel.locator('#vms tbody tr[data-vm-id="dt"] td:nth-child(4)', { hasText: 'stopped' }).waitFor({ timeout: 20000 });
    await panel.locator('#events li', { hasText: 'stopped (requested)' }).waitFor({ timeout: 5000 });
    assert.equal(await page.evaluate(() => client.getVmState('dt')), 'stopped');
    assert.ok(await page.evaluate(() => events.some((e) => e.type === 'stopped' && e.vmId === 'dt' && e.args[0] === 'requested')));
    await panel.screenshot({ path: join(ARTIFACTS, 'panel-stopped.png') });

    // A page whose client has no hook: its VM runs, the panel shows none.
    const plain = await openPage(context, env.web, 'plain-page');
    await recordHookMessages(plain);
    const plainTab = await tabIdOf(sw, plain);
    assert.notEqual(plainTab, tabId);
    assert.deepEqual(await startVm(plain, 'plain', `${env.images.url}/x86-bios.qcow2`), { ok: undefined });
    await waitBanner(plain, 'plain');
    const panel2 = await context.newPage();
    logPage(panel2, 'panel-plain');
    await panel2.goto(`chrome-extension://${extensionId}/panel.html?tabId=${plainTab}`);
    await panel2.locator('#empty').waitFor({ state: 'visible', timeout: 20000 });
    assert.equal(await panel2.locator('#vms tbody tr').count(), 0);
    assert.equal(await panel2.locator('#vm').isVisible(), false);
    // The panel did ask (its `list` reached the page), and the page never answered.
    const plainHeard = await plain.evaluate(() => window.devtoolsHeard.map((m) => `${m.direction}:${m.command?.type ?? m.body?.type}`));
    assert.ok(plainHeard.includes('panel:list'), plainHeard.join(', '));
    assert.ok(plainHeard.every((m) => m.startsWith('panel:')), plainHeard.join(', '));
    await panel2.screenshot({ path: join(ARTIFACTS, 'panel-no-hook.png') });
    await plain.evaluate(() => client.stopVm('plain'));
  } finally {
    await context?.close();
    removeProfile(profile);
  }
});
