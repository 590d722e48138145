// Runs an instruction test guest on a QEMU WebAssembly build under Node (22 or newer for
// wasm64 output) and prints QEMU's serial output until the guest's "ALL DONE" line.
//
//   node insn-runner.mjs QEMU-JS TIMEOUT-SECS NAME=HOSTPATH -- QEMU-ARGS...
//
// The file HOSTPATH is put in the module's filesystem as /pack/NAME, next to every *.bin
// firmware of QEMU-JS's directory (pass -L /pack). Exit status: 0 after "ALL DONE" or an
// "UNEXPECTED" line, 1 on timeout, 2 if QEMU exits first.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const argv = process.argv.slice(2);
const dashes = argv.indexOf('--');
if (dashes !== 3) {
  process.stderr.write('usage: insn-runner.mjs QEMU-JS TIMEOUT-SECS NAME=HOSTPATH -- QEMU-ARGS...\n');
  process.exit(64);
}
const [js, timeout, file] = argv;
const eq = file.indexOf('=');
const qemuArgs = argv.slice(dashes + 1);
const dir = dirname(resolve(js));
let line = '';

setTimeout(() => {
  process.stderr.write(`\ninsn-runner: timeout after ${timeout} s\n`);
  process.exit(1);
}, Number(timeout) * 1000).unref?.();

const factory = (await import(pathToFileURL(resolve(js)).href)).default;
await factory({
  arguments: qemuArgs,
  preRun: [
    (module) => {
      module.FS.mkdir('/pack');
      for (const f of readdirSync(dir).filter((n) => n.endsWith('.bin'))) {
        module.FS.writeFile(`/pack/${f}`, readFileSync(join(dir, f)));
      }
      module.FS.writeFile(`/pack/${file.slice(0, eq)}`, readFileSync(file.slice(eq + 1)));
    },
  ],
  stdin: () => undefined,
  stdout: (code) => {
    if (code === null || code === undefined) return;
    process.stdout.write(Buffer.from([code]));
    if (code !== 10) {
      line += String.fromCharCode(code);
      return;
    }
    const done = line.trim() === 'ALL DONE' || line.startsWith('UNEXPECTED');
    line = '';
    if (done) setTimeout(() => process.exit(0), 20);
  },
  stderr: (code) => code !== null && code !== undefined && process.stderr.write(Buffer.from([code])),
  onExit: (status) => {
    process.stderr.write(`\ninsn-runner: QEMU exited with status ${status}\n`);
    process.exit(2);
  },
});
