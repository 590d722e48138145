//! What the browser offers a VM: [`RuntimeCapabilities`], detected by
//! `detect()` (wasm32 only) in a page or a worker.

use serde::{Deserialize, Serialize};
use tsify::Tsify;

/// The largest memory a wasm32 instance can address, in bytes (4 GiB).
pub const WASM32_MAX_MEMORY: u64 = 4 << 30;

/// What the browser environment offers, as `init()` and the `capabilities` event report it.
///
/// ```
/// use qemuweb_runtime::RuntimeCapabilities;
/// let mut caps = RuntimeCapabilities::default();
/// caps.web_assembly = true;
/// caps.shared_array_buffer_defined = true;
/// caps.compute_issues();
/// assert!(caps.issues.iter().any(|i| i.code == "cross-origin-isolation"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeCapabilities {
    /// `SharedArrayBuffer` is usable: defined and the context is cross-origin isolated
    /// (needed by threaded engines).
    pub shared_array_buffer: bool,
    /// `SharedArrayBuffer` exists as a global at all.
    pub shared_array_buffer_defined: bool,
    /// `crossOriginIsolated` is true (the page was served with COOP and COEP).
    pub cross_origin_isolated: bool,
    /// WebAssembly is available.
    pub web_assembly: bool,
    /// WebAssembly threads (shared memory and atomics) validate and shared memory can be
    /// created.
    pub wasm_threads: bool,
    /// WebAssembly fixed-width SIMD validates.
    pub wasm_simd: bool,
    /// WebAssembly Memory64 (64-bit memories) validates: the QEMU engine's wasm64 build
    /// needs it (Chrome/Edge 133+, Firefox 134+).
    #[serde(default)]
    pub memory64: bool,
    /// `BigInt` exists (and so i64 values cross the JS boundary).
    pub big_int: bool,
    /// IndexedDB is available (persistent disk overlays).
    pub indexed_db: bool,
    /// The File System Access API (`showOpenFilePicker`, or OPFS `navigator.storage.getDirectory`).
    pub file_system_access: bool,
    /// WebGPU (`navigator.gpu`).
    pub web_gpu: bool,
    /// `navigator.deviceMemory` in GiB, when the browser tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub device_memory_gib: Option<f64>,
    /// An estimate of the most guest RAM a VM should be given, in bytes: half the device
    /// memory (4 GiB when unknown), at most [`WASM32_MAX_MEMORY`] less 256 MiB for the
    /// emulator itself.
    pub max_memory: u64,
    /// Where this was detected: `window` or `worker`.
    #[tsify(type = "\"window\" | \"worker\"")]
    pub context: String,
    /// What is missing and how to fix it.
    pub issues: Vec<CapabilityIssue>,
}

/// One missing capability and its fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityIssue {
    /// A stable code: `no-webassembly`, `cross-origin-isolation`, `no-shared-array-buffer`,
    /// `no-memory64`, `no-indexeddb`, `no-bigint` (the TypeScript type lists them: keep
    /// both in step).
    #[tsify(
        type = "\"no-webassembly\" | \"cross-origin-isolation\" | \"no-shared-array-buffer\" | \"no-memory64\" | \"no-indexeddb\" | \"no-bigint\""
    )]
    pub code: String,
    /// Whether VMs cannot run at all without it (`true`) or only lose a feature.
    pub fatal: bool,
    /// What is missing and how to fix it.
    pub message: String,
}

impl RuntimeCapabilities {
    /// The memory estimate for `device_memory_gib`.
    ///
    /// ```
    /// use qemuweb_runtime::RuntimeCapabilities;
    /// assert_eq!(RuntimeCapabilities::estimate_max_memory(Some(2.0)), 1 << 30);
    /// assert_eq!(RuntimeCapabilities::estimate_max_memory(None), (4 << 30) - (256 << 20));
    /// ```
    pub fn estimate_max_memory(device_memory_gib: Option<f64>) -> u64 {
        let cap = WASM32_MAX_MEMORY - (256 << 20);
        match device_memory_gib {
            Some(g) if g.is_finite() && g > 0.0 => {
                (((g * (1u64 << 30) as f64) / 2.0) as u64).min(cap)
            }
            _ => cap,
        }
    }

    /// Fills [`issues`](Self::issues) from the flags.
    pub fn compute_issues(&mut self) {
        let mut issues = Vec::new();
        let mut add = |code: &str, fatal: bool, message: &str| {
            issues.push(CapabilityIssue {
                code: code.into(),
                fatal,
                message: message.into(),
            })
        };
        if !self.web_assembly {
            add(
                "no-webassembly",
                true,
                "WebAssembly is not available: use a current browser with WebAssembly enabled.",
            );
        }
        if !self.cross_origin_isolated {
            add(
                "cross-origin-isolation",
                false,
                "The page is not cross-origin isolated, so SharedArrayBuffer and WebAssembly \
                 threads are off. Serve the page (and its worker scripts) with the headers \
                 `Cross-Origin-Opener-Policy: same-origin` and \
                 `Cross-Origin-Embedder-Policy: require-corp` (or `credentialless`), and serve \
                 cross-origin images with `Cross-Origin-Resource-Policy: cross-origin` or CORS.",
            );
        } else if !self.shared_array_buffer {
            add(
                "no-shared-array-buffer",
                false,
                "SharedArrayBuffer is unavailable although the page is cross-origin isolated: \
                 the browser does not support it.",
            );
        }
        if self.web_assembly && !self.memory64 {
            add(
                "no-memory64",
                false,
                &format!(
                    "WebAssembly Memory64 is not available, so a QEMU build that needs it \
                     (its qemu-build.json says `\"memory64\": true`: a wasm64 build linked \
                     without lowering its memory) cannot start: use {}. QemuWeb's own build \
                     keeps its 64-bit pointers in a 32-bit memory and runs without it.",
                    crate::engine::qemu_build::MEMORY64_BROWSERS
                ),
            );
        }
        if !self.indexed_db {
            add(
                "no-indexeddb",
                false,
                "IndexedDB is unavailable (private mode or disabled storage): disk changes \
                 cannot be kept across reloads.",
            );
        }
        if !self.big_int {
            add(
                "no-bigint",
                true,
                "BigInt is not available: use a current browser.",
            );
        }
        self.issues = issues;
    }
}

#[cfg(target_arch = "wasm32")]
pub use detect::{detect, host_keeps_tso};

/// Whether a host CPU architecture, as `navigator.userAgentData` names it
/// (`getHighEntropyValues(["architecture"])`: `"x86"`, `"arm"`, ...), runs plain WebAssembly
/// memory accesses in x86's total store order: what the QEMU engine's JIT needs to know to
/// leave out the barriers an x86 guest otherwise gets before every memory access
/// (`-accel tcg,wasm-jit-tso=1`). Unknown architectures are weakly ordered.
///
/// ```
/// use qemuweb_runtime::capabilities::architecture_keeps_tso;
/// assert!(architecture_keeps_tso("x86"));
/// assert!(!architecture_keeps_tso("arm"));
/// assert!(!architecture_keeps_tso(""));
/// ```
pub fn architecture_keeps_tso(architecture: &str) -> bool {
    architecture == "x86"
}

#[cfg(target_arch = "wasm32")]
mod detect {
    use super::RuntimeCapabilities;
    use js_sys::{Reflect, Uint8Array, WebAssembly};
    use wasm_bindgen::{JsCast, JsValue};

    fn get(target: &JsValue, key: &str) -> JsValue {
        Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    }

    fn defined(target: &JsValue, key: &str) -> bool {
        let v = get(target, key);
        !v.is_undefined() && !v.is_null()
    }

    fn validates(bytes: &[u8]) -> bool {
        let module = Uint8Array::from(bytes);
        WebAssembly::validate(&module).unwrap_or(false)
    }

    /// A module with one function doing `i32x4.splat(0)` then dropping it (SIMD).
    const SIMD_MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x02, 0x01, 0x00, // func 0 of type 0
        0x0a, 0x09, 0x01, 0x07, 0x00, // code: 1 body, 7 bytes, no locals
        0x41, 0x00, // i32.const 0
        0xfd, 0x11, // i32x4.splat
        0x1a, // drop
        0x0b, // end
    ];

    /// A module with a 64-bit memory of one page (Memory64).
    const MEMORY64_MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x05, 0x03, 0x01, 0x04, 0x01, // memory: 64-bit index, min 1
    ];

    /// A module with a shared memory and one `atomic.fence` (threads).
    const THREADS_MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x02, 0x01, 0x00, // func 0 of type 0
        0x05, 0x04, 0x01, 0x03, 0x01, 0x01, // memory: shared, min 1, max 1
        0x0a, 0x07, 0x01, 0x05, 0x00, // code: 1 body, 5 bytes, no locals
        0xfe, 0x03, 0x00, // atomic.fence
        0x0b, // end
    ];

    /// Whether this machine's CPU keeps plain memory accesses in x86 order (see
    /// [`architecture_keeps_tso`](super::architecture_keeps_tso)), from
    /// `navigator.userAgentData.getHighEntropyValues(["architecture"])`; `false` where the
    /// browser does not say (Firefox, Safari) or the query fails.
    pub async fn host_keeps_tso() -> bool {
        let navigator = get(&js_sys::global().into(), "navigator");
        let data = get(&navigator, "userAgentData");
        let Ok(query) = Reflect::get(&data, &"getHighEntropyValues".into())
            .and_then(|f| f.dyn_into::<js_sys::Function>())
        else {
            return false;
        };
        let hints = js_sys::Array::of1(&"architecture".into());
        let Ok(promise) = query
            .call1(&data, &hints)
            .and_then(|p| p.dyn_into::<js_sys::Promise>())
        else {
            return false;
        };
        match wasm_bindgen_futures::JsFuture::from(promise).await {
            Ok(values) => get(&values, "architecture")
                .as_string()
                .is_some_and(|a| super::architecture_keeps_tso(&a)),
            Err(_) => false,
        }
    }

    /// Detects the capabilities of the current context (a window or a worker).
    pub fn detect() -> RuntimeCapabilities {
        let global: JsValue = js_sys::global().into();
        let navigator = get(&global, "navigator");
        let web_assembly = defined(&global, "WebAssembly");
        let sab_defined = defined(&global, "SharedArrayBuffer");
        let isolated = get(&global, "crossOriginIsolated")
            .as_bool()
            .unwrap_or(false);
        let shared_memory = web_assembly && {
            let desc = js_sys::Object::new();
            let _ = Reflect::set(&desc, &"initial".into(), &1.into());
            let _ = Reflect::set(&desc, &"maximum".into(), &1.into());
            let _ = Reflect::set(&desc, &"shared".into(), &true.into());
            WebAssembly::Memory::new(&desc)
                .map(|m| m.buffer().has_type::<js_sys::SharedArrayBuffer>())
                .unwrap_or(false)
        };
        let storage = get(&navigator, "storage");
        let device_memory_gib = get(&navigator, "deviceMemory").as_f64();
        let context = if defined(&global, "document") {
            "window"
        } else {
            "worker"
        };
        let mut caps = RuntimeCapabilities {
            shared_array_buffer: sab_defined && isolated,
            shared_array_buffer_defined: sab_defined,
            cross_origin_isolated: isolated,
            web_assembly,
            wasm_threads: web_assembly && validates(THREADS_MODULE) && shared_memory,
            wasm_simd: web_assembly && validates(SIMD_MODULE),
            memory64: web_assembly && validates(MEMORY64_MODULE),
            big_int: defined(&global, "BigInt"),
            indexed_db: defined(&global, "indexedDB"),
            file_system_access: defined(&global, "showOpenFilePicker")
                || defined(&storage, "getDirectory"),
            web_gpu: defined(&navigator, "gpu"),
            device_memory_gib,
            max_memory: RuntimeCapabilities::estimate_max_memory(device_memory_gib),
            context: context.into(),
            issues: Vec::new(),
        };
        caps.compute_issues();
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_isolation_names_the_headers() {
        let mut caps = RuntimeCapabilities {
            web_assembly: true,
            big_int: true,
            indexed_db: true,
            shared_array_buffer_defined: true,
            memory64: true,
            ..Default::default()
        };
        caps.compute_issues();
        assert_eq!(caps.issues.len(), 1);
        let issue = &caps.issues[0];
        assert_eq!(issue.code, "cross-origin-isolation");
        assert!(!issue.fatal);
        assert!(issue
            .message
            .contains("Cross-Origin-Opener-Policy: same-origin"));
        assert!(issue
            .message
            .contains("Cross-Origin-Embedder-Policy: require-corp"));
    }

    #[test]
    fn everything_present_has_no_issues() {
        let mut caps = RuntimeCapabilities {
            web_assembly: true,
            big_int: true,
            indexed_db: true,
            shared_array_buffer_defined: true,
            shared_array_buffer: true,
            cross_origin_isolated: true,
            memory64: true,
            ..Default::default()
        };
        caps.compute_issues();
        assert!(caps.issues.is_empty(), "{:?}", caps.issues);
        caps.memory64 = false;
        caps.compute_issues();
        let issue = &caps.issues[0];
        assert_eq!(issue.code, "no-memory64");
        assert!(
            !issue.fatal && issue.message.contains("Chrome or Edge 133"),
            "{issue:?}"
        );
        caps.memory64 = true;
        caps.web_assembly = false;
        caps.indexed_db = false;
        caps.compute_issues();
        let codes: Vec<_> = caps.issues.iter().map(|i| i.code.as_str()).collect();
        assert_eq!(codes, ["no-webassembly", "no-indexeddb"]);
        assert!(caps.issues[0].fatal);
    }

    #[test]
    fn memory_estimate_is_capped() {
        let cap = WASM32_MAX_MEMORY - (256 << 20);
        assert_eq!(RuntimeCapabilities::estimate_max_memory(Some(64.0)), cap);
        assert_eq!(
            RuntimeCapabilities::estimate_max_memory(Some(0.5)),
            256 << 20
        );
        assert_eq!(
            RuntimeCapabilities::estimate_max_memory(Some(f64::NAN)),
            cap
        );
        assert_eq!(RuntimeCapabilities::estimate_max_memory(Some(-1.0)), cap);
    }
}
