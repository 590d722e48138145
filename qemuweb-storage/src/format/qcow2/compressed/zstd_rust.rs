//! zstd with the pure-Rust `ruzstd`: the decoder on wasm32 (natively it is built for the
//! tests, which hold it to the C library's results).

use super::{bad_zstd, zstd_too_long, zstd_too_short, DecodeZstd, MAX_ZSTD_WINDOW};
use crate::error::Result;
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use std::io::Read;

/// A `ruzstd` frame decoder, reused between clusters.
pub(crate) struct ZstdDecoder(FrameDecoder);

impl ZstdDecoder {
    /// A decoder with the window bounded by [`MAX_ZSTD_WINDOW`].
    pub fn new() -> Result<Self> {
        let mut d = FrameDecoder::new();
        d.set_max_window_size(MAX_ZSTD_WINDOW);
        Ok(Self(d))
    }
}

impl DecodeZstd for ZstdDecoder {
    fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<()> {
        let d = &mut self.0;
        let mut src = input;
        d.reset(&mut src).map_err(bad_zstd)?;
        let mut written = 0;
        loop {
            let want = out.len() - written + 1;
            let progress = (d.bytes_read_from_source(), d.blocks_decoded());
            d.decode_blocks(&mut src, BlockDecodingStrategy::UptoBytes(want))
                .map_err(bad_zstd)?;
            loop {
                let n = d.read(&mut out[written..]).map_err(bad_zstd)?;
                if n == 0 {
                    break;
                }
                written += n;
            }
            if d.can_collect() > 0 {
                return Err(zstd_too_long(out.len()));
            }
            if d.is_finished() {
                break;
            }
            if progress == (d.bytes_read_from_source(), d.blocks_decoded()) {
                return Err(bad_zstd("the frame is truncated"));
            }
        }
        if written != out.len() {
            return Err(zstd_too_short(written, out.len()));
        }
        Ok(())
    }
}
