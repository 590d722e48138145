// Boots a guest on a QEMU WebAssembly build under Node (22 or newer for wasm64 output) until
// a line of its serial output matches a pattern, and reports how long that took: the
// runner of the JIT instruction tests (tests/jit_insn.rs, until the guest's "ALL DONE") and
// of scripts/bench-jit (the JIT against the interpreter and native QEMU).
//
//   node boot-runner.mjs [--lines] QEMU-JS TIMEOUT-SECS UNTIL-REGEX NAME=HOSTPATH... -- QEMU-ARGS...
//
// Every NAME=HOSTPATH file goes into the module's filesystem as /pack/NAME, next to the
// *.bin firmware of QEMU-JS's directory (pass -L /pack). Serial output goes to stdout. When a
// line matches UNTIL-REGEX, one line goes to stderr:
//   BOOT-RESULT {"ms": wall ms since the module started, "cpuMs": this process's CPU ms
//                (every thread), "jit": the JIT's statistics block, or null}
// and the process exits 0. Exit status 1 on timeout (with the output's tail on stderr), 2 if
// QEMU exits first, 64 on bad arguments. With --lines, every line of serial output also
// goes to stderr as `LINE <wall ms since the module started> <the line>` (scripts/bench-jit
// --blocks times its guest's loops by them).
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const lines = process.argv[2] === '--lines';
const argv = process.argv.slice(lines ? 3 : 2);
const dashes = argv.indexOf('--');
if (dashes < 4) {
  process.stderr.write('usage: boot-runner.mjs [--lines] QEMU-JS TIMEOUT-SECS UNTIL-REGEX NAME=HOSTPATH... -- QEMU-ARGS...\n');
  process.exit(64);
}
const [js, timeout, until] = argv;
const files = argv.slice(3, dashes);
const qemuArgs = argv.slice(dashes + 1);
const pattern = new RegExp(until);
const dir = dirname(resolve(js));
const started = performance.now();
const cpuStart = process.cpuUsage();
let line = '';
let tail = '';
let memory = null;

setTimeout(() => {
  process.stderr.write(`\nboot-runner: no line matched /${until}/ within ${timeout} s; the output's tail:\n${tail}\n`);
  process.exit(1);
}, Number(timeout) * 1000).unref?.();

/**
 * Whether the build next to `js` carries patch 0014 (regions), from its qemu-build.json's
 * plan; false if that file is missing or does not say.
 */
function hasRegions() {
  try {
    const build = JSON.parse(readFileSync(join(dirname(resolve(js)), 'qemu-build.json'), 'utf8'));
    return (build.plan?.qemu?.patches?.patches ?? []).some((p) => p.file === '0014-tcg-wasm-jit-regions.patch');
  } catch {
    return false;
  }
}

/**
 * The JIT's statistics block (patch 0012's layout, version 1, and the word patch 0014 appends:
 * the copies of blocks compiled into their predecessors' regions, null on a build without
 * 0014, where that word is whatever follows the block), or null without a JIT.
 */
function jitStats(module) {
  if (!module?._qemuweb_jit_stats || !memory) return null;
  const at = Number(module._qemuweb_jit_stats());
  const names = ['version', 'enabled', 'blocks', 'modules', 'failed', 'wasmBytes', 'translateUs',
    'compileUs', 'instantiateUs', 'flushes', 'hotThreshold', 'batch', 'regionBlocks'];
  const words = new BigUint64Array(memory.buffer, at, names.length);
  const stats = Object.fromEntries(names.map((n, i) => [n, Number(words[i])]));
  if (!hasRegions()) stats.regionBlocks = null;
  return stats;
}

const factory = (await import(pathToFileURL(resolve(js)).href)).default;
let module = null;
/** The module object during start-up (preRun's argument), before the factory resolves. */
let runtime = null;
module = await factory({
  arguments: qemuArgs,
  // The module's memory, for the JIT's statistics (Emscripten does not export its heap views).
  instantiateWasm(imports, done) {
    WebAssembly.instantiate(readFileSync(js.replace(/\.js$/, '.wasm')), imports).then(({ instance, module: m }) => {
      memory = Object.values(instance.exports).find((e) => e instanceof WebAssembly.Memory) ??
        Object.values(imports).flatMap((ns) => Object.values(ns)).find((e) => e instanceof WebAssembly.Memory);
      done(instance, m);
    });
    return {};
  },
  preRun: [
    (m) => {
      runtime = m;
      m.FS.mkdir('/pack');
      for (const f of readdirSync(dir).filter((n) => n.endsWith('.bin'))) {
        m.FS.writeFile(`/pack/${f}`, readFileSync(join(dir, f)));
      }
      for (const f of files) {
        const eq = f.indexOf('=');
        m.FS.writeFile(`/pack/${f.slice(0, eq)}`, readFileSync(f.slice(eq + 1)));
      }
    },
  ],
  stdin: () => undefined,
  // QEMU's stdio chardev polls stdin. An Emscripten device file without a poll operation
  // is always readable, so QEMU's main loop would spin on it (a poll, then a read that
  // fails with EAGAIN, about a thousand times a second, each proxied to Node's main
  // thread and each taking the BQL from the vCPU). The page's stdin reports readable only
  // when input waits; here none ever does.
  onRuntimeInitialized: () => {
    runtime.FS.getStream(0).stream_ops.poll = () => 0;
  },
  stdout: (code) => {
    if (code === null || code === undefined) return;
    process.stdout.write(Buffer.from([code]));
    tail = (tail + String.fromCharCode(code)).slice(-2000);
    if (code !== 10) {
      line += String.fromCharCode(code);
      return;
    }
    if (lines) process.stderr.write(`LINE ${Math.round(performance.now() - started)} ${line}\n`);
    const done = pattern.test(line);
    line = '';
    if (!done) return;
    const cpu = process.cpuUsage(cpuStart);
    const result = {
      ms: Math.round(performance.now() - started),
      cpuMs: Math.round((cpu.user + cpu.system) / 1000),
      jit: jitStats(module),
    };
    process.stderr.write(`BOOT-RESULT ${JSON.stringify(result)}\n`);
    setTimeout(() => process.exit(0), 20);
  },
  stderr: (code) => code !== null && code !== undefined && process.stderr.write(Buffer.from([code])),
  onExit: (status) => {
    process.stderr.write(`\nboot-runner: QEMU exited with status ${status}; the output's tail:\n${tail}\n`);
    process.exit(2);
  },
});
