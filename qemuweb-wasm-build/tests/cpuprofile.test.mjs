// The profile summary of scripts/bench-jit --profile (cpuprofile.mjs), on profiles in V8's
// .cpuprofile format: which thread is the vCPU's, the parts, the waits by kind, and bad input.
//   node --test qemuweb-wasm-build/tests/cpuprofile.test.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { report, summarize, vcpuProfile } from './cpuprofile.mjs';

const QEMU = 'wasm://wasm/0badc0de';

/**
 * A profile from a tree given as [name, url, children...] and samples as
 * [leaf name, milliseconds since the previous sample] pairs.
 */
function profile(tree, samples) {
  const nodes = [];
  const byName = new Map();
  const add = ([functionName, url, ...children]) => {
    const node = { id: nodes.length + 1, callFrame: { functionName, url }, children: [] };
    nodes.push(node);
    byName.set(functionName, node.id);
    for (const c of children) node.children.push(add(c));
    return node.id;
  };
  add(tree);
  return {
    nodes,
    startTime: 0,
    endTime: samples.reduce((t, [, ms]) => t + ms * 1000, 0),
    samples: samples.map(([name]) => byName.get(name)),
    timeDeltas: samples.map(([, ms]) => ms * 1000),
  };
}

const vcpu = profile(['(root)', '',
  ['mttcg_cpu_thread_fn', QEMU,
    ['cpu_exec_loop', QEMU,
      ['cpu_tb_exec', QEMU,
        ['wasm-function[1]', 'wasm://wasm/00001111', ['helper_lookup_tb_ptr', QEMU]],
        ['wasm-function[2]', 'wasm://wasm/00002222']],
      ['bql_lock_impl', QEMU, ['_do_futex_wait', QEMU]]],
    ['qemu_process_cpu_events', QEMU, ['pthread_cond_wait', QEMU, ['__timedwait_cp', QEMU]]]]],
[
  ['wasm-function[1]', 1], ['wasm-function[1]', 1], ['wasm-function[1]', 1], ['wasm-function[2]', 1],
  ['cpu_tb_exec', 1], ['helper_lookup_tb_ptr', 1], ['_do_futex_wait', 1], ['__timedwait_cp', 1],
  ['cpu_exec_loop', 1], ['cpu_exec_loop', 1],
]);

const mainThread = profile(['(root)', '', ['main', QEMU, ['qemu_main_loop', QEMU, ['_do_futex_wait', QEMU]]]],
  [['_do_futex_wait', 5], ['qemu_main_loop', 5]]);

test('the vCPU thread is the profile with compiled blocks or the interpreter', () => {
  assert.equal(vcpuProfile([mainThread, vcpu]), vcpu);
  assert.throws(() => vcpuProfile([mainThread]), /not a profile of a QEMU vCPU thread/);
});

test('every sample falls in one part; waits by what they wait for', () => {
  const s = summarize(vcpu);
  assert.equal(s.samples, 10);
  assert.equal(s.named, true);
  assert.deepEqual(s.parts, { compiled: 0.4, interpreter: 0.1, waiting: 0.2, qemu: 0.3 });
  assert.deepEqual(s.waits, { BQL: 0.1, halted: 0.1 });
  assert.deepEqual(s.top[0], ['cpu_exec_loop', 0.2]);
  assert.equal(s.compiledFunctions, 2);
  assert.equal(s.compiledTop[10], 1);
  assert.match(report(s), /compiled +40\.0 %/);
});

test('a time window counts only its samples', () => {
  // Samples at 1, 2, ... 10 ms: the window 0.0035-0.0065 s holds the 4th to the 6th.
  const s = summarize(vcpu, { from: 0.0035, to: 0.0065 });
  assert.equal(s.samples, 3);
  assert.deepEqual(s.parts, { compiled: 1 / 3, interpreter: 1 / 3, waiting: 0, qemu: 1 / 3 });
});

test('a module without names is reported as such', () => {
  const anon = structuredClone(vcpu);
  for (const n of anon.nodes) if (n.callFrame.url === QEMU) n.callFrame.functionName = `wasm-function[${n.id + 100}]`;
  const s = summarize(anon);
  assert.equal(s.named, false);
  assert.equal(s.parts.compiled, 0.4);
  assert.match(report(s), /without --profiling-funcs/);
});

test('input that is not a CPU profile gets a clear error', () => {
  for (const bad of [null, {}, { nodes: [], samples: [] }, { nodes: 1, samples: [], timeDeltas: [] }]) {
    assert.throws(() => summarize(bad), /not a V8 CPU profile/);
  }
});
