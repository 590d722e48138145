// The qcow2 read benchmark in headless Chromium (a script, not a test: `node --test` does not
// pick it up). scripts/bench-qcow2 runs it after the native benchmark on the same images.
//
// For each compressed image (zlib and zstd) in DIR, next to DIR/source.raw (its guest
// bytes), in one page: a whole sequential read of the guest disk through @qemuweb/storage's
// Disk.openUrl (HTTP Range requests from qemuweb-test-server on 127.0.0.1, qcow2 decoded in
// wasm), against a plain fetch() of the same guest bytes (source.raw) and of the qcow2 file.
// Prints MB/s of guest bytes and the ratios fetch time / read time (1.00 = as fast as
// fetching the raw bytes), best of the repetitions.
//
//   node e2e/storage/qcow2-bench.mjs --images DIR [--pkg DIR] [--reps N]
import { cpSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { launch, logPage, newProfile, removeProfile } from '../lib/browser.mjs';
import { serve, TARGET } from '../lib/server.mjs';

const { values: opts } = parseArgs({
  options: {
    images: { type: 'string' },
    pkg: { type: 'string', default: join(TARGET, 'web', 'storage-release') },
    reps: { type: 'string', default: '3' },
  },
});
if (!opts.images) throw new Error('usage: node e2e/storage/qcow2-bench.mjs --images DIR [--pkg DIR] [--reps N]');
const reps = Math.max(1, Number(opts.reps));
const mbps = (r) => r.bytes / 1e6 / (r.ms / 1e3);
const best = (runs) => runs.reduce((a, b) => (b.ms < a.ms ? b : a));

const root = mkdtempSync(join(tmpdir(), 'qemuweb-bench-qcow2-'));
const profile = newProfile();
let web, images, context;
try {
  cpSync(join(import.meta.dirname, 'qcow2-bench.html'), join(root, 'qcow2-bench.html'));
  cpSync(opts.pkg, join(root, 'pkg'), { recursive: true });
  web = await serve(root);
  images = await serve(opts.images);
  context = await launch(profile);
  const page = await context.newPage();
  logPage(page, 'qcow2-bench');
  await page.goto(`${web.url}/qcow2-bench.html`);
  await page.waitForFunction(() => document.title === 'ready');
  const raw = statSync(join(opts.images, 'source.raw')).size;
  console.log(`Chromium, wasm ${opts.pkg}; ${raw >> 20} MiB disk; best of ${reps}`);
  for (const name of ['zlib', 'zstd']) {
    const runs = { raw: [], file: [], ours: [] };
    for (let rep = 0; rep < reps; rep++) {
      runs.raw.push(await page.evaluate((u) => fetchWhole(u), `${images.url}/source.raw`));
      runs.file.push(await page.evaluate((u) => fetchWhole(u), `${images.url}/${name}.qcow2`));
      runs.ours.push(await page.evaluate((u) => readQcow2(u), `${images.url}/${name}.qcow2`));
    }
    const [r, f, o] = [best(runs.raw), best(runs.file), best(runs.ours)];
    if (o.sum !== r.sum || o.bytes !== r.bytes) {
      throw new Error(`${name}: the qcow2 read differs from the raw image (${o.bytes} bytes, sum ${o.sum}; raw ${r.bytes}, ${r.sum})`);
    }
    console.log(
      `${name}: fetch raw ${mbps(r).toFixed(0)} MB/s (${(r.ms / 1e3).toFixed(3)} s); ` +
        `fetch qcow2 file ${(f.bytes / 1e6).toFixed(1)} MB in ${(f.ms / 1e3).toFixed(3)} s; ` +
        `Disk.openUrl read ${mbps(o).toFixed(0)} MB/s (${(o.ms / 1e3).toFixed(3)} s); ` +
        `ours/fetch raw ${(r.ms / o.ms).toFixed(2)}; ours/fetch qcow2 file ${(f.ms / o.ms).toFixed(2)}`,
    );
  }
} finally {
  await context?.close();
  await web?.stop();
  await images?.stop();
  removeProfile(profile);
  rmSync(root, { recursive: true, force: true });
}
