// Overlays cross between the browser and native QEMU tools: an overlay written in a page is
// exported as qcow2 and checked and converted by the real qemu-img; an overlay made by
// qemu-img/qemu-io imports into a page and reads back exactly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch, logPage, newProfile, removeProfile } from '../lib/browser.mjs';
import { serve, TARGET } from '../lib/server.mjs';

const SIZE = 6 << 20;
let root, server, profile, context, page;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-interop-'));
  cpSync(join(import.meta.dirname, 'page.html'), join(root, 'page.html'));
  cpSync(join(TARGET, 'web', 'storage'), join(root, 'pkg'), { recursive: true });
  const base = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i++) base[i] = (i * 7) % 253;
  writeFileSync(join(root, 'base.raw'), base);
  server = await serve(root);
  profile = newProfile();
  context = await launch(profile);
  page = await context.newPage();
  logPage(page, 'interop');
  await page.goto(`${server.url}/page.html`);
  await page.waitForFunction(() => document.title === 'ready');
});

after(async () => {
  await context?.close();
  removeProfile(profile);
  await server?.stop();
  rmSync(root, { recursive: true, force: true });
});

function qemuImg(...args) {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

/** Opens vm/disk0 over the served base in the page as window.disk. */
function openDisk(vm) {
  return page.evaluate(async ([url, vm]) => {
    const base = await Disk.openUrl(url, 'raw');
    window.disk = await Disk.persistent(vm, 'disk0', base, 4096, false);
  }, [`${server.url}/base.raw`, vm]);
}

test('a browser overlay exported as qcow2 passes qemu-img check and converts to the same disk', async () => {
  await openDisk('vm-export');
  const { image, guest } = await page.evaluate(async () => {
    await disk.write(0, new Uint8Array(512).fill(1));
    await disk.write(123457, new Uint8Array(70000).fill(2));
    await disk.write(disk.size - 100, new Uint8Array(100).fill(3));
    await disk.sync();
    const image = await disk.exportOverlay('qcow2', 'base.raw', 'raw');
    const guest = await disk.read(0, disk.size);
    await disk.close();
    return { image: toBase64(image), guest: toBase64(guest) };
  });
  const ov = join(root, 'from-browser.qcow2');
  writeFileSync(ov, Buffer.from(image, 'base64'));
  assert.match(qemuImg('check', ov), /No errors were found/);
  const raw = join(root, 'from-browser.raw');
  qemuImg('convert', '-O', 'raw', ov, raw);
  assert.ok(Buffer.from(guest, 'base64').equals(readFileSync(raw)), 'qemu-img sees the disk the page saw');
});

test('an overlay made by qemu-img and qemu-io imports into the page exactly', async () => {
  const ov = join(root, 'native.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'base.raw', '-F', 'raw', ov);
  for (const cmd of ['write -P 0x5a 65536 131072', 'write -z 98304 8192', 'write -P 0x33 1000 3000', 'write -c -P 0x77 2097152 65536']) {
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', cmd, ov]);
  }
  const raw = join(root, 'native.raw');
  qemuImg('convert', '-O', 'raw', ov, raw);
  await openDisk('vm-import');
  const guest = await page.evaluate(async (b64) => {
    const ranges = await disk.importOverlay(fromBase64(b64), 'qcow2');
    await disk.sync();
    return { ranges, all: toBase64(await disk.read(0, disk.size)) };
  }, readFileSync(ov).toString('base64'));
  assert.ok(guest.ranges > 0);
  assert.ok(Buffer.from(guest.all, 'base64').equals(readFileSync(raw)), 'the page reads what qemu-img converts');
  // A damaged file is refused whole.
  const refused = await page.evaluate(async () => {
    const before = Array.from(disk.overlayBlocks()).length;
    const r = await attempt(() => disk.importOverlay(new Uint8Array(1000), 'compact'));
    return { r, same: Array.from(disk.overlayBlocks()).length === before };
  });
  assert.equal(refused.r.error, 'Integrity');
  assert.ok(refused.same);
  await page.evaluate(() => disk.close());
});
