//! The remote transport's sans-IO core: encoder, decoder, outbox, negotiation.

use super::*;
use crate::synthetic::SyntheticScreen;
use crate::wire::{decode, WireMessage};
use crate::ErrorKind;

fn welcome(format: PixelFormat, checksums: bool) -> Welcome {
    Welcome {
        version: WIRE_VERSION,
        format,
        checksums,
    }
}

/// Encodes `frame` and applies it to `decoder`, returning the message length.
fn carry(
    encoder: &mut StreamEncoder,
    decoder: &mut StreamDecoder,
    frame: &Frame,
) -> Result<usize, SidecarError> {
    let mut bytes = Vec::new();
    encoder.encode(frame, &mut bytes)?;
    let WireMessage::Frame(wire) = decode(&bytes)? else {
        panic!("not a frame message");
    };
    let ack = decoder.apply(&wire)?;
    assert_eq!(ack.sequence, frame.metadata.sequence);
    Ok(bytes.len())
}

#[test]
fn deltas_carry_only_dirty_bytes_and_rebuild_the_screen_exactly() {
    let w = welcome(PixelFormat::Rgba, true);
    let (mut enc, mut dec) = (StreamEncoder::new(w), StreamDecoder::default());
    dec.start(&w);
    let mut screen = SyntheticScreen::new(1, 200, 120).with_resize(40, 90, 70);
    let first = carry(&mut enc, &mut dec, &screen.frame()).unwrap();
    assert!(first >= 200 * 120 * 4);
    assert!(dec.take_change().unwrap().keyframe);
    for _ in 2..80 {
        let frame = screen.step();
        let len = carry(&mut enc, &mut dec, &frame).unwrap();
        let change = dec.take_change().unwrap();
        assert_eq!(change.keyframe, frame.metadata.keyframe);
        if !frame.metadata.keyframe {
            let dirty: usize = frame
                .metadata
                .dirty
                .iter()
                .map(|d| PixelFormat::Rgba.rect_len(d))
                .sum();
            assert!(len < crate::wire::FRAME_HEADER_LEN + 16 * 3 + dirty + 1);
            assert_eq!(change.dirty, frame.metadata.dirty);
        }
        assert_eq!(
            dec.screen(),
            screen.data(),
            "frame {}",
            frame.metadata.sequence
        );
    }
}

#[test]
fn the_outbox_keeps_the_newest_frame_with_the_merged_damage() {
    let w = welcome(PixelFormat::Rgba, true);
    let (mut enc, mut dec) = (StreamEncoder::new(w), StreamDecoder::default());
    dec.start(&w);
    let mut screen = SyntheticScreen::new(2, 64, 64);
    let mut outbox = Outbox::default();
    outbox.offer(&screen.frame());
    carry(&mut enc, &mut dec, &outbox.take().unwrap()).unwrap();
    // Three frames while the socket is busy: only the newest goes, with all the damage.
    for _ in 0..3 {
        outbox.offer(&screen.step());
    }
    assert_eq!(outbox.dropped, 2);
    let merged = outbox.take().unwrap();
    assert!(outbox.is_empty());
    assert_eq!(merged.metadata.sequence, 4);
    assert!(!merged.metadata.keyframe);
    carry(&mut enc, &mut dec, &merged).unwrap();
    assert_eq!(dec.screen(), screen.data());
    // A keyframe among them makes the merged frame a keyframe.
    outbox.offer(&screen.step());
    let mut key = screen.step();
    key.metadata.keyframe = true;
    key.metadata.dirty.clear();
    outbox.offer(&key);
    outbox.offer(&screen.step());
    let merged = outbox.take().unwrap();
    assert!(merged.metadata.keyframe && merged.metadata.dirty.is_empty());
    carry(&mut enc, &mut dec, &merged).unwrap();
    assert_eq!(dec.screen(), screen.data());
}

#[test]
fn a_lost_frame_is_a_desync_and_a_new_connection_starts_with_a_keyframe() {
    let w = welcome(PixelFormat::Rgba, false);
    let (mut enc, mut dec) = (StreamEncoder::new(w), StreamDecoder::default());
    dec.start(&w);
    let mut screen = SyntheticScreen::new(3, 50, 40);
    carry(&mut enc, &mut dec, &screen.frame()).unwrap();
    let mut lost = Vec::new();
    enc.encode(&screen.step(), &mut lost).unwrap();
    let err = carry(&mut enc, &mut dec, &screen.step()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Desync);
    // Reconnect: a new encoder and a restarted decoder; deltas are refused until the
    // keyframe the new connection opens with.
    let mut enc = StreamEncoder::new(w);
    dec.start(&w);
    let frame = screen.step();
    assert!(!frame.metadata.keyframe);
    let mut bytes = Vec::new();
    enc.encode(&frame, &mut bytes).unwrap();
    let WireMessage::Frame(wire) = decode(&bytes).unwrap() else {
        panic!()
    };
    assert!(
        wire.metadata.keyframe,
        "the first frame of a connection is a keyframe"
    );
    dec.apply(&wire).unwrap();
    assert_eq!(dec.screen(), screen.data());
}

#[test]
fn checksums_catch_a_corrupted_payload() {
    let w = welcome(PixelFormat::Rgba, true);
    let (mut enc, mut dec) = (StreamEncoder::new(w), StreamDecoder::default());
    dec.start(&w);
    let mut screen = SyntheticScreen::new(4, 30, 20);
    carry(&mut enc, &mut dec, &screen.frame()).unwrap();
    let mut bytes = Vec::new();
    enc.encode(&screen.step(), &mut bytes).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let WireMessage::Frame(wire) = decode(&bytes).unwrap() else {
        panic!()
    };
    assert_eq!(
        dec.apply(&wire).unwrap_err().kind(),
        ErrorKind::ChecksumMismatch
    );
}

#[test]
fn rgb565_is_converted_for_an_rgba_only_receiver_rect_by_rect() {
    let hello = Hello {
        min_version: 1,
        max_version: 1,
        formats: vec![PixelFormat::Rgba],
        checksums: true,
    };
    let w = negotiate(&hello, PixelFormat::Rgb565).unwrap();
    assert_eq!(w.format, PixelFormat::Rgba);
    let (mut enc, mut dec) = (StreamEncoder::new(w), StreamDecoder::default());
    dec.start(&w);
    let (width, height) = (6u32, 4u32);
    let mut data: Vec<u8> = (0..width * height)
        .flat_map(|i| (i as u16 * 2731).to_le_bytes())
        .collect();
    let key = Frame {
        metadata: FrameMetadata::keyframe(1, 0.0, width, height, PixelFormat::Rgb565),
        data: data.clone(),
    };
    carry(&mut enc, &mut dec, &key).unwrap();
    data[(width as usize + 2) * 2..(width as usize + 4) * 2].copy_from_slice(&[0xff; 4]);
    let delta = Frame {
        metadata: FrameMetadata::delta(
            2,
            1.0,
            width,
            height,
            PixelFormat::Rgb565,
            vec![DirtyRect::new(2, 1, 2, 1)],
        ),
        data: data.clone(),
    };
    carry(&mut enc, &mut dec, &delta).unwrap();
    let mut expected = Vec::new();
    rect_to_rgba(
        PixelFormat::Rgb565,
        width,
        height,
        &data,
        &DirtyRect::new(0, 0, width, height),
        &mut expected,
    )
    .unwrap();
    assert_eq!(dec.screen(), &expected[..]);
    // Compressed frames cannot be converted.
    let err = check_outgoing(
        &Frame {
            metadata: FrameMetadata::keyframe(3, 0.0, 1, 1, PixelFormat::Compressed),
            data: vec![1],
        },
        Some(2),
        PixelFormat::Rgba,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedFormat);
}

#[test]
fn negotiation_refuses_foreign_versions_and_formats() {
    let mut hello = Hello {
        min_version: 2,
        max_version: 5,
        formats: vec![PixelFormat::Rgba],
        checksums: false,
    };
    assert_eq!(negotiate(&hello, PixelFormat::Rgba).unwrap_err().code, 1);
    hello.min_version = 1;
    assert_eq!(negotiate(&hello, PixelFormat::Rgba).unwrap().version, 1);
    hello.formats = vec![PixelFormat::Yuv420];
    assert_eq!(negotiate(&hello, PixelFormat::Rgb565).unwrap_err().code, 2);
    assert_eq!(
        negotiate(&hello, PixelFormat::Yuv420).unwrap().format,
        PixelFormat::Yuv420
    );
}

#[test]
fn the_decoder_merges_changes_until_they_are_taken() {
    let w = welcome(PixelFormat::Rgba, false);
    let (mut enc, mut dec) = (StreamEncoder::new(w), StreamDecoder::default());
    dec.start(&w);
    let mut screen = SyntheticScreen::new(5, 40, 40).with_resize(5, 20, 20);
    carry(&mut enc, &mut dec, &screen.frame()).unwrap();
    dec.take_change();
    let a = screen.step();
    let b = screen.step();
    carry(&mut enc, &mut dec, &a).unwrap();
    carry(&mut enc, &mut dec, &b).unwrap();
    let change = dec.take_change().unwrap();
    assert_eq!(change.sequence, 3);
    let mut both = a.metadata.dirty.clone();
    both.extend_from_slice(&b.metadata.dirty);
    assert_eq!(change.dirty, both);
    assert!(!dec.has_change());
    carry(&mut enc, &mut dec, &screen.step()).unwrap();
    carry(&mut enc, &mut dec, &screen.step()).unwrap(); // the resize
    let change = dec.take_change().unwrap();
    assert!(change.keyframe);
    assert_eq!((change.width, change.height), (20, 20));
}

/// A seeded mutation test of the decoder and the receiving end (the crate has no fuzz
/// directory of its own): valid messages with flipped bytes, extreme fields, cuts and
/// extensions give typed errors or a consistent screen, never a panic.
#[test]
fn seeded_mutations_of_valid_messages_never_panic() {
    let w = welcome(PixelFormat::Yuv420, true);
    let mut enc = StreamEncoder::new(w);
    // A YUV420 stream: odd sizes exercise the chroma planes' rounding.
    let (width, height) = (33u32, 17u32);
    let len = PixelFormat::Yuv420.data_len(width, height).unwrap();
    let mut data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let mut messages = Vec::new();
    let mut states = Vec::new();
    let mut dec = StreamDecoder::default();
    dec.start(&w);
    for seq in 1..=12u64 {
        let rect = DirtyRect::new(seq as u32 % 5, seq as u32 % 3, 1 + seq as u32, 3);
        PixelFormat::Yuv420.rect_spans(width, height, &rect, |o, l| {
            data[o..o + l]
                .iter_mut()
                .for_each(|b| *b = b.wrapping_add(seq as u8))
        });
        let metadata = if seq == 1 {
            FrameMetadata::keyframe(seq, 0.0, width, height, PixelFormat::Yuv420)
        } else {
            FrameMetadata::delta(
                seq,
                seq as f64,
                width,
                height,
                PixelFormat::Yuv420,
                vec![rect],
            )
        };
        let frame = Frame {
            metadata,
            data: data.clone(),
        };
        let mut bytes = Vec::new();
        enc.encode(&frame, &mut bytes).unwrap();
        states.push(dec.clone());
        let WireMessage::Frame(wire) = decode(&bytes).unwrap() else {
            panic!()
        };
        dec.apply(&wire).unwrap();
        messages.push(bytes);
    }
    messages.push(
        WireMessage::Hello(Hello {
            min_version: 1,
            max_version: 1,
            formats: vec![PixelFormat::Rgba, PixelFormat::Yuv420],
            checksums: true,
        })
        .encode(),
    );
    messages.push(
        WireMessage::Ack(Ack {
            sequence: 3,
            checksum: Some(9),
        })
        .encode(),
    );
    let mut rng = 0x5eed_0000_0000_0007u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let (mut decoded, mut applied) = (0, 0);
    for _ in 0..30_000 {
        let pick = next(messages.len());
        let mut bytes = messages[pick].clone();
        for _ in 0..1 + next(3) {
            let at = next(bytes.len().max(1));
            match next(6) {
                0 => bytes[at] ^= 1 << next(8),
                1 => bytes[at] = 0xff,
                2 => bytes.truncate(at),
                3 => bytes.insert(at, next(256) as u8),
                4 if at + 4 <= bytes.len() => {
                    let v = [0u32, 1, u32::MAX, 0x8000_0000, 16384][next(5)];
                    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                _ => bytes.extend_from_slice(&[0; 3]),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let Ok(message) = decode(&bytes) else {
            continue;
        };
        decoded += 1;
        if let (WireMessage::Frame(frame), Some(state)) = (message, states.get(pick)) {
            let mut dec = state.clone();
            if dec.apply(&frame).is_ok() {
                applied += 1;
                let expected =
                    PixelFormat::Yuv420.data_len(frame.metadata.width, frame.metadata.height);
                assert_eq!(Some(dec.screen().len()), expected);
            }
        }
    }
    // The mutations reach past the decoder's checks often enough to exercise apply().
    assert!(
        decoded > 100 && applied > 10,
        "decoded {decoded}, applied {applied}"
    );
}
