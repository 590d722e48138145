// Runs a qemuweb-wasm-build output (qemu-system-<arch>.js/.wasm + firmware) under Node.
//
//   node run-node.mjs DIR [--arch x86_64] [--file NAME=HOSTPATH]... [--timeout SECS]
//        [--expect TEXT | --send TEXT]... -- QEMU-ARGS...
//
// Every *.bin file of DIR and every --file is written into MEMFS under /pack before QEMU
// starts (pass `-L /pack` for the firmware, `-drive file=/pack/NAME`). QEMU's stdout is
// taken character by character (Module.stdout; Module.print would buffer lines) and echoed.
// --expect waits for TEXT in the output after the previous match; --send queues TEXT
// (with \r and \n escapes) on QEMU's stdin. When every action is done the script prints
// "SMOKE OK" with timings and exits 0; on timeout it exits 1, if QEMU exits first 2.
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const started = performance.now();
const elapsed = () => Math.round(performance.now() - started);

function usage(message) {
  process.stderr.write(`run-node.mjs: ${message}\n`);
  process.exit(64);
}

const argv = process.argv.slice(2);
const dashes = argv.indexOf('--');
if (argv.length === 0 || dashes < 1) usage('usage: run-node.mjs DIR [options] -- QEMU-ARGS...');
const dir = resolve(argv[0]);
const qemuArgs = argv.slice(dashes + 1);
let arch = 'x86_64';
let timeoutSecs = 120;
const files = [];
const actions = [];
for (let i = 1; i < dashes; i += 2) {
  const [flag, value] = [argv[i], argv[i + 1]];
  if (value === undefined) usage(`${flag} needs a value`);
  if (flag === '--arch') arch = value;
  else if (flag === '--timeout') timeoutSecs = Number(value);
  else if (flag === '--file') {
    const eq = value.indexOf('=');
    if (eq < 1) usage('--file wants NAME=HOSTPATH');
    files.push([value.slice(0, eq), value.slice(eq + 1)]);
  } else if (flag === '--expect') actions.push({ expect: value });
  else if (flag === '--send') actions.push({ send: value.replaceAll('\\r', '\r').replaceAll('\\n', '\n') });
  else usage(`unknown option ${flag}`);
}

let output = '';
let searchFrom = 0;
const stdin = [];
const timings = [];

function advance() {
  while (actions.length > 0) {
    const action = actions[0];
    if (action.send !== undefined) {
      for (const byte of Buffer.from(action.send)) stdin.push(byte);
      actions.shift();
      continue;
    }
    const at = output.indexOf(action.expect, searchFrom);
    if (at < 0) return;
    searchFrom = at + action.expect.length;
    timings.push(`${JSON.stringify(action.expect)} at ${elapsed()} ms`);
    actions.shift();
  }
  process.stderr.write(`\nSMOKE OK: ${timings.join(', ')}\n`);
  process.exit(0);
}

const timer = setTimeout(() => {
  process.stderr.write(`\nSMOKE TIMEOUT after ${timeoutSecs} s waiting for ${JSON.stringify(actions[0])}\n`);
  process.exit(1);
}, timeoutSecs * 1000);
timer.unref?.();

const onChar = (code) => {
  if (code === null || code === undefined) return;
  process.stdout.write(Buffer.from([code]));
  output += String.fromCharCode(code);
  advance();
};

const firmware = readdirSync(dir).filter((f) => f.endsWith('.bin'));
const factory = (await import(pathToFileURL(join(dir, `qemu-system-${arch}.js`)).href)).default;
await factory({
  arguments: qemuArgs,
  preRun: [
    (module) => {
      module.FS.mkdir('/pack');
      for (const f of firmware) module.FS.writeFile(`/pack/${f}`, readFileSync(join(dir, f)));
      for (const [name, path] of files) module.FS.writeFile(`/pack/${name}`, readFileSync(path));
    },
  ],
  stdin: () => (stdin.length > 0 ? stdin.shift() : undefined),
  stdout: onChar,
  stderr: (code) => code !== null && code !== undefined && process.stderr.write(Buffer.from([code])),
  onExit: (status) => {
    process.stderr.write(`\nQEMU exited with status ${status} at ${elapsed()} ms\n`);
    advance();
    process.exit(2);
  },
});
process.stderr.write(`runtime ready at ${elapsed()} ms\n`);
if (actions.length === 0) advance();
