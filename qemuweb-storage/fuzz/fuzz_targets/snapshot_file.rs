//! Parses arbitrary bytes as a snapshot file (`snapshot::FileParser`), fed in pieces whose
//! sizes the input picks. The first input byte picks the mode:
//!
//! - even: the rest is the file; any failure must be a typed error (`Corrupt`,
//!   `Integrity`, `Unsupported`) and never a panic, a hang or an unbounded allocation;
//! - odd: the harness builds a valid file from the rest (`qemuweb_storage_fuzz`), checks
//!   that it parses whole, then changes one byte of it or cuts it where the input says:
//!   every such change must be refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemuweb_storage::snapshot::{FileParser, Item};
use qemuweb_storage::ErrorKind;
use qemuweb_storage_fuzz::snapshot_file::valid_file;

/// Parses `bytes` in pieces of `piece` bytes; returns the items or the error.
fn parse(bytes: &[u8], piece: usize) -> qemuweb_storage::Result<Vec<Item>> {
    let mut p = FileParser::new();
    let mut items = Vec::new();
    for c in bytes.chunks(piece.max(1)) {
        items.extend(p.feed(c)?);
    }
    p.finish()?;
    Ok(items)
}

fn typed(e: &qemuweb_storage::StorageError) {
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Corrupt | ErrorKind::Integrity | ErrorKind::Unsupported
        ),
        "untyped failure: {e:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let piece = 1 + usize::from(mode >> 1) * 37;
    if mode & 1 == 0 {
        if let Err(e) = parse(rest, piece) {
            typed(&e);
        }
        return;
    }
    let (knobs, rest) = rest.split_at(rest.len().min(4));
    let file = valid_file(rest);
    let items = parse(&file, piece).expect("a valid file parses");
    assert!(matches!(items.first(), Some(Item::Header(_))));
    let at = knobs
        .iter()
        .take(3)
        .fold(0usize, |a, b| a * 256 + usize::from(*b))
        % file.len();
    let mut bad = file.clone();
    match knobs.get(3).copied().unwrap_or(0) {
        0 => bad.truncate(at),
        v => bad[at] ^= v,
    }
    match parse(&bad, piece) {
        Ok(_) => panic!("a changed file was accepted (byte {at})"),
        Err(e) => typed(&e),
    }
});
