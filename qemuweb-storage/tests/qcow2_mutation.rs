//! Seeded mutations of real qemu-img images (bit and byte flips, interesting values written
//! over header fields and table entries, truncations): opening and reading never panics,
//! and every failure is one of the typed errors an image can cause.
#![cfg(not(target_arch = "wasm32"))]

use futures::executor::block_on;
use qemuweb_storage::format::{open_image, OpenOptions};
use qemuweb_storage::resolver::DirResolver;
use qemuweb_storage::{BlockDevice, ErrorKind, MemoryBlockDevice, StorageError};
use qemuweb_testkit::fixtures;
use qemuweb_testkit::rng::Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Cases per run; `QCOW2_MUTATION_CASES` overrides it.
const DEFAULT_CASES: u64 = 3000;
/// The run stops early (still passing) if it takes longer than this.
const TIME_BUDGET: Duration = Duration::from_secs(240);

const INTERESTING: &[u64] = &[
    0,
    1,
    0x200,
    0x1000,
    0x10000,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 62,
    1 << 63,
    (1 << 63) | 0x200,
    (1 << 62) | (1 << 61) | 0x1234,
    0x00ff_ffff_ffff_fe00,
    u64::MAX,
    u64::MAX - 1,
];

fn mutate(img: &mut Vec<u8>, rng: &mut Rng) {
    let len = img.len() as u64;
    match rng.below(6) {
        0 => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(len.min(512)) as usize;
                img[at] ^= 1 << rng.below(8);
            }
        }
        1 => {
            for _ in 0..=rng.below(8) {
                let at = rng.below(len) as usize;
                img[at] = rng.next_u64() as u8;
            }
        }
        2 | 3 => {
            // A header field or a table entry: an aligned word, often in the first clusters.
            let span = if rng.below(2) == 0 { len.min(256) } else { len };
            let at = (rng.below(span.saturating_sub(8)) & !3) as usize;
            let v = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
            let v = if rng.below(3) == 0 {
                v ^ (rng.next_u64() & 0xffff_fe00)
            } else {
                v
            };
            if rng.below(2) == 0 && at + 8 <= img.len() {
                img[at..at + 8].copy_from_slice(&v.to_be_bytes());
            } else {
                img[at..at + 4].copy_from_slice(&(v as u32).to_be_bytes());
            }
        }
        4 => {
            let keep = rng.below(len) as usize;
            img.truncate(keep);
        }
        _ => {
            mutate(img, rng);
            mutate(img, rng);
        }
    }
}

fn allowed(e: &StorageError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Corrupt
            | ErrorKind::Unsupported
            | ErrorKind::Encrypted
            | ErrorKind::ImplicitOpenDenied
            | ErrorKind::ChainTooDeep
    )
}

/// Opens the image and reads it: the start in full, then scattered windows.
async fn exercise(img: Vec<u8>, options: &OpenOptions, rng: &mut Rng) -> Result<(), StorageError> {
    let disk = open_image(Box::new(MemoryBlockDevice::read_only(img)), options).await?;
    let size = disk.size();
    let mut buf = vec![0u8; size.min(512 * 1024) as usize];
    let mut first_error = disk.read_at(0, &mut buf).await.err();
    for _ in 0..8 {
        let n = rng.below(64 * 1024).min(size) as usize;
        let at = rng.below(size - n as u64 + 1);
        let mut b = vec![0u8; n];
        if let Err(e) = disk.read_at(at, &mut b).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[test]
fn mutated_images_never_panic_and_fail_typed() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qcow2-mutation-fixtures");
    let _ = std::fs::remove_dir_all(&dir);
    let small = fixtures::generate_small(&dir).expect("generating images with qemu-img");
    let images: Vec<(String, Vec<u8>)> = small
        .iter()
        .map(|f| (f.name.clone(), std::fs::read(&f.image).unwrap()))
        .collect();
    let options = OpenOptions {
        resolver: Rc::new(DirResolver::new(&dir).unwrap()),
        max_chain_depth: 3,
        ..OpenOptions::default()
    };
    let cases = std::env::var("QCOW2_MUTATION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let start = Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    for case in 0..cases {
        if start.elapsed() > TIME_BUDGET {
            eprintln!("time budget reached after {case} cases");
            break;
        }
        let mut rng = Rng(case.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let (name, pristine) = &images[rng.below(images.len() as u64) as usize];
        let mut img = pristine.clone();
        mutate(&mut img, &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            block_on(exercise(img, &options, &mut rng))
        }));
        match outcome {
            Err(_) => panic!("case {case} ({name}) panicked"),
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                assert!(allowed(&e), "case {case} ({name}): untyped failure {e:?}");
                failed += 1;
            }
        }
    }
    eprintln!(
        "{ok} mutated images read, {failed} refused with typed errors, in {:?}",
        start.elapsed()
    );
    assert!(ok > 0 && failed > 0, "mutations should both pass and fail");
}
