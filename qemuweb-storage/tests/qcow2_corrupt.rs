//! Hand-made damage to real qemu-img images: each kind of bad metadata gives its own typed
//! error with a message that says what is wrong.
#![cfg(not(target_arch = "wasm32"))]

use futures::executor::block_on;
use qemuweb_storage::format::{detect_format, open_image, ImageFormat, OpenOptions, Qcow2Device};
use qemuweb_storage::{BlockDevice, ErrorKind, MemoryBlockDevice, StorageError};
use qemuweb_testkit::fixtures::{self, Fixture};
use std::path::PathBuf;
use std::sync::OnceLock;

fn all() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qcow2-corrupt-fixtures");
        let _ = std::fs::remove_dir_all(&dir);
        fixtures::generate(&dir).expect("generating fixtures with qemu-img")
    })
}

fn image(name: &str) -> Vec<u8> {
    let f = all().iter().find(|f| f.name == name).unwrap();
    std::fs::read(&f.image).unwrap()
}

fn be32(img: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(img[at..at + 4].try_into().unwrap())
}
fn be64(img: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(img[at..at + 8].try_into().unwrap())
}
fn put32(img: &mut [u8], at: usize, v: u32) {
    img[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(img: &mut [u8], at: usize, v: u64) {
    img[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Offset of the L1 table.
fn l1(img: &[u8]) -> usize {
    be64(img, 40) as usize
}

/// Offset of the L2 table the first L1 entry points to.
fn l2(img: &[u8]) -> usize {
    (be64(img, l1(img)) & 0x00ff_ffff_ffff_fe00) as usize
}

/// Offset (in the file) of the first L2 entry matching `pred`.
fn find_l2_entry(img: &[u8], stride: usize, pred: impl Fn(u64) -> bool) -> usize {
    let table = l2(img);
    let cs = 1usize << be32(img, 20);
    (0..cs / stride)
        .map(|i| table + i * stride)
        .find(|&at| pred(be64(img, at)))
        .expect("no such L2 entry")
}

/// Opens `img` and reads all of it: the first error, if any.
fn open_and_read(img: Vec<u8>) -> Result<Qcow2Device, StorageError> {
    block_on(async {
        let q = Qcow2Device::open(
            Box::new(MemoryBlockDevice::read_only(img)),
            &OpenOptions::default(),
        )
        .await?;
        let mut buf = vec![0u8; q.size() as usize];
        q.read_at(0, &mut buf).await?;
        Ok(q)
    })
}

#[track_caller]
fn expect(img: Vec<u8>, kind: ErrorKind, words: &str) {
    let e = open_and_read(img).expect_err("the damaged image was accepted");
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.to_string().contains(words), "{e:?} lacks {words:?}");
}

#[test]
fn the_fixtures_themselves_are_fine() {
    for name in ["v3-c64k", "v2-c64k", "zlib-c64k", "zstd-c64k", "extl2-c64k"] {
        open_and_read(image(name)).unwrap();
    }
}

#[test]
fn encryption_is_refused() {
    for (method, words) in [(1, "AES"), (2, "LUKS")] {
        let mut img = image("v3-c64k");
        put32(&mut img, 32, method);
        expect(img, ErrorKind::Encrypted, words);
    }
    let mut img = image("v3-c64k");
    put32(&mut img, 32, 9);
    expect(img, ErrorKind::Corrupt, "encryption method 9");
}

#[test]
fn unknown_incompatible_bits_are_named() {
    let mut img = image("v3-c64k");
    put64(&mut img, 72, 1 << 20 | 1 << 37);
    expect(img, ErrorKind::Unsupported, "bit 20, bit 37");
    // qemu-img writes a feature-name table; name bit 20 through it.
    let mut img = image("v3-c64k");
    let entry = img
        .windows(11)
        .position(|w| w == b"\0\0dirty bit")
        .expect("feature-name table entry for the dirty bit");
    img[entry + 1] = 20;
    put64(&mut img, 72, 1 << 20);
    expect(img, ErrorKind::Unsupported, "bit 20 (dirty bit)");
}

#[test]
fn header_fields_out_of_range() {
    for bits in [8u32, 22, 63] {
        let mut img = image("v3-c64k");
        put32(&mut img, 20, bits);
        expect(img, ErrorKind::Corrupt, "cluster_bits");
    }
    for (len, words) in [
        (100, "shorter"),
        (108, "multiple of 8"),
        (65544, "exceeds the cluster size"),
    ] {
        let mut img = image("v3-c64k");
        put32(&mut img, 100, len);
        expect(img, ErrorKind::Corrupt, words);
    }
    let mut img = image("v3-c64k");
    put32(&mut img, 4, 4);
    expect(img, ErrorKind::Unsupported, "version 4");
    let mut img = image("v3-c64k");
    put32(&mut img, 96, 7);
    expect(img, ErrorKind::Corrupt, "refcount_order");
    let mut img = image("v3-c64k");
    img[104] = 5;
    expect(img, ErrorKind::Unsupported, "compression type 5");
    let mut img = image("v3-c64k");
    put64(&mut img, 72, 1 << 3);
    expect(img, ErrorKind::Corrupt, "compression type");
    let mut img = image("zstd-c64k");
    put64(&mut img, 72, 0);
    expect(img, ErrorKind::Corrupt, "zstd");
    let mut img = image("v3-c64k");
    put32(&mut img, 20, 12);
    put64(&mut img, 72, 1 << 4);
    expect(img, ErrorKind::Corrupt, "extended L2");
    let mut img = image("v3-c64k");
    put32(&mut img, 56, 200);
    expect(img, ErrorKind::Corrupt, "refcount table");
    let mut img = image("v3-c64k");
    put64(&mut img, 72, 1 << 2);
    expect(img, ErrorKind::Unsupported, "does not name it");
}

#[test]
fn l1_table_problems() {
    let mut img = image("v3-c64k");
    put32(&mut img, 36, 5_000_000);
    expect(img, ErrorKind::Corrupt, "larger than QEMU's limit");
    let mut img = image("v3-c64k");
    put32(&mut img, 36, 0);
    expect(img, ErrorKind::Corrupt, "too few");
    let mut img = image("v3-c64k");
    put64(&mut img, 24, 1 << 50);
    expect(img, ErrorKind::Corrupt, "too few");
    let mut img = image("v3-c64k");
    let at = be64(&img, 40);
    put64(&mut img, 40, at + 512);
    expect(img, ErrorKind::Corrupt, "L1 table offset");
    let mut img = image("v3-c64k");
    let past = (img.len() as u64).next_multiple_of(65536) + 65536;
    put64(&mut img, 40, past);
    expect(img, ErrorKind::Corrupt, "past the end");
}

#[test]
fn l2_and_data_offsets() {
    let mut img = image("v3-c64k");
    let at = l1(&img);
    let e = be64(&img, at);
    put64(&mut img, at, e + 512);
    expect(img, ErrorKind::Corrupt, "L2 table offset");
    let mut img = image("v3-c64k");
    let at = l1(&img);
    put64(&mut img, at, 1 << 63 | 1 << 40);
    expect(img, ErrorKind::Corrupt, "past the end");

    let mut img = image("v3-c64k");
    let at = find_l2_entry(&img, 8, |e| e & 0x00ff_ffff_ffff_fe00 != 0);
    let e = be64(&img, at);
    put64(&mut img, at, e + 4096);
    expect(img, ErrorKind::Corrupt, "not cluster-aligned");
    let mut img = image("v3-c64k");
    put64(&mut img, at, 1 << 63 | 1 << 44);
    expect(img, ErrorKind::Corrupt, "past the end");
}

#[test]
fn zero_flag_in_a_version_2_image() {
    let mut img = image("v2-c64k");
    let at = find_l2_entry(&img, 8, |e| e != 0);
    let e = be64(&img, at);
    put64(&mut img, at, e | 1);
    expect(img, ErrorKind::Corrupt, "version 2");
}

#[test]
fn compressed_clusters_that_do_not_decode() {
    const COMPRESSED: u64 = 1 << 62;
    for name in ["zlib-c64k", "zstd-c64k"] {
        let pristine = image(name);
        let at = find_l2_entry(&pristine, 8, |e| e & COMPRESSED != 0);
        let entry = be64(&pristine, at);
        let shift = 62 - (16 - 8);
        let off = (entry & ((1 << shift) - 1)) as usize;
        // Garbage instead of the compressed bytes.
        let mut img = pristine.clone();
        img[off..off + 64].fill(0xa5);
        expect(img, ErrorKind::Corrupt, "compressed cluster");
        // A stored length too short to hold the data.
        let mut img = pristine.clone();
        put64(&mut img, at, COMPRESSED | off as u64);
        expect(img, ErrorKind::Corrupt, "compressed cluster");
        // Past the end of the file.
        let mut img = pristine.clone();
        put64(&mut img, at, COMPRESSED | 1 << 40);
        expect(img, ErrorKind::Corrupt, "past the end");
    }
}

#[test]
fn extended_l2_bitmaps() {
    let pristine = image("extl2-c64k");
    // An allocated cluster: set a zero bit where an allocation bit is set.
    let at = find_l2_entry(&pristine, 16, |e| e & 0x00ff_ffff_ffff_fe00 != 0);
    let bitmap = be64(&pristine, at + 8);
    let alloc = bitmap & 0xffff_ffff;
    assert_ne!(alloc, 0);
    let mut img = pristine.clone();
    put64(
        &mut img,
        at + 8,
        bitmap | (alloc & alloc.wrapping_neg()) << 32,
    );
    expect(img, ErrorKind::Corrupt, "both allocated and zero");
    // An unallocated cluster with allocation bits.
    let at = find_l2_entry(&pristine, 16, |e| e == 0);
    let mut img = pristine.clone();
    put64(&mut img, at + 8, 1);
    expect(img, ErrorKind::Corrupt, "unallocated cluster");
}

#[test]
fn backing_file_names_and_extensions() {
    let mut img = image("chain2");
    put32(&mut img, 16, 1024);
    expect(img, ErrorKind::Corrupt, "backing file name");
    let mut img = image("chain2");
    put64(&mut img, 8, 65536 + 8);
    expect(img, ErrorKind::Corrupt, "outside cluster 0");
    // The backing format extension, made longer than QEMU allows.
    let mut img = image("chain2");
    let ext = img
        .windows(4)
        .position(|w| w == 0xe279_2acau32.to_be_bytes())
        .unwrap();
    put32(&mut img, ext + 4, 24);
    expect(img, ErrorKind::Corrupt, "backing format");
    // The first extension, made to run past the end of cluster 0.
    let mut img = image("v3-c64k");
    let first = be32(&img, 100) as usize;
    assert_ne!(be32(&img, first), 0, "qemu-img writes extensions");
    put32(&mut img, first + 4, 70_000);
    expect(img, ErrorKind::Corrupt, "overruns");
}

#[test]
fn short_files_and_foreign_formats() {
    let img = image("v3-c64k");
    for len in [0usize, 3, 50, 100, 4096] {
        let short = img[..len].to_vec();
        let kind = open_and_read(short).err().unwrap().kind();
        assert!(
            kind == ErrorKind::Corrupt,
            "{len} bytes: {kind:?} instead of Corrupt"
        );
    }
    let mut qcow1 = img.clone();
    put32(&mut qcow1, 4, 1);
    block_on(async {
        let dev = MemoryBlockDevice::read_only(qcow1.clone());
        let e = detect_format(&dev).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("qcow (version 1)"), "{e}");
        let raw = MemoryBlockDevice::read_only(vec![0u8; 4096]);
        assert_eq!(detect_format(&raw).await.unwrap(), ImageFormat::Raw);
    });
    expect(qcow1, ErrorKind::Unsupported, "version 1");
}

#[test]
fn dirty_and_corrupt_bits_still_open() {
    let mut img = image("v3-c64k");
    put64(&mut img, 72, 0b11);
    let q = open_and_read(img).unwrap();
    assert!(q.info().dirty && q.info().corrupt);
    assert!(q.read_only());
    block_on(async {
        let e = q.write_at(0, &[1]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ReadOnly);
        // open_image gives the same device.
        let dev = Box::new(MemoryBlockDevice::read_only(image("v3-c64k")));
        let d = open_image(dev, &OpenOptions::default()).await.unwrap();
        assert_eq!(d.size(), q.size());
    });
}

#[test]
fn a_virtual_size_with_a_stray_tail_rounds_down_like_qemu() {
    let mut img = image("v3-c64k");
    let size = be64(&img, 24);
    put64(&mut img, 24, size + 100);
    let q = open_and_read(img).unwrap();
    assert_eq!(q.size(), size);
    assert_eq!(q.info().virtual_size, size);
}

/// Found by the fuzzer: an empty disk whose (unused) L1 offset lies past the end of the file.
#[test]
fn an_empty_disk_ignores_its_l1_offset() {
    let mut img = image("v3-c64k");
    put64(&mut img, 24, 0);
    put32(&mut img, 36, 0);
    put64(&mut img, 40, 1 << 50);
    let q = open_and_read(img).unwrap();
    assert_eq!(q.size(), 0);
}
