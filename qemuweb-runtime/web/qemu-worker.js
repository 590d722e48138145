// The QEMU worker of one VM on the QEMU engine (started by the VM worker, worker.js).
// It is the main JavaScript thread of the Emscripten QEMU module: it imports the module's
// ES6 factory, writes firmware and kernels into MEMFS, gives each disk a MEMFS node whose
// read/write callbacks go through the disk channel to the VM worker (QemuDiskPort, which
// blocks with Atomics.wait while the storage stack answers), and carries the serial port.
// The logic (channel, request splitting, arguments) is Rust; this file is the glue.
//
// Messages in:  {type: "start", moduleUrl, wasmUrl, args, files: [{path, data}],
//                disks: [{path, size}], channel: SharedArrayBuffer, ioTimeoutMs}
//               {type: "stdin"}: serial input is waiting in the channel's stdin ring.
// Messages out: {type: "ready"} {type: "io"} {type: "serial", data: Uint8Array}
//               {type: "stderr", line} {type: "exit", status} {type: "error", what, message}
//               {type: "display", memory: WebAssembly.Memory, address}: QEMU's display
//               block (`-display qemuweb`, patch 0020), announced once by QEMU through
//               Module.qemuwebDisplay; the VM worker reads the screen from the module's
//               shared memory and writes input into it from then on.
//               {type: "jit", memory: WebAssembly.Memory | null, address}: the JIT's
//               statistics block (patch 0012's exported qemuweb_jit_stats()), or null
//               memory for a build without the JIT; posted once, before "ready".
//
// QEMU's stdin (its serial port) is ready for poll() only when input waits in the ring, and
// a "stdin" message wakes QEMU's poll. Emscripten treats a tty as always ready, which turns
// QEMU's main loop into an endless stream of proxied poll() and read() calls to this thread:
// it then hardly ever returns to its event loop, and whatever needs that loop (a new
// pthread's Worker, timers, messages) starves. With a real readiness QEMU sleeps in poll()
// until input, an I/O completion or its next timer.
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
  else if (error instanceof Event || (!error && !e.message)) fail("uncaught", "a worker of the QEMU module failed to load (are the module's .js and .wasm served side by side, with COOP/COEP?)");
  else fail("uncaught", error ?? e.message);
};
self.addEventListener("error", (e) => uncaught(e, e.error));
self.addEventListener("unhandledrejection", (e) => uncaught(e, e.reason));

let wakeStdin = () => {};
self.onmessage = (e) => {
  const m = e.data;
  if (m?.type === "stdin") wakeStdin();
  else if (m?.type === "start" && !started) {
    started = true;
    start(m).catch((err) => fail("start", err));
  }
};

const POLLIN = 1;

/** Gives QEMU's stdin (fd 0, Emscripten's tty device) a poll() that is ready only while
 * `ready()` says so, and returns the function that wakes the poll()s waiting on it. */
function pollableStdin(FS, ready) {
  const stream = FS.getStream(0);
  const node = stream.node;
  stream.stream_ops = { ...stream.stream_ops, poll: () => (ready() ? POLLIN : 0) };
  return () => { if (ready()) node.notifyListeners?.(POLLIN); };
}

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

let serialOut = [];
const flushSerial = () => {
  if (serialOut.length) post({ type: "serial", data: new Uint8Array(serialOut) });
  serialOut = [];
};

async function start(m) {
  // `#wasm=URL`: where qemuweb_runtime_bg.wasm is (the npm package's self-contained copy of
  // this worker gets it from the VM worker; the bundle's finds it beside the glue).
  const wasm = new URLSearchParams(self.location.hash.slice(1)).get("wasm");
  await init(wasm ? { module_or_path: wasm } : undefined);
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
  // The module's memory: a pthreads build imports it (env.memory), and the JIT's
  // statistics are read from it by the VM worker. Instantiated here as Emscripten would
  // (streaming, with its imports) so the import can be seen.
  let memory = null;
  const instantiateWasm = (imports, receive) => {
    memory = imports.env?.memory ?? null;
    const get = () => fetch(m.wasmUrl, { credentials: "same-origin" });
    WebAssembly.instantiateStreaming(get(), imports)
      // A server that does not say application/wasm: compile from the bytes, as Emscripten does.
      .catch((err) => (err instanceof TypeError
        ? get().then((r) => r.arrayBuffer()).then((bytes) => WebAssembly.instantiate(bytes, imports))
        : Promise.reject(err)))
      .then(({ instance, module }) => receive(instance, module), (err) => fail("module", err));
    return {};
  };
  const qemu = await factory({
    arguments: m.args,
    instantiateWasm,
    locateFile: (name) => (name.endsWith(".wasm") ? m.wasmUrl : new URL(name, m.moduleUrl).href),
    mainScriptUrlOrBlob: m.moduleUrl,
    stdin: () => port.stdinByte(),
    // One message per write(): the bytes of one syscall, sent when it returns.
    stdout: (c) => {
      if (c === null || c === undefined) return;
      if (serialOut.length === 0) queueMicrotask(flushSerial);
      serialOut.push(c & 0xff);
    },
    stderr,
    print: (text) => post({ type: "stderr", line: text }),
    printErr: (text) => post({ type: "stderr", line: text }),
    // Called only when the runtime may exit: with PROXY_TO_PTHREAD Emscripten keeps it
    // alive, so QEMU's exit() is silent and its stderr line is what the engine reports.
    onExit: exit,
    onAbort: (what) => fail("abort", what),
    // The memory is shared (pthreads): posting it shares it. The address is a Number,
    // or a BigInt from a Memory64 module.
    qemuwebDisplay: (memory, address) => post({ type: "display", memory, address: Number(address) }),
    preRun: [(Module) => {
      const FS = Module.FS;
      // The standard streams now (Emscripten would make them after preRun), to give
      // stdin its readiness.
      FS.init();
      wakeStdin = pollableStdin(FS, () => port.stdinReady());
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
  const stats = typeof qemu._qemuweb_jit_stats === "function" && memory instanceof WebAssembly.Memory;
  post({ type: "jit", memory: stats ? memory : null, address: stats ? Number(qemu._qemuweb_jit_stats()) : 0 });
  post({ type: "ready" });
}
