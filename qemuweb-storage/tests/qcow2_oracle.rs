//! Every fixture made with the real qemu-img reads, byte for byte, as its raw oracle
//! (`qemu-img convert -O raw`), and files named inside images open only through a resolver.
#![cfg(not(target_arch = "wasm32"))]

use async_trait::async_trait;
use futures::executor::block_on;
use qemuweb_storage::format::{
    detect_format, open_image, Compression, ImageFormat, OpenOptions, Qcow2Device,
};
use qemuweb_storage::resolver::{DirResolver, ImageResolver, ImplicitKind, ImplicitOpen};
use qemuweb_storage::{BlockDevice, ErrorKind, FileBlockDevice, MemoryBlockDevice, Result};
use qemuweb_testkit::fixtures::{self, Fixture};
use qemuweb_testkit::rng::Rng;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::OnceLock;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qcow2-oracle-fixtures")
}

fn all() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = fixture_dir();
        let _ = std::fs::remove_dir_all(&dir);
        fixtures::generate(&dir).expect("generating fixtures with qemu-img (is QEMU installed?)")
    })
}

fn fixture(name: &str) -> &'static Fixture {
    all()
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

fn dir_options() -> OpenOptions {
    OpenOptions {
        resolver: Rc::new(DirResolver::new(fixture_dir()).unwrap()),
        ..OpenOptions::default()
    }
}

fn file(path: &Path) -> Box<dyn BlockDevice> {
    Box::new(FileBlockDevice::open(path, true).unwrap())
}

async fn check_against_oracle(f: &Fixture, disk: &dyn BlockDevice, seed: u64) {
    let raw = std::fs::read(&f.raw).unwrap();
    assert_eq!(disk.size(), raw.len() as u64, "{}: size", f.name);
    // Sequential reads in chunks that do not line up with clusters.
    let chunk = 1024 * 1024 + 3 * 512 + 7;
    let mut buf = vec![0u8; chunk];
    let mut off = 0usize;
    while off < raw.len() {
        let n = chunk.min(raw.len() - off);
        disk.read_at(off as u64, &mut buf[..n]).await.unwrap();
        if buf[..n] != raw[off..off + n] {
            let i = (0..n).find(|&i| buf[i] != raw[off + i]).unwrap();
            panic!(
                "{}: byte {} differs: ours {:#04x}, qemu-img {:#04x}",
                f.name,
                off + i,
                buf[i],
                raw[off + i]
            );
        }
        off += n;
    }
    // Random reads of various sizes, mostly unaligned.
    let cluster = f.cluster_size.unwrap_or(65536);
    let mut rng = Rng(seed);
    for _ in 0..300 {
        let len = match rng.below(4) {
            0 => rng.below(600) + 1,
            1 => rng.below(cluster + 1) + 1,
            2 => rng.below(3 * cluster) + 1,
            _ => rng.below(256 * 1024) + 1,
        }
        .min(raw.len() as u64) as usize;
        let at = rng.below(raw.len() as u64 - len as u64 + 1) as usize;
        let mut buf = vec![0u8; len];
        disk.read_at(at as u64, &mut buf).await.unwrap();
        assert!(
            buf == raw[at..at + len],
            "{}: random read of {len} bytes at {at} differs",
            f.name
        );
    }
    // Past the end.
    let e = disk.read_vec(raw.len() as u64, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
}

#[test]
fn every_fixture_reads_as_its_oracle() {
    block_on(async {
        let fixtures = all();
        assert!(fixtures.len() >= 30, "only {} fixtures", fixtures.len());
        for (i, f) in fixtures.iter().enumerate() {
            let dev = file(&f.image);
            let expected = ImageFormat::from_name(f.format).unwrap();
            assert_eq!(
                detect_format(dev.as_ref()).await.unwrap(),
                expected,
                "{}",
                f.name
            );
            let disk = open_image(dev, &dir_options()).await.unwrap_or_else(|e| {
                panic!("{}: {e}", f.name);
            });
            check_against_oracle(f, disk.as_ref(), i as u64).await;
            assert!(
                disk.write_at(0, b"x").await.is_err(),
                "{}: a write succeeded",
                f.name
            );
        }
    });
}

#[test]
fn info_reports_the_header() {
    block_on(async {
        for f in all().iter().filter(|f| f.format == "qcow2") {
            let q = Qcow2Device::open(file(&f.image), &dir_options())
                .await
                .unwrap();
            let info = q.info();
            let n = f.name.as_str();
            assert_eq!(Some(info.cluster_size), f.cluster_size, "{n}");
            assert_eq!(info.virtual_size, f.virtual_size, "{n}");
            assert_eq!(
                info.version,
                if n.starts_with("v2-") { 2 } else { 3 },
                "{n}"
            );
            let zstd = n.starts_with("zstd");
            assert_eq!(
                info.compression,
                if zstd {
                    Compression::Zstd
                } else {
                    Compression::Zlib
                },
                "{n}"
            );
            assert_eq!(info.extended_l2, n.contains("extl2"), "{n}");
            assert_eq!(info.dirty, n == "dirty-c64k", "{n}");
            assert!(!info.corrupt, "{n}");
            assert_eq!(info.backing_file.is_some(), f.chain_depth > 0, "{n}");
            assert_eq!(info.data_file.is_some(), n.starts_with("datafile"), "{n}");
            assert_eq!(info.data_file_raw, n == "datafile-raw", "{n}");
        }
        let q = Qcow2Device::open(file(&fixture("chain3").image), &dir_options())
            .await
            .unwrap();
        assert_eq!(q.info().backing_file.as_deref(), Some("chain-mid.qcow2"));
        assert_eq!(q.info().backing_format.as_deref(), Some("qcow2"));
        assert!(!q.info().lazy_refcounts);
        let d = Qcow2Device::open(file(&fixture("dirty-c64k").image), &dir_options())
            .await
            .unwrap();
        assert!(d.info().lazy_refcounts);
    });
}

#[test]
fn reads_also_work_from_memory() {
    block_on(async {
        for name in ["zstd-c64k", "zlib-extl2-c32k", "v3-c512"] {
            let f = fixture(name);
            let bytes = std::fs::read(&f.image).unwrap();
            let dev = Box::new(MemoryBlockDevice::read_only(bytes));
            let disk = open_image(dev, &OpenOptions::default()).await.unwrap();
            check_against_oracle(f, disk.as_ref(), 99).await;
        }
    });
}

#[test]
fn named_files_are_denied_without_a_resolver() {
    block_on(async {
        let mut seen = 0;
        for f in all().iter().filter(|f| f.needs_resolver) {
            let e = open_image(file(&f.image), &OpenOptions::default())
                .await
                .err()
                .unwrap_or_else(|| panic!("{} opened without a resolver", f.name));
            assert_eq!(e.kind(), ErrorKind::ImplicitOpenDenied, "{}: {e}", f.name);
            seen += 1;
        }
        assert!(seen >= 6);
    });
}

/// Records what an image asks to open, then lets a [`DirResolver`] open it.
struct Recording {
    inner: DirResolver,
    seen: RefCell<Vec<ImplicitOpen>>,
}

#[async_trait(?Send)]
impl ImageResolver for Recording {
    async fn open(&self, request: &ImplicitOpen) -> Result<Box<dyn BlockDevice>> {
        self.seen.borrow_mut().push(request.clone());
        self.inner.open(request).await
    }
}

#[test]
fn resolver_sees_each_request() {
    block_on(async {
        let rec = Rc::new(Recording {
            inner: DirResolver::new(fixture_dir()).unwrap(),
            seen: RefCell::new(Vec::new()),
        });
        let options = OpenOptions {
            resolver: rec.clone(),
            ..OpenOptions::default()
        };
        open_image(file(&fixture("chain3").image), &options)
            .await
            .unwrap();
        open_image(file(&fixture("datafile").image), &options)
            .await
            .unwrap();
        open_image(file(&fixture("v2-on-raw").image), &options)
            .await
            .unwrap();
        let seen = rec.seen.borrow();
        let brief: Vec<_> = seen
            .iter()
            .map(|r| (r.kind, r.name.as_str(), r.format.as_deref(), r.depth))
            .collect();
        assert_eq!(
            brief,
            [
                (
                    ImplicitKind::BackingFile,
                    "chain-mid.qcow2",
                    Some("qcow2"),
                    0
                ),
                (
                    ImplicitKind::BackingFile,
                    "chain-base.qcow2",
                    Some("qcow2"),
                    1
                ),
                (ImplicitKind::DataFile, "datafile.data", None, 0),
                (ImplicitKind::BackingFile, "backing.raw", Some("raw"), 0),
            ]
        );
    });
}

#[test]
fn chain_depth_is_limited() {
    block_on(async {
        let with_limit = |n| OpenOptions {
            max_chain_depth: n,
            ..dir_options()
        };
        let top = &fixture("chain3").image;
        let e = open_image(file(top), &with_limit(1)).await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::ChainTooDeep, "{e}");
        assert!(e.to_string().contains("limit of 1"), "{e}");
        open_image(file(top), &with_limit(2)).await.unwrap();
        let e = open_image(file(&fixture("chain2").image), &with_limit(0))
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::ChainTooDeep);
        // A format forced on the top image is used as given.
        let forced = OpenOptions {
            format: Some(ImageFormat::Raw),
            ..OpenOptions::default()
        };
        let raw_view = open_image(file(top), &forced).await.unwrap();
        assert_eq!(raw_view.read_vec(0, 4).await.unwrap(), b"QFI\xfb");
    });
}

/// Rewrites the backing file name of a qcow2 image held in memory.
fn with_backing_name(image: &[u8], name: &str) -> Vec<u8> {
    let mut img = image.to_vec();
    let at = u64::from_be_bytes(img[8..16].try_into().unwrap()) as usize;
    assert!(at > 0);
    img[at..at + name.len()].copy_from_slice(name.as_bytes());
    img[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
    img
}

#[test]
fn hostile_names_are_denied() {
    block_on(async {
        let image = std::fs::read(&fixture("chain2").image).unwrap();
        for name in [
            "../chain-base.qcow2",
            "/etc/passwd",
            "http://evil.example/x",
        ] {
            let img = with_backing_name(&image, name);
            let dev = Box::new(MemoryBlockDevice::read_only(img));
            let e = open_image(dev, &dir_options()).await.err().unwrap();
            assert_eq!(e.kind(), ErrorKind::ImplicitOpenDenied, "{name}: {e}");
        }
        // The same for an external data file's name.
        let mut image = std::fs::read(&fixture("datafile").image).unwrap();
        let at = image
            .windows(13)
            .position(|w| w == b"datafile.data")
            .unwrap();
        image[at..at + 13].copy_from_slice(b"/etc/passwd\0\0");
        let dev = Box::new(MemoryBlockDevice::read_only(image));
        let e = open_image(dev, &dir_options()).await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::ImplicitOpenDenied, "{e}");
    });
}

#[test]
fn closed_device_refuses_reads() {
    block_on(async {
        let disk = open_image(file(&fixture("chain2").image), &dir_options())
            .await
            .unwrap();
        disk.read_vec(0, 512).await.unwrap();
        disk.sync().await.unwrap();
        disk.close().await.unwrap();
        let e = disk.read_vec(0, 512).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
    });
}

/// The kinds of L2 entries an image holds, read directly from its tables.
#[derive(Debug, Default)]
struct EntryKinds {
    normal: usize,
    compressed: usize,
    zero_plain: usize,
    zero_alloc: usize,
    /// Extended L2: allocated clusters with some unallocated subclusters.
    partial_alloc: usize,
    /// Extended L2: subclusters with the zero bit.
    zero_subclusters: usize,
}

fn entry_kinds(path: &Path) -> EntryKinds {
    let img = std::fs::read(path).unwrap();
    let be64 = |at: usize| u64::from_be_bytes(img[at..at + 8].try_into().unwrap());
    let cs = 1usize << u32::from_be_bytes(img[20..24].try_into().unwrap());
    let l1_size = u32::from_be_bytes(img[36..40].try_into().unwrap()) as usize;
    let l1 = be64(40) as usize;
    let version = u32::from_be_bytes(img[4..8].try_into().unwrap());
    let extended = version == 3 && be64(72) & (1 << 4) != 0;
    let stride = if extended { 16 } else { 8 };
    let mut k = EntryKinds::default();
    for i in 0..l1_size {
        let l2 = (be64(l1 + 8 * i) & 0x00ff_ffff_ffff_fe00) as usize;
        if l2 == 0 {
            continue;
        }
        for j in 0..cs / stride {
            let e = be64(l2 + j * stride);
            let off = e & 0x00ff_ffff_ffff_fe00;
            if e & (1 << 62) != 0 {
                k.compressed += 1;
            } else if !extended && e & 1 != 0 {
                if off != 0 {
                    k.zero_alloc += 1;
                } else {
                    k.zero_plain += 1;
                }
            } else if off != 0 {
                k.normal += 1;
            }
            if extended && e & (1 << 62) == 0 {
                let bitmap = be64(l2 + j * stride + 8);
                if off != 0 && bitmap & 0xffff_ffff != 0xffff_ffff {
                    k.partial_alloc += 1;
                }
                k.zero_subclusters += (bitmap >> 32).count_ones() as usize;
            }
        }
    }
    k
}

#[test]
fn fixtures_exercise_every_entry_kind() {
    let kinds = |name: &str| entry_kinds(&fixture(name).image);
    let z = kinds("zero-c64k");
    assert!(
        z.zero_alloc > 0 && z.zero_plain > 0 && z.compressed > 0,
        "{z:?}"
    );
    for name in [
        "zlib-c64k",
        "zlib-c1m",
        "zstd-c512",
        "zstd-c2m",
        "v2-zlib-c64k",
    ] {
        let c = kinds(name);
        assert!(c.compressed > 1, "{name}: {c:?}");
    }
    // Incompressible runs are stored uncompressed even in compressed images.
    assert!(kinds("zlib-c4k").normal > 0);
    for name in ["extl2-c64k", "extl2-on-raw"] {
        let e = kinds(name);
        assert!(
            e.partial_alloc > 0 && e.zero_subclusters > 0,
            "{name}: {e:?}"
        );
    }
    assert!(kinds("zlib-extl2-c32k").compressed > 0);
    // Several L2 tables in the small-cluster fixtures.
    for name in ["v3-c512", "v3-c4k", "v3-c8k", "v3-c16k", "v2-c4k"] {
        let img = std::fs::read(&fixture(name).image).unwrap();
        let l1 = u64::from_be_bytes(img[40..48].try_into().unwrap()) as usize;
        let l1_size = u32::from_be_bytes(img[36..40].try_into().unwrap()) as usize;
        let used = (0..l1_size)
            .filter(|i| img[l1 + 8 * i..l1 + 8 * i + 8] != [0; 8])
            .count();
        assert!(used >= 2, "{name}: {used} L2 tables");
    }
}

/// Counts the reads that reach the underlying device.
struct Counting {
    inner: Box<dyn BlockDevice>,
    reads: Rc<RefCell<usize>>,
}

#[async_trait(?Send)]
impl BlockDevice for Counting {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        true
    }
    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        *self.reads.borrow_mut() += 1;
        self.inner.read_at(offset, buf).await
    }
    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.inner.write_at(offset, data).await
    }
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[test]
fn whole_disk_reads_are_merged_into_few_device_reads() {
    block_on(async {
        for (name, most) in [("v3-c4k", 16), ("zlib-c4k", 10), ("zstd-c64k", 4)] {
            let f = fixture(name);
            let reads = Rc::new(RefCell::new(0));
            let dev = Box::new(Counting {
                inner: file(&f.image),
                reads: reads.clone(),
            });
            let disk = Qcow2Device::open(dev, &OpenOptions::default())
                .await
                .unwrap();
            let opened = *reads.borrow();
            let all = disk.read_vec(0, disk.size() as usize).await.unwrap();
            assert_eq!(all, std::fs::read(&f.raw).unwrap(), "{name}");
            let used = *reads.borrow() - opened;
            let clusters = std::fs::metadata(&f.image).unwrap().len() / f.cluster_size.unwrap();
            eprintln!("{name}: {used} device reads for {clusters} stored clusters");
            assert!(
                used <= most,
                "{name}: {used} device reads for {clusters} stored clusters"
            );
            // Small reads inside one compressed cluster decode it once.
            if f.name.starts_with("v3") {
                continue;
            }
            let before = *reads.borrow();
            for i in 0..8 {
                disk.read_vec(4096 * 16 + i * 512, 512).await.unwrap();
            }
            assert_eq!(*reads.borrow() - before, 1, "{name}: small reads");
        }
    });
}
