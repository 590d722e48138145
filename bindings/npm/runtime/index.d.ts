// Declarations of index.js. Every type of the API comes from the wasm-bindgen output
// (qemuweb_runtime.d.ts, generated from the Rust types through tsify); this file only adds
// the two URLs index.js defines. Its QemuClient is the generated class with a default for
// `ClientOptions.workerUrl`, so the generated declaration describes it.
export * from "./qemuweb_runtime.js";
export { default } from "./qemuweb_runtime.js";

/** Where qemuweb_runtime_bg.wasm is, as resolved by the bundler or the browser. */
export declare const wasmUrl: string;

/** The VM worker script of this package (with `#wasm=` pointing at `wasmUrl`); `QemuClient` uses it unless `workerUrl` is given. */
export declare const workerUrl: string;
