// The QEMU worker of one VM on the QEMU engine (started by the VM worker, worker.js).
// It is the main JavaScript thread of the Emscripten QEMU module: it imports the module's
// ES6 factory, writes firmware and kernels into MEMFS, gives each disk a MEMFS node whose
// read/write callbacks go through the disk channel to the VM worker (QemuDiskPort, which
// blocks with Atomics.wait while the storage stack answers), and carries the serial port.
// The logic (channel, request splitting, arguments) is Rust; this file is the glue.
//
// Messages in:  {type: "start", moduleUrl, wasmUrl, args, files: [{path, data}],
//                disks: [{path, size}], channel: SharedArrayBuffer, ioTimeoutMs}
// (serial input arrives through the channel's stdin ring: QEMU polls stdin from this thread
// in a loop of proxied calls, during which it may not get to its message queue.)
// Messages out: {type: "ready"} {type: "io"} {type: "serial", data: Uint8Array}
//               {type: "stderr", line} {type: "exit", status} {type: "error", what, message}
import init, { QemuDiskPort } from "./qemuweb_runtime.js";

const EIO = 29;
let started = false;

const post = (m) => self.postMessage(m);
const fail = (what, e) => post({ type: "error", what, message: String(e?.message ?? e) });

// An ExitStatus that escapes Emscripten is QEMU's exit; anything else uncaught (a wasm trap
// in a QEMU thread, a pthread worker that failed to load) is an error. Both are reported
// rather than left to the worker's error event.
let stderrLine = [];
const flushStderr = () => {
  if (stderrLine.length) post({ type: "stderr", line: new TextDecoder().decode(new Uint8Array(stderrLine)) });
  stderrLine = [];
};
let exited = false;
const exit = (status) => {
  if (exited) return;
  exited = true;
  flushStderr();
  post({ type: "exit", status });
};
const uncaught = (e, error) => {
  e.preventDefault();
  if (error?.name === "ExitStatus") exit(error.status);
  else if (error instanceof Event || (!error && !e.message)) fail("uncaught", "a worker of the QEMU module failed to load (are qemu-system-i386.js and .wasm served side by side, with COOP/COEP?)");
  else fail("uncaught", error ?? e.message);
};
self.addEventListener("error", (e) => uncaught(e, e.error));
self.addEventListener("unhandledrejection", (e) => uncaught(e, e.reason));

self.onmessage = (e) => {
  const m = e.data;
  if (m?.type === "start" && !started) {
    started = true;
    start(m).catch((err) => fail("start", err));
  }
};

/** A MEMFS file of `size` bytes whose reads and writes go through `port` (disk `index`). */
function channelFile(FS, port, path, index, size) {
  const slash = path.lastIndexOf("/");
  const node = FS.createFile(path.slice(0, slash) || "/", path.slice(slash + 1), {}, true, true);
  Object.defineProperty(node, "usedBytes", { get: () => size });
  const call = (f, buffer, offset, length, position) => {
    const view = new Uint8Array(buffer.buffer, buffer.byteOffset + offset, length);
    try {
      return f.call(port, index, view, position);
    } catch (err) {
      post({ type: "error", what: "io", message: `${path}: ${err.message ?? err}` });
      throw new FS.ErrnoError(err.errno ?? EIO);
    }
  };
  node.stream_ops = {
    ...node.stream_ops,
    read: (stream, buffer, offset, length, position) => call(port.read, buffer, offset, length, position),
    write: (stream, buffer, offset, length, position) => call(port.write, buffer, offset, length, position),
    allocate: () => {},
    mmap: () => { throw new FS.ErrnoError(EIO); },
    msync: () => 0,
  };
}

async function start(m) {
  await init();
  const port = new QemuDiskPort(m.channel, m.disks.map((d) => d.size), () => post({ type: "io" }), m.ioTimeoutMs);
  let factory;
  try {
    factory = (await import(m.moduleUrl)).default;
  } catch (err) {
    return fail("module", err);
  }
  const stderr = (c) => {
    if (c === null || c === undefined) return;
    if ((c & 0xff) === 10) flushStderr();
    else stderrLine.push(c & 0xff);
  };
  await factory({
    arguments: m.args,
    locateFile: (name) => (name.endsWith(".wasm") ? m.wasmUrl : new URL(name, m.moduleUrl).href),
    mainScriptUrlOrBlob: m.moduleUrl,
    stdin: () => port.stdinByte(),
    // Posted at once (this thread may not return to its event loop for a while); the VM
    // worker batches them into serial events.
    stdout: (c) => { if (c !== null && c !== undefined) post({ type: "serial", data: new Uint8Array([c & 0xff]) }); },
    stderr,
    print: (text) => post({ type: "stderr", line: text }),
    printErr: (text) => post({ type: "stderr", line: text }),
    // Called only when the runtime may exit: with PROXY_TO_PTHREAD Emscripten keeps it
    // alive, so QEMU's exit() is silent and its stderr line is what the engine reports.
    onExit: exit,
    onAbort: (what) => fail("abort", what),
    preRun: [(Module) => {
      const FS = Module.FS;
      for (const f of m.files) {
        FS.mkdirTree(f.path.slice(0, f.path.lastIndexOf("/")));
        FS.writeFile(f.path, f.data);
      }
      m.disks.forEach((d, i) => {
        FS.mkdirTree(d.path.slice(0, d.path.lastIndexOf("/")));
        channelFile(FS, port, d.path, i, d.size);
      });
    }],
  });
  post({ type: "ready" });
}
