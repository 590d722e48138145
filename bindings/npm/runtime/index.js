// The entry point of @qemuweb/runtime: everything qemuweb-runtime exports through
// wasm-bindgen, with QemuClient's worker defaulting to the package's own worker.js.
//
// Both URLs are `new URL('./file', import.meta.url)`, which bundlers (Vite, webpack 5,
// Parcel, esbuild with a loader) rewrite to the emitted asset, and which a browser resolves
// against this file when the package is served as is.
import init, { QemuClient as GeneratedQemuClient } from './qemuweb_runtime.js';

export * from './qemuweb_runtime.js';
export default init;

/** Where qemuweb_runtime_bg.wasm is (the page's `init()` loads it from there too). */
export const wasmUrl = new URL('./qemuweb_runtime_bg.wasm', import.meta.url).href;

/**
 * The VM worker script; its `#wasm=` fragment points it at `wasmUrl`. (A fragment, not a
 * query: it never reaches the server, so no dev server mistakes the request for the wasm.)
 */
export const workerUrl = `${new URL('./worker.js', import.meta.url).href}#wasm=${encodeURIComponent(wasmUrl)}`;

/** `QemuClient` whose `workerUrl` option defaults to this package's worker. */
export class QemuClient extends GeneratedQemuClient {
  constructor(options) {
    super({ ...options, workerUrl: options?.workerUrl ?? workerUrl });
  }
}
