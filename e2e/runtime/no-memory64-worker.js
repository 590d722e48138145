// The runtime's VM worker as a browser without WebAssembly Memory64 runs it (for the QEMU
// engine's refusal test): WebAssembly.validate says no to any module with a 64-bit memory,
// then the real worker runs. Chromium 156 itself cannot switch Memory64 off (neither
// --js-flags=--no-experimental-wasm-memory64 nor --no-wasm-memory64 does).
const validate = WebAssembly.validate.bind(WebAssembly);

/** Whether `bytes` is a module whose memory section declares a 64-bit memory. */
function hasMemory64(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes.buffer ?? bytes);
  let at = 8;
  const leb = () => { let v = 0, s = 0, x; do { x = b[at++]; v |= (x & 0x7f) << s; s += 7; } while (x & 0x80); return v; };
  while (at < b.length) {
    const id = b[at++];
    const size = leb();
    if (id === 5) { leb(); return (b[at] & 4) !== 0; }
    at += size;
  }
  return false;
}

WebAssembly.validate = (bytes) => !hasMemory64(bytes) && validate(bytes);
await import('./pkg/worker.js');
