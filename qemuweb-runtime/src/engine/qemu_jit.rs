//! What the QEMU engine tells about how QEMU runs guest code: the interpreter (TCI) or our
//! WebAssembly JIT, and what the JIT compiled so far.
//!
//! The JIT (patch 0012) keeps its counters in a static block of the module's memory,
//! `QemuwebJitStats`: twelve little-endian 64-bit words, layout version 1, whose address the
//! module's exported `qemuweb_jit_stats()` returns. The QEMU worker (`web/qemu-worker.js`)
//! posts that address with the module's memory once QEMU is up (or says the build has no
//! JIT); the engine reads the block after [`FIRST_POLL_MS`], then every [`POLL_MS`], and
//! sends an `execution` event and a `log` line when it changed. Nothing is proxied into QEMU's threads.
//!
//! ```
//! use qemuweb_runtime::engine::qemu_jit::JitStats;
//! use qemuweb_runtime::protocol::ExecutionMode;
//! let words = [1, 1, 605, 32, 0, 1 << 20, 120_000, 77_000, 9_000, 0, 64, 8];
//! let stats = JitStats::decode(&words).unwrap();
//! assert_eq!(stats.summary().mode, ExecutionMode::Jit);
//! assert_eq!(stats.summary().blocks_compiled, 605);
//! assert!(stats.message().contains("605 blocks compiled"));
//! ```

use crate::protocol::{ExecutionMode, ExecutionStats};

/// Words in a version-1 statistics block.
pub const STATS_WORDS: usize = 12;
/// The layout version this runtime reads.
pub const STATS_VERSION: u64 = 1;
/// How often the engine reads the block, in milliseconds.
pub const POLL_MS: u32 = 5_000;
/// When the engine first reads it, after QEMU's worker posted it.
pub const FIRST_POLL_MS: u32 = 1_000;

/// One reading of the JIT's statistics block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitStats {
    /// The words, in the order of the C struct (version first).
    words: [u64; STATS_WORDS],
}

impl JitStats {
    /// Reads a block's words.
    ///
    /// # Errors
    ///
    /// A message naming the version, for a layout this runtime does not read.
    pub fn decode(words: &[u64; STATS_WORDS]) -> Result<Self, String> {
        if words[0] != STATS_VERSION {
            return Err(format!(
                "the QEMU JIT's statistics have layout version {} (this runtime reads \
                 {STATS_VERSION})",
                words[0]
            ));
        }
        Ok(Self { words: *words })
    }

    /// The event's figures.
    pub fn summary(&self) -> ExecutionStats {
        let w = &self.words;
        let ms = |us: u64| us as f64 / 1000.0;
        ExecutionStats {
            mode: if w[1] != 0 {
                ExecutionMode::Jit
            } else {
                ExecutionMode::Interpreter
            },
            blocks_compiled: w[2],
            modules: w[3],
            refused: w[4],
            wasm_bytes: w[5],
            translate_ms: ms(w[6]),
            compile_ms: ms(w[7]),
            instantiate_ms: ms(w[8]),
            flushes: w[9],
            hot_threshold: if w[1] != 0 { w[10] } else { 0 },
        }
    }

    /// Whether this reading, `waited_ms` after QEMU's start, can be reported: the JIT marks
    /// itself enabled when QEMU sets up its accelerator, shortly after `main` starts, so a
    /// block still saying "interpreter" is believed only after a whole [`POLL_MS`].
    pub fn settled(&self, waited_ms: u32) -> bool {
        self.words[1] != 0 || waited_ms >= POLL_MS
    }

    /// Whether `other` reports different work (the timers alone do not count).
    pub fn changed_from(&self, other: &JitStats) -> bool {
        let key = |s: &JitStats| (s.words[1], s.words[2], s.words[3], s.words[4], s.words[9]);
        key(self) != key(other)
    }

    /// The `log` line for people.
    pub fn message(&self) -> String {
        message(&self.summary())
    }
}

/// The `log` line for an `execution` event's figures.
pub fn message(s: &ExecutionStats) -> String {
    match s.mode {
        ExecutionMode::Interpreter => "QEMU runs guest code on its interpreter (TCI)".to_string(),
        ExecutionMode::Jit => format!(
            "QEMU runs guest code on the WebAssembly JIT (blocks compiled after {} runs): \
             {} blocks compiled in {} modules ({} KiB of WebAssembly; translate {:.0} ms, \
             compile {:.0} ms, instantiate {:.0} ms), {} refused, {} flushes",
            s.hot_threshold,
            s.blocks_compiled,
            s.modules,
            s.wasm_bytes / 1024,
            s.translate_ms,
            s.compile_ms,
            s.instantiate_ms,
            s.refused,
            s.flushes
        ),
    }
}

/// The figures of a build without the JIT (its worker finds no `qemuweb_jit_stats`).
pub fn interpreter_only() -> ExecutionStats {
    ExecutionStats {
        mode: ExecutionMode::Interpreter,
        blocks_compiled: 0,
        modules: 0,
        refused: 0,
        wasm_bytes: 0,
        translate_ms: 0.0,
        compile_ms: 0.0,
        instantiate_ms: 0.0,
        flushes: 0,
        hot_threshold: 0,
    }
}

#[cfg(target_arch = "wasm32")]
pub use reader::StatsBlock;

#[cfg(target_arch = "wasm32")]
mod reader {
    use super::*;
    use crate::engine::module_memory::{locate, u64_view};
    use crate::error::RuntimeError;
    use wasm_bindgen::JsValue;

    /// The statistics block in the module's memory.
    pub struct StatsBlock {
        words: js_sys::BigUint64Array,
    }

    impl StatsBlock {
        /// The block at `address` of `memory` (what the QEMU worker posted), checked.
        ///
        /// # Errors
        ///
        /// [`RuntimeError::Engine`] for another object, an address outside the memory or
        /// unaligned, or another layout version.
        pub fn new(memory: &JsValue, address: &JsValue) -> Result<Self, RuntimeError> {
            let at = locate(memory, address, STATS_WORDS * 8, 8.0, "QEMU JIT statistics")?;
            let block = Self {
                words: u64_view(&at.buffer, at.address, STATS_WORDS as f64),
            };
            block.read()?;
            Ok(block)
        }

        /// Reads the block now.
        ///
        /// # Errors
        ///
        /// [`RuntimeError::Engine`] for another layout version.
        pub fn read(&self) -> Result<JitStats, RuntimeError> {
            let mut words = [0u64; STATS_WORDS];
            for (i, w) in words.iter_mut().enumerate() {
                *w = self.words.get_index(i as u32);
            }
            JitStats::decode(&words).map_err(RuntimeError::Engine)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(blocks: u64, translate_us: u64) -> [u64; STATS_WORDS] {
        [
            1,
            1,
            blocks,
            4,
            1,
            70_000,
            translate_us,
            2_500,
            300,
            0,
            64,
            8,
        ]
    }

    #[test]
    fn a_block_is_read_as_the_jit_wrote_it() {
        let s = JitStats::decode(&words(40, 12_345)).unwrap().summary();
        assert_eq!(s.mode, ExecutionMode::Jit);
        assert_eq!(
            (s.blocks_compiled, s.modules, s.refused, s.wasm_bytes),
            (40, 4, 1, 70_000)
        );
        assert_eq!(
            (s.translate_ms, s.compile_ms, s.instantiate_ms),
            (12.345, 2.5, 0.3)
        );
        assert_eq!(s.hot_threshold, 64);
        let m = message(&s);
        assert!(
            m.contains("40 blocks compiled in 4 modules") && m.contains("68 KiB"),
            "{m}"
        );
    }

    #[test]
    fn the_interpreter_and_other_layouts() {
        // `-accel tcg,wasm-jit=off` on a JIT build: nothing compiled.
        let mut w = [0u64; STATS_WORDS];
        w[0] = 1;
        w[10] = 64;
        let s = JitStats::decode(&w).unwrap().summary();
        assert_eq!(s.mode, ExecutionMode::Interpreter);
        assert_eq!(s.hot_threshold, 0);
        assert!(message(&s).contains("interpreter"));
        assert_eq!(interpreter_only(), s);
        w[0] = 2;
        let e = JitStats::decode(&w).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
    }

    #[test]
    fn only_new_work_is_a_change() {
        let a = JitStats::decode(&words(40, 1)).unwrap();
        let timers_only = JitStats::decode(&words(40, 999)).unwrap();
        let more = JitStats::decode(&words(41, 999)).unwrap();
        assert!(!timers_only.changed_from(&a));
        assert!(more.changed_from(&a));
        assert!(a.settled(FIRST_POLL_MS));
        let mut w = [0u64; STATS_WORDS];
        w[0] = 1;
        let not_yet = JitStats::decode(&w).unwrap();
        assert!(!not_yet.settled(FIRST_POLL_MS) && not_yet.settled(POLL_MS));
    }
}
