// Benchmark (not a test): how many Ethernet frames per second cross from a worker to the page
// in headless Chromium over the two channels the page network could use: a MessagePort with
// each frame an ArrayBuffer that is transferred (what QemuClient's network uses), and a
// SharedArrayBuffer ring (slots of 1536 bytes, Atomics.wait in the worker when it is full,
// Atomics.waitAsync on the page when it is empty). The page copies each frame out as the
// switch would take it. Prints frames/s and MB/s for 60- and 1514-byte frames, medians of
// --runs runs.
//
//   node e2e/runtime/bench-net-channel.mjs [--runs N]
//
// Needs what scripts/e2e-tests.sh builds (the test server, the runtime bundle).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, newProfile } from '../lib/browser.mjs';
import { dropProfile, openPage, setUp } from './common.mjs';

const argv = process.argv.slice(2);
const runs = Number(argv[argv.indexOf('--runs') + 1]) || (argv.includes('--runs') ? NaN : 3);
if (!(runs > 0)) throw new Error('--runs N: a positive number');

const SLOT = 1536;
const SLOTS = 256;
// The worker: sends `count` frames of `size` bytes over the port or into the ring.
const WORKER = `
onmessage = (e) => {
  const { kind, size, count, port, sab } = e.data;
  if (kind === 'port') {
    for (let i = 0; i < count; i++) {
      const buf = new ArrayBuffer(size);
      new Uint8Array(buf)[0] = i & 0xff;
      port.postMessage(buf, [buf]);
    }
    return;
  }
  const idx = new Int32Array(sab, 0, 2); // [0] head (written), [1] tail (read)
  const data = new Uint8Array(sab, 8);
  const frame = new Uint8Array(size);
  for (let i = 0; i < count; i++) {
    let head = Atomics.load(idx, 0);
    while (head - Atomics.load(idx, 1) >= ${SLOTS}) Atomics.wait(idx, 1, Atomics.load(idx, 1), 50);
    frame[0] = i & 0xff;
    const at = (head % ${SLOTS}) * ${SLOT};
    data[at] = size & 0xff; data[at + 1] = size >> 8;
    data.set(frame, at + 2);
    Atomics.store(idx, 0, head + 1);
    Atomics.notify(idx, 0);
  }
};
`;

const env = await setUp();
writeFileSync(join(env.webRoot, 'bench-net-worker.js'), WORKER);
const profile = newProfile();
const context = await launch(profile);
try {
  const page = await openPage(context, env.web, 'bench-net');
  const one = (kind, size, count) => page.evaluate(([kind, size, count, SLOT, SLOTS]) => new Promise((resolve, reject) => {
    if (!crossOriginIsolated) return reject(new Error('the page is not cross-origin isolated'));
    const worker = new Worker('./bench-net-worker.js');
    let got = 0;
    let bytes = 0;
    const t0 = performance.now();
    const done = () => { worker.terminate(); resolve({ ms: performance.now() - t0, bytes }); };
    if (kind === 'port') {
      const channel = new MessageChannel();
      channel.port1.onmessage = (e) => {
        const f = new Uint8Array(e.data).slice();
        bytes += f.length;
        if (++got === count) done();
      };
      worker.postMessage({ kind, size, count, port: channel.port2 }, [channel.port2]);
      return;
    }
    const sab = new SharedArrayBuffer(8 + SLOT * SLOTS);
    const idx = new Int32Array(sab, 0, 2);
    const data = new Uint8Array(sab, 8);
    const drain = () => {
      const head = Atomics.load(idx, 0);
      let tail = Atomics.load(idx, 1);
      while (tail < head) {
        const at = (tail % SLOTS) * SLOT;
        const len = data[at] | (data[at + 1] << 8);
        const f = data.slice(at + 2, at + 2 + len);
        bytes += f.length;
        tail++;
        got++;
      }
      Atomics.store(idx, 1, tail);
      Atomics.notify(idx, 1);
      if (got >= count) return done();
      Atomics.waitAsync(idx, 0, head, 50).value.then?.(drain) ?? setTimeout(drain, 0);
    };
    worker.postMessage({ kind, size, count, sab });
    drain();
  }), [kind, size, count, SLOT, SLOTS]);

  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const [size, count] of [[60, 100000], [1514, 50000]]) {
    for (const kind of ['port', 'ring']) {
      const rates = [];
      for (let r = 0; r < runs; r++) {
        const { ms, bytes } = await one(kind, size, count);
        if (bytes !== size * count) throw new Error(`${kind}: ${bytes} bytes arrived, not ${size * count}`);
        rates.push(count / (ms / 1000));
      }
      const fps = median(rates);
      console.log(`${kind === 'port' ? 'MessagePort (transfer)' : 'SharedArrayBuffer ring'} ${size} B: ${Math.round(fps)} frames/s, ${(fps * size / 1e6).toFixed(1)} MB/s`);
    }
  }
} finally {
  await context.close();
  dropProfile(profile);
  await env.tearDown();
}
