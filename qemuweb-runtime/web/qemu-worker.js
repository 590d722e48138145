// The QEMU worker of one VM on the QEMU engine (started by the VM worker, worker.js).
// It is the main JavaScript thread of the Emscripten QEMU module: it imports the module's
// ES6 factory, writes firmware and kernels into MEMFS, gives each disk a MEMFS node whose
// read/write callbacks go through the disk channel to the VM worker (QemuDiskPort, which
// blocks with Atomics.wait while the storage stack answers), and carries the serial port.
// The logic (channel, request splitting, arguments) is Rust; this file is the glue.
//
// Messages in:  {type: "start", moduleUrl, wasmUrl, args, files: [{path, data}],
//                disks: [{path, size}], channel: SharedArrayBuffer, ioTimeoutMs,
//                qmpPath, statePath, stateChunkBytes, state?: Uint8Array}
//               {type: "stdin"}: serial input is waiting in the channel's stdin ring.
//               {type: "qmp"}: QMP commands are waiting in the channel's QMP ring.
//               {type: "takeState"}: hand the machine state file (statePath) over.
// Messages out: {type: "ready"} {type: "io"} {type: "serial", data: Uint8Array}
//               {type: "qmp", data: Uint8Array}: what QEMU's QMP monitor wrote.
//               {type: "state", chunks: [Uint8Array]} or {type: "state", error}: the
//               machine state file, in stateChunkBytes chunks (its buffers transferred).
//               {type: "stderr", line} {type: "exit", status} {type: "error", what, message}
//               {type: "display", memory: WebAssembly.Memory, address}: QEMU's display
//               block (`-display qemuweb`, patch 0020), announced once by QEMU through
//               Module.qemuwebDisplay; the VM worker reads the screen from the module's
//               shared memory and writes input into it from then on.
//               {type: "net", memory: WebAssembly.Memory, address}: the ring block of
//               QEMU's NIC on the page's network (`-netdev qemuweb`, patch 0030),
//               announced once by QEMU through Module.qemuwebNet; the VM worker moves
//               frames through its rings from then on.
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
const EAGAIN = 6;
let started = false;

const post = (m, transfer) => self.postMessage(m, transfer ?? []);
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
let wakeQmp = () => {};
let takeState = () => post({ type: "state", error: "QEMU has not started" });
self.onmessage = (e) => {
  const m = e.data;
  if (m?.type === "stdin") wakeStdin();
  else if (m?.type === "qmp") wakeQmp();
  else if (m?.type === "takeState") takeState();
  else if (m?.type === "start" && !started) {
    started = true;
    start(m).catch((err) => fail("start", err));
  }
};

const POLLIN = 1;
const POLLOUT = 4;

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

/** The device file of QEMU's QMP monitor (`-chardev pipe,path=...`, which opens it
 * read-write): reads take the channel's QMP ring, poll() is ready while it has bytes,
 * writes are posted as "qmp" messages. Returns the function that wakes QEMU's poll(). */
function qmpDevice(FS, port, path) {
  FS.createDevice.major ??= 64;
  const dev = FS.makedev(FS.createDevice.major++, 0);
  let out = [];
  const flush = () => {
    if (out.length) post({ type: "qmp", data: new Uint8Array(out) });
    out = [];
  };
  FS.registerDevice(dev, {
    open: (stream) => { stream.seekable = false; },
    close: () => {},
    read: (stream, buffer, offset, length) => {
      let n = 0;
      for (; n < length; n++) {
        const b = port.qmpByte();
        if (b === undefined) break;
        buffer[offset + n] = b;
      }
      if (n === 0) throw new FS.ErrnoError(EAGAIN);
      return n;
    },
    write: (stream, buffer, offset, length) => {
      if (out.length === 0) queueMicrotask(flush);
      for (let i = 0; i < length; i++) out.push(buffer[offset + i] & 0xff);
      return length;
    },
    poll: () => (port.qmpReady() ? POLLIN : 0) | POLLOUT,
  });
  FS.mkdirTree(path.slice(0, path.lastIndexOf("/")));
  FS.mkdev(path, 0o666, dev);
  const node = FS.lookupPath(path).node;
  return () => { if (port.qmpReady()) node.notifyListeners?.(POLLIN); };
}

/** A MEMFS file kept in `chunkBytes` chunks rather than one growing array (the machine
 * state image: hundreds of MiB for a large guest), filled from `initial` (views, no copy).
 * Returns `take()`, which gives the file's chunks and removes it. */
function chunkedFile(FS, path, chunkBytes, initial) {
  const slash = path.lastIndexOf("/");
  FS.mkdirTree(path.slice(0, slash));
  const node = FS.createFile(path.slice(0, slash), path.slice(slash + 1), {}, true, true);
  let chunks = [];
  let size = 0;
  if (initial) {
    for (let at = 0; at < initial.length; at += chunkBytes) chunks.push(initial.subarray(at, Math.min(at + chunkBytes, initial.length)));
    size = initial.length;
  }
  const resize = (n) => {
    size = n;
    chunks.length = Math.ceil(n / chunkBytes);
    const last = chunks.length - 1;
    const keep = n - last * chunkBytes;
    if (last >= 0 && chunks[last] && keep < chunks[last].length) chunks[last].fill(0, keep);
  };
  // A chunk that can be written: full-sized and this file's own.
  const own = (i) => {
    const c = chunks[i];
    if (c && c.length === chunkBytes && c.byteOffset === 0 && c.buffer.byteLength === chunkBytes) return c;
    const full = new Uint8Array(chunkBytes);
    if (c) full.set(c);
    chunks[i] = full;
    return full;
  };
  Object.defineProperty(node, "usedBytes", { get: () => size, set: resize });
  node.node_ops = {
    ...node.node_ops,
    setattr: (n, attr) => {
      for (const key of ["mode", "atime", "mtime", "ctime", "timestamp"]) if (attr[key] != null) n[key] = attr[key];
      if (attr.size !== undefined) resize(attr.size);
    },
  };
  const view = (buffer, offset, length) => new Uint8Array(buffer.buffer, buffer.byteOffset + offset, length);
  node.stream_ops = {
    ...node.stream_ops,
    read: (stream, buffer, offset, length, position) => {
      const end = Math.min(size, position + length);
      const dest = view(buffer, offset, Math.max(0, end - position));
      for (let p = position; p < end;) {
        const i = Math.floor(p / chunkBytes);
        const o = p - i * chunkBytes;
        const n = Math.min(end - p, chunkBytes - o);
        const c = chunks[i];
        const have = c ? Math.max(0, Math.min(n, c.length - o)) : 0;
        if (have) dest.set(c.subarray(o, o + have), p - position);
        if (have < n) dest.fill(0, p - position + have, p - position + n);
        p += n;
      }
      return Math.max(0, end - position);
    },
    write: (stream, buffer, offset, length, position) => {
      const src = view(buffer, offset, length);
      for (let p = position; p < position + length;) {
        const i = Math.floor(p / chunkBytes);
        const o = p - i * chunkBytes;
        const n = Math.min(position + length - p, chunkBytes - o);
        if (i >= chunks.length) chunks.length = i + 1;
        own(i).set(src.subarray(p - position, p - position + n), o);
        p += n;
      }
      size = Math.max(size, position + length);
      return length;
    },
    allocate: (stream, offset, length) => { if (offset + length > size) resize(offset + length); },
    mmap: () => { throw new FS.ErrnoError(EIO); },
    msync: () => 0,
  };
  return () => {
    const out = [];
    for (let i = 0; i * chunkBytes < size; i++) {
      const n = Math.min(chunkBytes, size - i * chunkBytes);
      out.push(own(i).subarray(0, n));
    }
    chunks = [];
    size = 0;
    FS.unlink(path);
    return out;
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
    qemuwebNet: (memory, address) => post({ type: "net", memory, address: Number(address) }),
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
      wakeQmp = qmpDevice(FS, port, m.qmpPath);
      // The machine state: the one to resume, or an empty file a save fills (QEMU's
      // blockdev-create opens it with O_TRUNC).
      let take = chunkedFile(FS, m.statePath, m.stateChunkBytes, m.state ?? null);
      takeState = () => {
        try {
          const chunks = take();
          take = chunkedFile(FS, m.statePath, m.stateChunkBytes, null);
          const buffers = [...new Set(chunks.map((c) => c.buffer))];
          post({ type: "state", chunks }, buffers);
        } catch (err) {
          post({ type: "state", error: String(err?.message ?? err) });
        }
      };
    }],
  });
  const stats = typeof qemu._qemuweb_jit_stats === "function" && memory instanceof WebAssembly.Memory;
  post({ type: "jit", memory: stats ? memory : null, address: stats ? Number(qemu._qemuweb_jit_stats()) : 0 });
  post({ type: "ready" });
}
