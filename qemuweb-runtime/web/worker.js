// The module worker of one QemuWeb VM: loads the wasm runtime and hands the worker to it.
// QemuClient starts it with `new Worker(url, {type: "module"})`; it sits beside the
// wasm-bindgen output (qemuweb_runtime.js) in the built bundle.
import init, { workerMain } from "./qemuweb_runtime.js";

await init();
workerMain();
