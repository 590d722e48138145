// Declarations of index.js. Every type of the API comes from the wasm-bindgen output
// (qemuweb_runtime.d.ts, generated from the Rust types through tsify); this file adds what
// index.js defines: the two URLs and QemuError. Its QemuClient is the generated class with
// defaults for `ClientOptions`, so the generated declaration describes it.
import type { EngineAssets, ErrorCode } from "./qemuweb_runtime.js";

export * from "./qemuweb_runtime.js";
export { default } from "./qemuweb_runtime.js";

/** Where qemuweb_runtime_bg.wasm is, as resolved by the bundler or the browser. */
export declare const wasmUrl: string;

/** The VM worker script of this package (with `#wasm=` pointing at `wasmUrl`); `QemuClient` uses it unless `workerUrl` is given. */
export declare const workerUrl: string;

/** The QEMU engine's worker script of this package; `QemuClient` gives it as `assets.qemuWorker` unless the assets name another. */
export declare const qemuWorkerUrl: string;

/**
 * The engine assets the installed packages hold (v86's module and wasm from `v86`, SeaBIOS
 * and its VGA BIOS from `@qemuweb/firmware`, `qemuWorkerUrl`, and as `qemuDir` the `dist/`
 * of `@qemuweb/qemu-wasm` when it is installed), as resolved by the bundler or the browser;
 * `QemuClient` uses each unless `assets` gives another.
 */
export declare const packagedAssets: EngineAssets;

/**
 * What every `QemuClient` command rejects with, and what `onError` callbacks get: an
 * `Error` whose `code` says what failed.
 *
 * ```ts
 * try {
 *   await client.startVm("vm1", profile, inputs, { signal });
 * } catch (e) {
 *   if (e instanceof QemuError && e.code === "aborted") return;
 *   throw e;
 * }
 * ```
 */
export declare class QemuError extends Error {
  readonly name: "QemuError";
  /** What failed (see `ErrorCode`). */
  readonly code: ErrorCode;
  /** The VM it is about, if any. */
  readonly vmId?: string;
  /** The id of the request it answers, if it answers one. */
  readonly requestId?: number;
  constructor(code: ErrorCode, message: string, vmId?: string, requestId?: number, cause?: unknown);
}
