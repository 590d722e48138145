//! Blocks of the QEMU module's shared memory that QEMU announces by address: the display
//! block of patch 0020 ([`qemu_display`](super::qemu_display)) and the JIT's statistics of
//! patch 0012 ([`qemu_jit`](super::qemu_jit)). Each is checked once (a shared
//! `WebAssembly.Memory`, an address inside it and aligned) and then read through typed-array
//! views, which stay valid when the memory grows: the blocks are static in QEMU's data.

use crate::error::RuntimeError;
use js_sys::{Int32Array, Uint8Array, WebAssembly};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[wasm_bindgen]
extern "C" {
    /// An `Int32Array` made with a byte offset that may pass 4 GiB (a Memory64 module's
    /// memory).
    #[wasm_bindgen(js_name = Int32Array)]
    type Int32View;
    #[wasm_bindgen(constructor, js_class = "Int32Array")]
    fn new(buffer: &JsValue, offset: f64, length: f64) -> Int32View;
    /// A `Uint8Array`, likewise.
    #[wasm_bindgen(js_name = Uint8Array)]
    type Uint8View;
    #[wasm_bindgen(constructor, js_class = "Uint8Array")]
    fn new(buffer: &JsValue, offset: f64, length: f64) -> Uint8View;
    /// A `BigUint64Array`, likewise.
    #[wasm_bindgen(js_name = BigUint64Array)]
    type U64View;
    #[wasm_bindgen(constructor, js_class = "BigUint64Array")]
    fn new(buffer: &JsValue, offset: f64, length: f64) -> U64View;
}

/// `length` 32-bit words of `buffer` from byte `offset`.
pub(crate) fn int32_view(buffer: &JsValue, offset: f64, length: f64) -> Int32Array {
    Int32View::new(buffer, offset, length).unchecked_into()
}

/// `length` bytes of `buffer` from byte `offset`.
pub(crate) fn uint8_view(buffer: &JsValue, offset: f64, length: f64) -> Uint8Array {
    Uint8View::new(buffer, offset, length).unchecked_into()
}

/// `length` 64-bit words of `buffer` from byte `offset`.
pub(crate) fn u64_view(buffer: &JsValue, offset: f64, length: f64) -> js_sys::BigUint64Array {
    U64View::new(buffer, offset, length).unchecked_into()
}

/// A block QEMU announced: its memory, that memory's buffer and the block's byte address.
pub(crate) struct Located {
    /// The module's memory.
    pub memory: WebAssembly::Memory,
    /// Its buffer when the block was located (covers the block for good).
    pub buffer: JsValue,
    /// The block's byte address.
    pub address: f64,
}

/// Checks that `memory` is a `WebAssembly.Memory` and that `bytes` bytes at `address` (a
/// Number, or a BigInt from a Memory64 module; a multiple of `align`) lie inside it.
///
/// # Errors
///
/// [`RuntimeError::Engine`], prefixed with `what`, for another object, a bad or unaligned
/// address, or a block outside the memory.
pub(crate) fn locate(
    memory: &JsValue,
    address: &JsValue,
    bytes: usize,
    align: f64,
    what: &str,
) -> Result<Located, RuntimeError> {
    let bad = |why: String| RuntimeError::Engine(format!("{what}: {why}"));
    let memory: WebAssembly::Memory = memory
        .clone()
        .dyn_into()
        .map_err(|_| bad("no WebAssembly.Memory came with it".into()))?;
    let address = address
        .as_f64()
        .or_else(|| {
            address
                .is_bigint()
                .then(|| js_sys::Number::from(address.clone()).value_of())
        })
        .filter(|a| a.fract() == 0.0 && *a > 0.0 && *a % align == 0.0)
        .ok_or_else(|| bad(format!("address {address:?}")))?;
    let buffer = memory.buffer();
    let len = js_sys::Reflect::get(&buffer, &"byteLength".into())
        .ok()
        .and_then(|l| l.as_f64())
        .unwrap_or(0.0);
    if address + bytes as f64 > len {
        return Err(bad(format!(
            "address {address} outside the memory of {len} bytes"
        )));
    }
    Ok(Located {
        memory,
        buffer,
        address,
    })
}
