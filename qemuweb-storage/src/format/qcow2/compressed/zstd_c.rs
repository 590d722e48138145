//! zstd with the reference C library (`zstd_safe`, of the `zstd` crate): the decoder
//! natively. The frame at the start of the cluster's bytes is found first (padding follows
//! it), then decoded in one call straight into the cluster: no window buffer, no copy.

use super::{bad_zstd, zstd_too_short, DecodeZstd};
use crate::error::Result;
use zstd::zstd_safe::{find_frame_compressed_size, get_error_name, DCtx};

/// A C zstd decompression context, reused between clusters.
pub(crate) struct ZstdDecoder(DCtx<'static>);

impl ZstdDecoder {
    /// A decoder. It decodes into the cluster itself, so a frame's window needs no memory
    /// of its own (and a frame that decodes to more than the cluster fails).
    pub fn new() -> Result<Self> {
        DCtx::try_create()
            .map(Self)
            .ok_or_else(|| bad_zstd("the zstd library could not allocate a context"))
    }
}

impl DecodeZstd for ZstdDecoder {
    fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<()> {
        let frame = find_frame_compressed_size(input).map_err(|c| bad_zstd(get_error_name(c)))?;
        // `find_frame_compressed_size` checked that the frame lies within `input`.
        let frame = input
            .get(..frame)
            .ok_or_else(|| bad_zstd("the frame is truncated"))?;
        let written = self
            .0
            .decompress(out, frame)
            .map_err(|c| bad_zstd(get_error_name(c)))?;
        if written != out.len() {
            return Err(zstd_too_short(written, out.len()));
        }
        Ok(())
    }
}
