// The IndexedDB overlay benchmark (a script, not a test: `node --test` does not pick it up).
//
// In one headless Chromium run and one page, each repetition writes the same amount of fresh
// random data (random, so Chromium's IndexedDB value compression gains nothing):
//
//   raw IndexedDB   puts of BLOCK-byte records shaped like the overlay's, BATCH bytes per
//                   strict-durability readwrite transaction (as the overlay commits), into a
//                   store without indexes and into one with the overlay's two indexes; then
//                   gets: batched (a BATCH of concurrent gets per readonly transaction),
//                   sequential in batched transactions, and one readonly transaction per get;
//   overlay         Disk.persistent over Disk.memory: whole-block writes then sync(); close and
//                   reopen (so reads come from IndexedDB, not the pending batch), block reads,
//                   then LARGE-byte reads; and a second disk written with LARGE-byte writes.
//
// Prints MB/s (10^6 bytes per second; median over the repetitions, with min and max) and the
// ratios overlay/raw. Usage (scripts/bench-storage-browser builds the wasm and the server):
//
//   node e2e/storage/bench.mjs [--pkg DIR] [--mib N] [--reps N] [--block N] [--batch-mib N] [--large-kib N]
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { launch, logPage, newProfile, removeProfile } from '../lib/browser.mjs';
import { serve, TARGET } from '../lib/server.mjs';

const { values: opts } = parseArgs({
  options: {
    pkg: { type: 'string', default: join(TARGET, 'web', 'storage-release') },
    mib: { type: 'string', default: '16' },
    reps: { type: 'string', default: '3' },
    block: { type: 'string', default: '4096' },
    'batch-mib': { type: 'string', default: '4' },
    'large-kib': { type: 'string', default: '1024' },
  },
});
const params = {
  totalBytes: Number(opts.mib) << 20,
  blockSize: Number(opts.block),
  batchBytes: Number(opts['batch-mib']) << 20,
  largeBytes: Number(opts['large-kib']) << 10,
};
const reps = Number(opts.reps);
if (params.totalBytes % params.largeBytes || params.largeBytes % params.blockSize) {
  throw new Error('--mib must be a multiple of --large-kib, itself a multiple of --block');
}

const CASES = [
  ['rawPut', 'raw IndexedDB puts'],
  ['rawPutIndexed', "raw puts, store with the overlay's 2 indexes"],
  ['rawGetBatched', 'raw gets, batched in readonly txs (concurrent)'],
  ['rawGetSeqBatched', 'raw gets, one at a time, batched txs'],
  ['rawGetOneTxEach', 'raw gets, one at a time, one tx each'],
  ['overlayWriteBlock', 'overlay whole-block writes + sync'],
  ['overlayWriteLarge', `overlay ${params.largeBytes >> 10} KiB writes + sync`],
  ['overlayReadBlock', 'overlay block reads (after reopen)'],
  ['overlayReadLarge', `overlay ${params.largeBytes >> 10} KiB reads (after reopen)`],
  ['overlayReadLargeAll', `overlay ${params.largeBytes >> 10} KiB reads, large-written disk`],
];
const RATIOS = [
  ['overlayWriteBlock', 'rawPut', 'overlay block writes / raw puts'],
  ['overlayWriteLarge', 'rawPut', `overlay ${params.largeBytes >> 10} KiB writes / raw puts`],
  ['overlayWriteBlock', 'rawPutIndexed', 'overlay block writes / raw puts with 2 indexes'],
  ['overlayReadBlock', 'rawGetBatched', 'overlay block reads / raw batched gets'],
  ['overlayReadLarge', 'rawGetBatched', `overlay ${params.largeBytes >> 10} KiB reads / raw batched gets`],
  ['overlayReadBlock', 'rawGetOneTxEach', 'overlay block reads / raw gets one tx each'],
  ['overlayReadLarge', 'rawGetOneTxEach', `overlay ${params.largeBytes >> 10} KiB reads / raw gets one tx each`],
];

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mbps = (ms) => params.totalBytes / 1e6 / (ms / 1e3);

const root = mkdtempSync(join(tmpdir(), 'qemuweb-bench-storage-'));
const profile = newProfile();
let server, context;
try {
  cpSync(join(import.meta.dirname, 'bench.html'), join(root, 'bench.html'));
  cpSync(opts.pkg, join(root, 'pkg'), { recursive: true });
  server = await serve(root);
  context = await launch(profile);
  const page = await context.newPage();
  logPage(page, 'bench');
  await page.goto(`${server.url}/bench.html`);
  await page.waitForFunction(() => document.title === 'ready');
  const info = await page.evaluate(() => benchInfo());
  console.log(`Chromium: ${info.userAgent}`);
  console.log(
    `wasm: ${opts.pkg}\n${reps} reps x ${params.totalBytes >> 20} MiB of random data; ` +
      `${params.blockSize}-byte blocks; ${params.batchBytes >> 20} MiB per raw transaction ` +
      `(the overlay's flush size); large I/O ${params.largeBytes >> 10} KiB\n`,
  );

  const runs = {};
  const msRuns = {};
  for (let rep = 0; rep < reps; rep++) {
    const ms = await page.evaluate((p) => benchRep(p), { ...params, rep });
    const line = CASES.map(([k]) => `${k}=${mbps(ms[k]).toFixed(1)}`).join(' ');
    console.log(`rep ${rep + 1}/${reps} MB/s: ${line}`);
    for (const [k, v] of Object.entries(ms)) {
      (runs[k] ??= []).push(mbps(v));
      (msRuns[k] ??= []).push(v);
    }
  }

  const med = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, median(v)]));
  // Times, not rates: ms spent in block-write calls that filled no batch (no IndexedDB).
  const share = msRuns.diagBlockWriteNoCommit.map((v, i) => v / msRuns.overlayWriteBlock[i]);
  console.log(
    `\noverlay block writes: ${median(msRuns.diagBlockWriteNoCommit).toFixed(0)} ms of ` +
      `${median(msRuns.overlayWriteBlock).toFixed(0)} ms (median ${(100 * median(share)).toFixed(0)}%) ` +
      'spent in write calls that did not commit (JS/wasm write path, no IndexedDB)',
  );
  console.log('\nMB/s (median [min .. max] over reps)');
  for (const [k, label] of CASES) {
    const v = runs[k];
    console.log(
      `  ${label.padEnd(52)} ${med[k].toFixed(1).padStart(8)}  [${Math.min(...v).toFixed(1)} .. ${Math.max(...v).toFixed(1)}]`,
    );
  }
  console.log('\nratios overlay/raw (of medians; 1.00 = as fast as raw IndexedDB)');
  for (const [a, b, label] of RATIOS) {
    console.log(`  ${label.padEnd(52)} ${(med[a] / med[b]).toFixed(2).padStart(8)}`);
  }
} finally {
  await context?.close();
  await server?.stop();
  removeProfile(profile);
  rmSync(root, { recursive: true, force: true });
}
