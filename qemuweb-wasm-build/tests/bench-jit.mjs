// Benchmark (not a test) of the QEMU WebAssembly JIT, one run per row, in one invocation:
// Linux (scripts/linux-guest's Debian i386 kernel and busybox initrd) from start to a line of
// its console on native qemu-system-x86_64 (TCG), and on the wasm64 build's
// qemu-system-x86_64 under Node: the JIT with every barrier, the JIT with the barriers a TSO
// host keeps for free left out (what the runtime runs on x86 hosts), and TCI (the JIT off)
// with the same barrier rule (`tci-tso`, the runtime's `jit: false` on x86 hosts; `tci`
// keeps every barrier).
// Prints each row's wall and CPU seconds, its ratio to native, and the JIT's counters.
//
// With --profile DIR each wasm row runs under V8's sampling profiler (Node's --cpu-prof):
// DIR/ROW holds a .cpuprofile per thread (open them in DevTools' Performance panel), and the
// vCPU thread's is summarized after the row (cpuprofile.mjs: compiled blocks, interpreter,
// waits, QEMU's functions with the most samples).
//
// With --blocks IMG (scripts/bench-jit --blocks assembles blocks.asm into IMG) the guest is
// that boot sector instead of Linux: the same instructions looped in one, two and four
// translation blocks per iteration (and with memory accesses, with a rotate, through an
// indirect jump, through a call and a ret); each row prints every loop's seconds against
// native, what one more block per iteration costs, which is the price of a chained jump
// between compiled blocks, and what an indirect jump costs more than a chained one.
//
// With --against OTHER-BUILD-DIR it compares two builds instead: each round runs the first
// row (default jit-tso) on both builds at once, each process pinned to a core of its own
// (`taskset`), the cores swapped every round, and prints each round's times and the ratio
// OTHER/BUILD-DIR with their geometric mean. Both runs see the same machine at the same
// moment: a build against itself gave 0.98 and 1.07 on a shared 2-core machine where single
// runs in a row vary by up to 40 %. Needs two cores.
//
//   node bench-jit.mjs QEMUWEB-WASM-BUILD BUILD-DIR KERNEL INITRD [--until REGEX]
//                      [--rows native,jit,jit-tso,tci-tso,tci] [--timeout SECS] [--profile DIR]
//                      [--blocks IMG]
//                      [--against OTHER-BUILD-DIR [--rounds N]]
//
// QEMUWEB-WASM-BUILD is the qemuweb-wasm-build binary (its `node` runs the build root's
// Node 24); scripts/bench-jit passes everything.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { report, summarize, vcpuProfile } from './cpuprofile.mjs';

const argv = process.argv.slice(2);
const opt = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
const [tool, buildDir, kernel, initrd] = argv;
if (!initrd) {
  process.stderr.write('usage: bench-jit.mjs QEMUWEB-WASM-BUILD BUILD-DIR KERNEL INITRD [--until REGEX] [--rows ...] [--timeout SECS] [--profile DIR] [--blocks IMG] [--against OTHER-BUILD-DIR [--rounds N]]\n');
  process.exit(64);
}
const blocks = opt('--blocks', null) && resolve(opt('--blocks'));
const until = blocks ? '^END$' : opt('--until', 'Run /init');
const rows = opt('--rows', 'native,jit,jit-tso,tci-tso').split(',');
const timeoutS = Number(opt('--timeout', '1800'));
const against = opt('--against', null);
const rounds = Number(opt('--rounds', '4'));
const profileDir = opt('--profile', null) && resolve(opt('--profile'));
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds wants a whole number above 0, not ${opt('--rounds')}`);
const here = dirname(fileURLToPath(import.meta.url));
/**
 * The guest: its files (a name and a host path; the wasm runs see them as /pack/NAME) and its
 * QEMU arguments, given where each file is (`at(name)`).
 */
const guest = blocks
  ? {
    name: 'the blocks guest',
    files: { 'blocks.img': blocks },
    args: (at) => ['-M', 'pc', '-m', '64', '-nographic', '-nic', 'none', '-no-reboot',
      '-drive', `file=${at('blocks.img')},format=raw,if=ide`],
  }
  : {
    name: 'Linux',
    files: { kernel: resolve(kernel), initrd: resolve(initrd) },
    args: (at) => ['-M', 'pc', '-m', '512', '-nographic', '-nic', 'none', '-no-reboot',
      '-kernel', at('kernel'), '-initrd', at('initrd'), '-append', 'console=ttyS0 panic=-1'],
  };
/** blocks.asm's N: iterations of each loop. */
const BLOCKS_ITERATIONS = 200e6;
const s = (ms) => (ms / 1000).toFixed(1);
const ACCEL = {
  jit: 'tcg', 'jit-tso': 'tcg,wasm-jit-tso=1', 'tci-tso': 'tcg,wasm-jit=off,wasm-jit-tso=1', tci: 'tcg,wasm-jit=off',
};

/**
 * Runs `cmd args` in a process group of its own, which is killed whole (the build root's
 * `unshare`/`chroot`/Node chain included) after `timeoutS` or when `onStdout` says stop;
 * resolves with its stdout and stderr tails.
 */
function run(cmd, args, onStdout) {
  return new Promise((done, fail) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const killGroup = () => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    let out = '';
    let err = '';
    const timer = setTimeout(killGroup, timeoutS * 1000);
    child.stdout.on('data', (d) => {
      out = (out + d).slice(-20000);
      onStdout?.(out, killGroup);
    });
    child.stderr.on('data', (d) => { err = (err + d).slice(-20000); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, out, err });
    });
    child.on('error', fail);
  });
}

async function native() {
  const start = performance.now();
  let ms = null;
  const re = new RegExp(until, 'm');
  const lines = [];
  const r = await run('qemu-system-x86_64', ['-accel', 'tcg', ...guest.args((n) => guest.files[n])], (out, stop) => {
    if (blocks) {
      // Each complete line, timed when it first shows: the blocks guest prints a few, all
      // within the output's kept tail (Linux's log outgrows it and is not timed by line).
      const complete = out.split('\n').slice(0, -1);
      for (const l of complete.slice(lines.length)) lines.push([l.trim(), performance.now() - start]);
    }
    if (ms === null && re.test(out)) {
      ms = performance.now() - start;
      stop();
    }
  });
  if (ms === null) throw new Error(`native QEMU never printed /${until}/ (exit ${r.code ?? r.signal}); tail:\n${r.out.slice(-1500)}`);
  return { ms, cpuMs: null, jit: null, lines };
}

/**
 * One boot on the wasm build in `dir` with `-accel accel`, pinned to core `cpu` if given;
 * under V8's profiler, writing its profiles into `profile` (emptied first), if given.
 */
async function wasm(accel, dir = buildDir, cpu = null, profile = null) {
  const prof = [];
  if (profile) {
    rmSync(profile, { recursive: true, force: true });
    mkdirSync(profile, { recursive: true });
    prof.push('--bind', profile);
  }
  const binds = [...new Set(Object.values(guest.files).map((f) => dirname(f)))].flatMap((d) => ['--bind', d]);
  const args = ['node', '--bind', resolve(dir), ...binds, '--bind', here, ...prof, '--',
    ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : []),
    join(here, 'boot-runner.mjs'), ...(blocks ? ['--lines'] : []), join(resolve(dir), 'qemu-system-x86_64.js'),
    String(timeoutS), until, ...Object.entries(guest.files).map(([n, f]) => `${n}=${f}`), '--', '-L', '/pack',
    '-accel', accel, ...guest.args((n) => `/pack/${n}`)];
  const r = cpu === null ? await run(tool, args) : await run('taskset', ['-c', String(cpu), tool, ...args]);
  // QEMU's own stderr may precede it on the same line.
  const line = r.err.match(/BOOT-RESULT (\{.*\})/)?.[1];
  if (!line) throw new Error(`the wasm build ${dir} (-accel ${accel}) never printed /${until}/ (exit ${r.code ?? r.signal}); tail:\n${r.err.slice(-1500)}\n${r.out.slice(-1500)}`);
  const lines = [...r.err.matchAll(/^LINE (\d+) (.*)$/gm)].map(([, ms, text]) => [text.trim(), Number(ms)]);
  return { ...JSON.parse(line), lines };
}

/** --against: `rounds` paired runs of one row on both builds at once, cores swapped each round. */
async function compare(row) {
  console.log(`${guest.name} to /${until}/, row ${row}: A = ${buildDir}, B = ${against}, both at once (${new Date().toISOString()})`);
  console.log('round   A s    B s   B/A');
  let logSum = 0;
  for (let i = 1; i <= rounds; i++) {
    // Both boots end (or time out) before a failure of either is reported: none is left running.
    const both = await Promise.allSettled([wasm(ACCEL[row], buildDir, i % 2), wasm(ACCEL[row], against, (i + 1) % 2)]);
    const failed = both.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const [a, b] = both.map((r) => r.value);
    logSum += Math.log(b.ms / a.ms);
    console.log(`${String(i).padStart(5)} ${s(a.ms).padStart(6)} ${s(b.ms).padStart(6)}  ${(b.ms / a.ms).toFixed(3)}`);
  }
  console.log(`B/A, geometric mean of ${rounds} rounds: ${Math.exp(logSum / rounds).toFixed(3)}`);
}

for (const row of rows) if (row !== 'native' && !ACCEL[row]) throw new Error(`unknown row ${row}: one of native, ${Object.keys(ACCEL).join(', ')}`);
if (against) {
  if (profileDir) throw new Error('--profile profiles the rows of one build, not an --against comparison');
  const row = opt('--rows', 'jit-tso').split(',')[0];
  if (!ACCEL[row]) throw new Error(`--against compares a wasm row, not ${row}`);
  await compare(row);
  process.exit(0);
}
const results = {};
for (const row of rows) {
  process.stderr.write(`bench-jit: ${row} ...\n`);
  if (row === 'native') {
    results[row] = await native();
    continue;
  }
  const profile = profileDir && join(profileDir, row);
  results[row] = await wasm(ACCEL[row], buildDir, null, profile);
  if (profile) {
    const files = readdirSync(profile).filter((f) => f.endsWith('.cpuprofile'));
    const threads = files.map((f) => JSON.parse(readFileSync(join(profile, f), 'utf8')));
    console.log(`${row}: ${files.length} profiles in ${profile}\n${report(summarize(vcpuProfile(threads)))}`);
  }
}
console.log(`${guest.name} to /${until}/, one run each (${new Date().toISOString()})`);
console.log('row        wall s   cpu s   x native   blocks (+copies in regions)  modules  MB  translate/compile/instantiate ms');
for (const [row, r] of Object.entries(results)) {
  const ratio = results.native ? (r.ms / results.native.ms).toFixed(1) : '-';
  const j = r.jit;
  const jit = j && j.enabled ? `${j.blocks} (+${j.regionBlocks ?? '-'})  ${j.modules}  ${(j.wasmBytes / 1e6).toFixed(1)}  ${Math.round(j.translateUs / 1000)}/${Math.round(j.compileUs / 1000)}/${Math.round(j.instantiateUs / 1000)}` : '-';
  console.log(`${row.padEnd(9)} ${s(r.ms).padStart(7)} ${r.cpuMs === null ? '      -' : s(r.cpuMs).padStart(7)} ${String(ratio).padStart(10)}   ${jit}`);
}
for (const tci of ['tci-tso', 'tci']) {
  if (results['jit-tso'] && results[tci]) console.log(`JIT (TSO) against ${tci}: ${(results[tci].ms / results['jit-tso'].ms).toFixed(2)}x faster`);
}
if (results['jit-tso'] && results.jit) console.log(`leaving out the TSO barriers: ${(results.jit.ms / results['jit-tso'].ms).toFixed(2)}x faster`);
if (blocks) {
  // Each loop's time: from the line before it to its own line.
  const loops = (r) => Object.fromEntries(r.lines.map(([text, ms], i) => [text, i ? (ms - r.lines[i - 1][1]) / 1000 : null]));
  const timed = Object.fromEntries(Object.entries(results).map(([row, r]) => [row, loops(r)]));
  const names = ['one-block', 'two-blocks', 'four-blocks', 'memory', 'rotate', 'indirect', 'call-return'];
  console.log(`\nloops of ${BLOCKS_ITERATIONS / 1e6}M iterations, seconds (x native)`);
  console.log(`${'loop'.padEnd(12)}${Object.keys(timed).map((row) => row.padStart(16)).join('')}`);
  for (const name of names) {
    const cells = Object.values(timed).map((t) => {
      const x = timed.native?.[name] ? ` (${(t[name] / timed.native[name]).toFixed(1)})` : '';
      return `${t[name]?.toFixed(2) ?? '-'}${x}`.padStart(16);
    });
    console.log(`${name.padEnd(12)}${cells.join('')}`);
  }
  const ns = (sec, blocksMore) => ((sec * 1e9) / BLOCKS_ITERATIONS / blocksMore).toFixed(1);
  for (const [row, t] of Object.entries(timed)) {
    if ([t['one-block'], t['two-blocks'], t['four-blocks']].some((x) => typeof x !== 'number')) continue;
    console.log(`${row}: one more block per iteration costs ${ns(t['two-blocks'] - t['one-block'], 1)} ns ` +
      `(two blocks against one), ${ns(t['four-blocks'] - t['one-block'], 3)} ns (four against one)`);
    if (typeof t.indirect === 'number') {
      console.log(`${row}: an indirect jump costs ${ns(t.indirect - t['two-blocks'], 1)} ns more than a chained one ` +
        '(indirect against two blocks)');
    }
  }
}
