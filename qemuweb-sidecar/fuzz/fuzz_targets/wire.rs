//! Decodes arbitrary bytes as a RemoteTransport wire message (`wire::decode`). A failure
//! must be a typed error of a wire or frame-validation kind; a decoded message must
//! encode back to exactly the input (the format has one encoding per message). The first
//! input byte picks raw input (even) or the rest XORed over a valid delta frame (odd),
//! which reaches the frame checks past the header more often.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemuweb_sidecar::wire::{decode, WireFrame, WireMessage};
use qemuweb_sidecar::{DirtyRect, ErrorKind, FrameMetadata, PixelFormat};

fn base() -> Vec<u8> {
    let metadata = FrameMetadata::delta(
        5,
        3.0,
        9,
        7,
        PixelFormat::Yuv420,
        vec![DirtyRect::new(1, 1, 3, 2), DirtyRect::new(8, 6, 1, 1)],
    );
    // Rect 1: 6 Y bytes + 2 chroma planes of 2x2 (cols 0..2, rows 0..2); rect 2: 1 + 2x1.
    let payload = [7u8; 6 + 8 + 1 + 2];
    WireMessage::Frame(WireFrame {
        metadata,
        base: 4,
        checksum: Some(0x1234_5678),
        payload: &payload,
    })
    .encode()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut bytes = base();
        for (b, x) in bytes.iter_mut().zip(rest) {
            *b ^= x;
        }
        if rest.len() > bytes.len() {
            bytes.extend_from_slice(&rest[bytes.len()..]);
        }
        bytes
    };
    match decode(&input) {
        Ok(message) => assert_eq!(message.encode(), input, "{message:?}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::Malformed
                    | ErrorKind::InvalidSize
                    | ErrorKind::InvalidTimestamp
                    | ErrorKind::RectOutOfBounds
                    | ErrorKind::TooManyRects
                    | ErrorKind::KeyframeWithRects
                    | ErrorKind::CompressedWithRects
                    | ErrorKind::DataLength
            ),
            "untyped failure: {e:?}"
        ),
    }
});
