// The IndexedDB overlay behind Disk.persistent, in real Chromium pages: persistence across
// a browser restart on the same profile, no torn blocks when the browser is killed
// mid-commit, one writer per disk across pages, and a quota error that leaves earlier data
// intact.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch, killBrowser, logPage, newProfile, removeProfile } from '../lib/browser.mjs';
import { serve, TARGET } from '../lib/server.mjs';

// Large enough for the quota test's eight 4 MiB writes.
const BASE_SIZE = 40 << 20;
let root, server;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-storage-'));
  cpSync(join(import.meta.dirname, 'page.html'), join(root, 'page.html'));
  cpSync(join(TARGET, 'web', 'storage'), join(root, 'pkg'), { recursive: true });
  // A base image with a recognisable pattern: byte i is i % 251.
  const base = Buffer.alloc(BASE_SIZE);
  for (let i = 0; i < BASE_SIZE; i++) base[i] = i % 251;
  writeFileSync(join(root, 'base.raw'), base);
  server = await serve(root);
});

after(async () => {
  await server?.stop();
  rmSync(root, { recursive: true, force: true });
});

async function openPage(context, tag) {
  const page = await context.newPage();
  logPage(page, tag);
  await page.goto(`${server.url}/page.html`);
  await page.waitForFunction(() => document.title === 'ready');
  return page;
}

/** Opens the persistent disk `vm`/disk0 over the HTTP base in `page`, as window.disk. */
async function openDisk(page, vm, readOnlyIfLocked = false) {
  return page.evaluate(
    async ([url, vm, ro]) =>
      attempt(async () => {
        const base = await Disk.openUrl(url, 'raw');
        window.disk = await Disk.persistent(vm, 'disk0', base, 4096, ro);
        return window.disk.readOnly;
      }),
    [`${server.url}/base.raw`, vm, readOnlyIfLocked],
  );
}

test('writes survive a browser restart on the same profile', async () => {
  const profile = newProfile();
  try {
    let context = await launch(profile);
    let page = await openPage(context, 'first');
    assert.deepEqual(await openDisk(page, 'vm-restart'), { ok: false });
    await page.evaluate(async () => {
      await disk.write(4096 * 10 + 100, new Uint8Array(5000).fill(0xab));
      await disk.write(disk.size - 1, new Uint8Array([0xcd]));
      await disk.sync();
    });
    await context.close();

    context = await launch(profile);
    page = await openPage(context, 'second');
    assert.deepEqual(await openDisk(page, 'vm-restart'), { ok: false });
    const got = await page.evaluate(async () => {
      const a = await disk.read(4096 * 10, 5200);
      const b = await disk.read(disk.size - 2, 2);
      return { a: Array.from(a), b: Array.from(b), blocks: Array.from(disk.overlayBlocks()) };
    });
    const expected = [];
    for (let i = 0; i < 5200; i++) {
      const at = 4096 * 10 + i;
      expected.push(i >= 100 && i < 5100 ? 0xab : at % 251);
    }
    assert.deepEqual(got.a, expected);
    assert.deepEqual(got.b, [(BASE_SIZE - 2) % 251, 0xcd]);
    assert.deepEqual(got.blocks, [10, 11, BASE_SIZE / 4096 - 1]);
    // Only what was read was fetched: not the whole base.
    const fetched = (await server.log()).filter((l) => l.includes('base.raw'));
    assert.ok(fetched.length > 0);
    await context.close();
  } finally {
    removeProfile(profile);
  }
});

test('a browser killed mid-commit leaves no torn or half-committed batch', async () => {
  const profile = newProfile();
  const BLOCKS = 64;
  try {
    let context = await launch(profile);
    let page = await openPage(context, 'writer');
    assert.deepEqual(await openDisk(page, 'vm-crash'), { ok: false });
    // Generation g writes byte g into all 64 blocks and commits them in one sync; the
    // loop runs until the browser is killed under it.
    await page.evaluate((blocks) => {
      window.committed = 0;
      (async () => {
        for (let g = 1; g < 250; g++) {
          const data = new Uint8Array(blocks * 4096).fill(g);
          await disk.write(0, data);
          await disk.sync();
          window.committed = g;
        }
      })();
    }, BLOCKS);
    await page.waitForFunction(() => window.committed >= 3);
    const seen = await page.evaluate(() => window.committed);
    killBrowser(profile);
    await context.close().catch(() => {});

    context = await launch(profile);
    page = await openPage(context, 'after-crash');
    assert.deepEqual(await openDisk(page, 'vm-crash'), { ok: false });
    const gens = await page.evaluate(async (blocks) => {
      const all = await disk.read(0, blocks * 4096);
      const out = [];
      for (let b = 0; b < blocks; b++) {
        const block = all.subarray(b * 4096, (b + 1) * 4096);
        out.push(block.every((x) => x === block[0]) ? block[0] : -1);
      }
      return out;
    }, BLOCKS);
    assert.ok(!gens.includes(-1), `a torn block: ${gens}`);
    assert.equal(new Set(gens).size, 1, `a half-committed batch: ${gens}`);
    assert.ok(gens[0] >= seen, `generation ${gens[0]} was committed before ${seen}`);
    await context.close();
  } finally {
    killBrowser(profile);
    removeProfile(profile);
  }
});

test('two pages: one writer, the other read-only or refused', async () => {
  const profile = newProfile();
  try {
    const context = await launch(profile);
    const a = await openPage(context, 'tab-a');
    const b = await openPage(context, 'tab-b');
    assert.deepEqual(await openDisk(a, 'vm-two-tabs'), { ok: false });
    await a.evaluate(async () => {
      await disk.write(0, new Uint8Array(4096).fill(7));
      await disk.sync();
    });
    const refused = await openDisk(b, 'vm-two-tabs');
    assert.equal(refused.error, 'Locked', JSON.stringify(refused));
    assert.deepEqual(await openDisk(b, 'vm-two-tabs', true), { ok: true });
    const seen = await b.evaluate(async () => {
      const first = Array.from(await disk.read(0, 2));
      const write = await attempt(() => disk.write(0, new Uint8Array(1)));
      return { first, write: write.error };
    });
    assert.deepEqual(seen, { first: [7, 7], write: 'ReadOnly' });
    // Once the writer closes, the other page may write.
    await a.evaluate(() => disk.close());
    await b.evaluate(() => disk.close());
    assert.deepEqual(await openDisk(b, 'vm-two-tabs'), { ok: false });
    await context.close();
  } finally {
    removeProfile(profile);
  }
});

test('a quota error is typed and earlier data stays readable', async () => {
  const profile = newProfile();
  try {
    const context = await launch(profile);
    const page = await openPage(context, 'quota');
    // A 1 MiB quota: room for the first writes, far less than the later ones. Chromium
    // applies an override to IndexedDB connections opened after it, so set it first.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url, quotaSize: 1 << 20 });
    assert.deepEqual(await openDisk(page, 'vm-quota'), { ok: false });
    await page.evaluate(async () => {
      await disk.write(0, new Uint8Array(8192).fill(0x11));
      await disk.sync();
    });
    // Random bytes (Chromium compresses IndexedDB values), 4 MiB a batch, until the quota
    // bites: on the first batch, but a few rounds of slack keep the test about the error.
    const result = await page.evaluate(async () => {
      for (let round = 0; round < 8; round++) {
        const big = new Uint8Array(4 << 20);
        for (let i = 0; i < big.length; i += 65536) crypto.getRandomValues(big.subarray(i, i + 65536));
        const r = await attempt(async () => {
          await disk.write(65536 + round * (4 << 20), big);
          await disk.sync();
        });
        if (r.error) return { ...r, round };
      }
      return {};
    });
    assert.equal(result.error, 'QuotaExceeded', JSON.stringify(result));
    const after = await page.evaluate(async (round) => {
      const mine = Array.from(await disk.read(0, 2));
      await attempt(() => disk.close());
      // A fresh handle reads what was committed before the failure.
      const base = await Disk.openUrl(`${location.origin}/base.raw`, 'raw');
      const again = await Disk.persistent('vm-quota', 'disk0', base, 4096, false);
      return { mine, again: Array.from(await again.read(0, 2)), other: Array.from(await again.read(65536 + round * (4 << 20), 1)) };
    }, result.round);
    assert.deepEqual(after, {
      mine: [0x11, 0x11],
      again: [0x11, 0x11],
      other: [(65536 + result.round * (4 << 20)) % 251],
    });
    await context.close();
  } finally {
    removeProfile(profile);
  }
});
