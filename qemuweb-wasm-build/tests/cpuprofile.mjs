// Where a QEMU WebAssembly build spends its vCPU thread's time: a summary of the V8 CPU
// profile (the `.cpuprofile` JSON of Node's `--cpu-prof`, or one saved from DevTools) of
// the thread that runs the guest. The wasm64 modules keep QEMU's function names (the
// link's --profiling-funcs), so every sample in QEMU's code names its C function; the JIT's
// generated functions have no names (`wasm-function[N]` of their own modules).
//
// Each sample's leaf frame falls in one part:
//   compiled     a function the JIT generated (a guest block compiled to WebAssembly): any
//                WebAssembly module but QEMU's (the one with the most distinct functions)
//   interpreter  TCI's loop (tcg_qemu_tb_exec, inlined into cpu_tb_exec)
//   waiting      a futex wait: for a halted vCPU's next event, for a call proxied to the
//                main thread (Emscripten's syscalls from a pthread: console output, ...),
//                for the BQL, or other
//   qemu         everything else (helpers, the softmmu slow path, translation, JS glue)
// and the compiled part's concentration: how much of it the hottest N functions take.
//
//   import { summarize, vcpuProfile, report } from './cpuprofile.mjs';
//   console.log(report(summarize(vcpuProfile(files), { from: 30, to: 330 })));

/** Function names of the frames that wait on a futex (the leaf of a blocked thread). */
const WAITS = new Set(['_do_futex_wait', '__timedwait_cp', '__timedwait', 'emscripten_futex_wait', 'futex_wait_main_browser_thread']);
/** Ancestors that say what a wait is for, nearest first. */
const WAIT_KINDS = [
  ['qemu_process_cpu_events', 'halted'],
  ['emscripten_proxy_sync_with_ctx', 'main thread'],
  ['_emscripten_run_js_on_main_thread', 'main thread'],
  ['bql_lock_impl', 'BQL'],
];
const INTERPRETER = new Set(['cpu_tb_exec', 'tcg_qemu_tb_exec']);

/**
 * The URL of QEMU's own module in `profile`: of the WebAssembly modules, the one with the
 * most distinct functions (a JIT module holds one batch of blocks).
 */
function qemuUrl(profile) {
  const fns = new Map();
  for (const { callFrame: f } of profile.nodes) {
    if (!f.url?.startsWith('wasm://')) continue;
    if (!fns.has(f.url)) fns.set(f.url, new Set());
    fns.get(f.url).add(f.functionName);
  }
  let best = null;
  for (const [url, set] of fns) if (!best || set.size > fns.get(best).size) best = url;
  return best;
}

/** Whether the frame is in a function the JIT generated (a WebAssembly module not QEMU's). */
const isCompiled = (frame, qemu) => frame.url?.startsWith('wasm://') && frame.url !== qemu;

/**
 * Of several profiles (one per thread), the one of the vCPU thread: the most samples in
 * compiled blocks or the interpreter. Throws if none has any.
 */
export function vcpuProfile(profiles) {
  let best = null;
  let bestCount = 0;
  for (const p of profiles) {
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const qemu = qemuUrl(p);
    let count = 0;
    for (const id of p.samples) {
      const f = byId.get(id)?.callFrame;
      if (f && (isCompiled(f, qemu) || INTERPRETER.has(f.functionName))) count++;
    }
    if (count > bestCount) [best, bestCount] = [p, count];
  }
  if (!best) throw new Error('no profile has a sample in compiled guest code or in the interpreter: not a profile of a QEMU vCPU thread');
  return best;
}

/**
 * Summarizes `profile` between `from` and `to` seconds after its start: the share of each
 * part, the waits by kind, the functions with the most samples of their own outside
 * compiled code, and how concentrated the compiled part is.
 */
export function summarize(profile, { from = 0, to = Infinity, top = 15 } = {}) {
  if (!Array.isArray(profile?.nodes) || !Array.isArray(profile?.samples) || !Array.isArray(profile?.timeDeltas)) {
    throw new Error('not a V8 CPU profile (nodes, samples and timeDeltas)');
  }
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const qemu = qemuUrl(profile);
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const kindOf = new Map();
  const waitKind = (id) => {
    if (!kindOf.has(id)) {
      let kind = 'other';
      const seen = new Set();
      for (let p = parent.get(id); p !== undefined && !seen.has(p); p = parent.get(p)) {
        seen.add(p);
        const hit = WAIT_KINDS.find(([name]) => name === byId.get(p).callFrame.functionName);
        if (hit) {
          kind = hit[1];
          break;
        }
      }
      kindOf.set(id, kind);
    }
    return kindOf.get(id);
  };
  const parts = { compiled: 0, interpreter: 0, waiting: 0, qemu: 0 };
  const waits = {};
  const own = new Map();
  const compiled = new Map();
  let t = 0;
  let samples = 0;
  const named = profile.nodes.some(({ callFrame: f }) => f.url === qemu && f.functionName === 'cpu_exec_loop');
  for (let i = 0; i < profile.samples.length; i++) {
    t += (profile.timeDeltas[i] ?? 0) / 1e6;
    const node = byId.get(profile.samples[i]);
    if (t < from || t > to || !node) continue;
    samples++;
    const f = node.callFrame;
    if (isCompiled(f, qemu)) {
      parts.compiled++;
      const key = `${f.url} ${f.functionName}`;
      compiled.set(key, (compiled.get(key) ?? 0) + 1);
      continue;
    }
    if (INTERPRETER.has(f.functionName)) parts.interpreter++;
    else if (WAITS.has(f.functionName)) {
      parts.waiting++;
      const k = waitKind(node.id);
      waits[k] = (waits[k] ?? 0) + 1;
    } else parts.qemu++;
    const name = f.functionName || '(anonymous)';
    own.set(name, (own.get(name) ?? 0) + 1);
  }
  const share = (n) => (samples ? n / samples : 0);
  const hottest = [...compiled.values()].sort((a, b) => b - a);
  const upTo = (n) => share(hottest.slice(0, n).reduce((a, b) => a + b, 0)) / (share(parts.compiled) || 1);
  return {
    seconds: Math.min(t, to) - from,
    samples,
    named,
    parts: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, share(v)])),
    waits: Object.fromEntries(Object.entries(waits).map(([k, v]) => [k, share(v)])),
    top: [...own].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, n]) => [name, share(n)]),
    compiledFunctions: compiled.size,
    compiledTop: Object.fromEntries([10, 100, 1000].map((n) => [n, upTo(n)])),
  };
}

/** The summary as lines of text. */
export function report(s) {
  const pc = (x) => `${(100 * x).toFixed(1).padStart(5)} %`;
  const lines = [`vCPU thread, ${s.seconds.toFixed(0)} s, ${s.samples} samples`];
  for (const [k, v] of Object.entries(s.parts)) lines.push(`  ${k.padEnd(12)} ${pc(v)}`);
  for (const [k, v] of Object.entries(s.waits)) lines.push(`    waiting: ${k.padEnd(12)} ${pc(v)}`);
  lines.push(`  compiled: ${s.compiledFunctions} functions; the hottest 10/100/1000 take ` +
    `${[10, 100, 1000].map((n) => `${(100 * s.compiledTop[n]).toFixed(0)} %`).join('/')} of it`);
  lines.push('  most samples of their own outside compiled code:');
  for (const [name, v] of s.top) lines.push(`    ${pc(v)}  ${name}`);
  if (!s.named) lines.push('  (QEMU\'s functions have no names: a build linked without --profiling-funcs; the interpreter and waits are counted as qemu)');
  return lines.join('\n');
}
