// The entry point of @qemuweb/runtime: everything qemuweb-runtime exports through
// wasm-bindgen, with QemuClient's worker and engine assets defaulting to the installed
// packages, and QemuError, the error type of every rejection.
//
// Every URL is `new URL('…', import.meta.url)`, which bundlers (Vite, webpack 5, Parcel,
// esbuild with a loader) rewrite to the emitted asset, and which a browser resolves against
// this file when the package is served as is.
import init, { QemuClient as GeneratedQemuClient } from './qemuweb_runtime.js';

export * from './qemuweb_runtime.js';
export default init;
// bindings/npm/assemble.mjs writes the path of the wasm-bindgen snippet here (the module the
// generated glue imports, so that `instanceof QemuError` holds for the errors it makes).
export { QemuError } from './QEMU_ERROR_MODULE';

/** Where qemuweb_runtime_bg.wasm is (the page's `init()` loads it from there too). */
export const wasmUrl = new URL('./qemuweb_runtime_bg.wasm', import.meta.url).href;

/**
 * The VM worker script; its `#wasm=` fragment points it at `wasmUrl`. (A fragment, not a
 * query: it never reaches the server, so no dev server mistakes the request for the wasm.)
 */
export const workerUrl = `${new URL('./worker.js', import.meta.url).href}#wasm=${encodeURIComponent(wasmUrl)}`;

/** The QEMU engine's worker script (the VM worker passes it its own `#wasm=`). */
export const qemuWorkerUrl = new URL('./qemu-worker.js', import.meta.url).href;

/**
 * The engine assets the installed packages hold: v86 (a dependency of this package) and
 * SeaBIOS (@qemuweb/firmware), found beside this package in node_modules; this package's
 * QEMU worker, and the QEMU modules of @qemuweb/qemu-wasm (an optional peer) as `qemuDir`.
 */
export const packagedAssets = {
  v86Module: new URL('../../v86/build/libv86.mjs', import.meta.url).href,
  v86Wasm: new URL('../../v86/build/v86.wasm', import.meta.url).href,
  bios: { kind: 'url', url: new URL('../firmware/bios-256k.bin', import.meta.url).href },
  vgaBios: { kind: 'url', url: new URL('../firmware/vgabios-stdvga.bin', import.meta.url).href },
  qemuWorker: qemuWorkerUrl,
  qemuDir: new URL('../qemu-wasm/dist/', import.meta.url).href,
};

/**
 * `QemuClient` whose `workerUrl` defaults to this package's worker and whose `assets`
 * default to `packagedAssets`, asset by asset.
 */
export class QemuClient extends GeneratedQemuClient {
  constructor(options) {
    super({
      ...options,
      workerUrl: options?.workerUrl ?? workerUrl,
      assets: { ...packagedAssets, ...options?.assets },
    });
  }
}
