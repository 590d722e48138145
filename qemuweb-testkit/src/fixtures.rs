//! Disk image fixtures made with the real `qemu-img` and `qemu-io`, each with its oracle:
//! the raw bytes `qemu-img convert -O raw` gives for it.
//!
//! [`generate`] writes every fixture into one directory. Backing files and external data
//! files are named relative to that directory, so a reader opens them through a resolver
//! confined to it. Generation is deterministic (content comes from a seeded generator, not
//! from the clock) and takes a few seconds.
//!
//! ```no_run
//! let dir = std::env::temp_dir().join("qemuweb-fixtures-doc");
//! let fixtures = qemuweb_testkit::fixtures::generate(&dir).unwrap();
//! for f in &fixtures {
//!     println!("{} ({}): {}", f.name, f.format, f.description);
//! }
//! qemuweb_testkit::fixtures::write_tsv(&dir, &fixtures).unwrap();
//! ```

use crate::rng::Rng;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// One generated disk image and its raw oracle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    /// A short unique name, e.g. `v3-c64k` or `zstd-c2m`.
    pub name: String,
    /// The image file.
    pub image: PathBuf,
    /// `qemu-img convert -O raw` of the image: what every read must return.
    pub raw: PathBuf,
    /// The image's format as QEMU names it: `"raw"` or `"qcow2"`.
    pub format: &'static str,
    /// Whether the image names other files (a backing file or an external data file) that
    /// must be opened through a resolver confined to the fixture directory.
    pub needs_resolver: bool,
    /// How many backing files lie below the image (0 without a backing file).
    pub chain_depth: usize,
    /// The cluster size, for qcow2 images.
    pub cluster_size: Option<u64>,
    /// The virtual disk size in bytes.
    pub virtual_size: u64,
    /// What the fixture exercises.
    pub description: String,
}

/// What a run of guest bytes holds in a source image.
#[derive(Debug, Clone, Copy)]
enum Fill {
    /// Compressible text, unique for every 512-byte sector.
    Text,
    /// Incompressible bytes.
    Random,
}

const WORDS: &[&str] = &[
    "qemu",
    "cluster",
    "sector",
    "backing",
    "overlay",
    "browser",
    "disk",
    "image",
    "zero",
    "compressed",
    "table",
    "guest",
    "host",
    "offset",
    "bitmap",
    "subcluster",
    "chain",
    "raw",
];

/// `len` bytes of content for guest offset `offset`, seeded by `seed`.
fn content(seed: u64, offset: u64, len: usize, fill: Fill) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 512);
    let first = offset / 512;
    let skip = (offset % 512) as usize;
    let mut sector = first;
    while out.len() < len + skip {
        let mut rng = Rng(seed ^ sector.wrapping_mul(0x1000_0000_01b3));
        let mut s = Vec::with_capacity(512);
        match fill {
            Fill::Text => {
                s.extend_from_slice(format!("<{seed:04x}:{sector:010}>").as_bytes());
                while s.len() < 512 {
                    s.push(b' ');
                    s.extend_from_slice(
                        WORDS[(rng.next_u64() % WORDS.len() as u64) as usize].as_bytes(),
                    );
                }
            }
            Fill::Random => {
                while s.len() < 512 {
                    s.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
            }
        }
        s.truncate(512);
        out.extend_from_slice(&s);
        sector += 1;
    }
    out.drain(..skip);
    out.truncate(len);
    out
}

/// Writes a sparse source image of `size` bytes with data at `regions`.
fn write_source(path: &Path, seed: u64, size: u64, regions: &[(u64, u64, Fill)]) -> io::Result<()> {
    let f = File::create(path)?;
    f.set_len(size)?;
    for &(off, len, fill) in regions {
        let len = len.min(size.saturating_sub(off));
        if len > 0 {
            f.write_all_at(&content(seed, off, len as usize, fill), off)?;
        }
    }
    Ok(())
}

/// Data spread over the disk: the start, unaligned runs, both sides of every L2 table
/// boundary (tables of `cluster` bytes map `cluster * cluster / 8` bytes), and the end.
fn spread(size: u64, cluster: u64) -> Vec<(u64, u64, Fill)> {
    let mut r = vec![
        (0, 112 * KIB, Fill::Text),
        (112 * KIB + 1536, 24 * KIB + 512, Fill::Random),
        (200 * KIB + 512, 48 * KIB, Fill::Text),
        (MIB - 4 * KIB, 8 * KIB, Fill::Text),
        (MIB + 200 * KIB, 3 * 512, Fill::Random),
    ];
    let coverage = cluster * cluster / 8;
    let mut b = coverage;
    let mut n = 0;
    while b < size && n < 64 {
        let half = (cluster * 3 / 2).clamp(4 * KIB, 96 * KIB);
        r.push((b - half, 2 * half, Fill::Text));
        b += coverage;
        n += 1;
    }
    r.push((
        size.saturating_sub(12 * KIB + 512),
        12 * KIB + 512,
        Fill::Text,
    ));
    r
}

/// Runs a command in `dir`, failing with its output if it fails.
fn run(dir: &Path, program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("running {program}: {e} (is QEMU installed?)"),
            )
        })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Whether `qemu-img` and `qemu-io` can be run.
pub fn qemu_available() -> bool {
    ["qemu-img", "qemu-io"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Builds the fixtures in one directory.
struct Builder<'a> {
    dir: &'a Path,
    out: Vec<Fixture>,
    seed: u64,
}

/// A write made with qemu-io.
enum Io {
    /// Data at (offset, len).
    Data(u64, u64),
    /// A compressed write of whole clusters at (offset, len).
    Compressed(u64, u64),
    /// `write -z` at (offset, len), with `-u` (may unmap) when the flag is set.
    Zero(u64, u64, bool),
    /// `discard` at (offset, len).
    Discard(u64, u64),
}

impl Builder<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn qemu_img(&self, args: &[&str]) -> io::Result<()> {
        run(self.dir, "qemu-img", args)
    }

    /// `qemu-img create` of the qcow2 `image` of `size`, with `-o opts` unless `opts` is
    /// empty, and over `backing` (file, format) if given.
    fn create(
        &self,
        image: &str,
        opts: &str,
        backing: Option<(&str, &str)>,
        size: &str,
    ) -> io::Result<()> {
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        if let Some((file, format)) = backing {
            args.extend(["-b", file, "-F", format]);
        }
        args.extend([image, size]);
        self.qemu_img(&args)
    }

    /// Applies `ops` to `image` with one qemu-io run; data comes from pattern files.
    fn qemu_io(&mut self, image: &str, ops: &[Io]) -> io::Result<()> {
        let mut cmds = Vec::new();
        let mut temps = Vec::new();
        for op in ops {
            self.seed += 1;
            cmds.push(match *op {
                Io::Data(off, len) | Io::Compressed(off, len) => {
                    let pat = format!(".pattern-{}.bin", temps.len());
                    let fill = if self.seed.is_multiple_of(3) {
                        Fill::Random
                    } else {
                        Fill::Text
                    };
                    fs::write(self.path(&pat), content(self.seed, off, len as usize, fill))?;
                    let c = if matches!(op, Io::Compressed(..)) {
                        " -c"
                    } else {
                        ""
                    };
                    let cmd = format!("write -q{c} -s {pat} {off} {len}");
                    temps.push(pat);
                    cmd
                }
                Io::Zero(off, len, unmap) => {
                    format!("write -q -z{} {off} {len}", if unmap { " -u" } else { "" })
                }
                Io::Discard(off, len) => format!("discard -q {off} {len}"),
            });
        }
        let mut args = vec!["-f", "qcow2"];
        for c in &cmds {
            args.push("-c");
            args.push(c);
        }
        args.push(image);
        let result = run(self.dir, "qemu-io", &args);
        for t in temps {
            fs::remove_file(self.path(&t))?;
        }
        result
    }

    /// Records `image` (already made) as a fixture, making its raw oracle.
    fn add(
        &mut self,
        name: &str,
        image: &str,
        f: FixtureKind,
        description: &str,
    ) -> io::Result<()> {
        let raw = format!("{name}.oracle.raw");
        let fmt = if f.raw { "raw" } else { "qcow2" };
        self.qemu_img(&["convert", "-f", fmt, "-O", "raw", image, &raw])?;
        let virtual_size = fs::metadata(self.path(&raw))?.len();
        self.out.push(Fixture {
            name: name.into(),
            image: self.path(image),
            raw: self.path(&raw),
            format: fmt,
            needs_resolver: f.chain_depth > 0 || f.data_file,
            chain_depth: f.chain_depth,
            cluster_size: f.cluster,
            virtual_size,
            description: description.into(),
        });
        Ok(())
    }

    /// A qcow2 image converted from a source with data spread over `size` bytes.
    fn converted(
        &mut self,
        name: &str,
        cluster: u64,
        size: u64,
        opts: &str,
        compress: bool,
        what: &str,
    ) -> io::Result<()> {
        self.seed += 1;
        let src = format!(".{name}.src");
        write_source(&self.path(&src), self.seed, size, &spread(size, cluster))?;
        let image = format!("{name}.qcow2");
        let o = format!("cluster_size={cluster}{opts}");
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-o", &o];
        if compress {
            args.push("-c");
        }
        args.extend([src.as_str(), image.as_str()]);
        self.qemu_img(&args)?;
        fs::remove_file(self.path(&src))?;
        self.add(name, &image, FixtureKind::qcow2(cluster), what)
    }
}

/// How a fixture is opened.
#[derive(Clone, Copy)]
struct FixtureKind {
    raw: bool,
    chain_depth: usize,
    data_file: bool,
    cluster: Option<u64>,
}

impl FixtureKind {
    fn qcow2(cluster: u64) -> Self {
        Self {
            raw: false,
            chain_depth: 0,
            data_file: false,
            cluster: Some(cluster),
        }
    }
    fn backed(cluster: u64, depth: usize) -> Self {
        Self {
            chain_depth: depth,
            ..Self::qcow2(cluster)
        }
    }
}

fn size_label(cluster: u64) -> String {
    if cluster >= MIB {
        format!("{}m", cluster / MIB)
    } else if cluster >= KIB {
        format!("{}k", cluster / KIB)
    } else {
        cluster.to_string()
    }
}

/// Generates every fixture into `dir` (created if missing; files of earlier runs are
/// replaced). Needs `qemu-img` and `qemu-io` on the `PATH`.
pub fn generate(dir: &Path) -> io::Result<Vec<Fixture>> {
    fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let mut b = Builder {
        dir: &dir,
        out: Vec::new(),
        seed: 0x5eed,
    };
    let odd = 3 * 512; // virtual sizes end in a partial cluster

    // Raw.
    write_source(&b.path("raw.img"), 1, 4 * MIB, &spread(4 * MIB, 64 * KIB))?;
    b.add(
        "raw",
        "raw.img",
        FixtureKind {
            raw: true,
            chain_depth: 0,
            data_file: false,
            cluster: None,
        },
        "a raw image",
    )?;

    // Version 3, every cluster size, data on both sides of several L2 table boundaries
    // where the virtual size allows (a table of an N-byte cluster maps N*N/8 bytes).
    for bits in 9..=21u32 {
        let cluster = 1u64 << bits;
        let size = match bits {
            ..=12 => 4 * MIB + odd,
            13 => 20 * MIB + odd,
            14 => 36 * MIB + odd,
            15..=17 => 4 * MIB + odd,
            // Big clusters cost their size in every metadata cluster: keep them small (a
            // 2 MiB-cluster disk of one partial cluster).
            _ => MIB + odd,
        };
        let name = format!("v3-c{}", size_label(cluster));
        b.converted(
            &name,
            cluster,
            size,
            ",compat=1.1",
            false,
            "qcow2 v3, data spread over several L2 tables",
        )?;
    }
    // Version 2.
    b.converted(
        "v2-c64k",
        64 * KIB,
        4 * MIB + odd,
        ",compat=0.10",
        false,
        "qcow2 v2 (compat=0.10)",
    )?;
    b.converted(
        "v2-c4k",
        4 * KIB,
        6 * MIB + odd,
        ",compat=0.10",
        false,
        "qcow2 v2 with 4 KiB clusters",
    )?;
    // Compressed.
    for (name, cluster, opts) in [
        ("zlib-c64k", 64 * KIB, ""),
        ("zlib-c4k", 4 * KIB, ""),
        ("zlib-c1m", MIB, ""),
        ("v2-zlib-c64k", 64 * KIB, ",compat=0.10"),
        ("zstd-c64k", 64 * KIB, ",compression_type=zstd"),
        ("zstd-c512", 512, ",compression_type=zstd"),
        ("zstd-c2m", 2 * MIB, ",compression_type=zstd"),
        ("zlib-extl2-c32k", 32 * KIB, ",extended_l2=on"),
    ] {
        let size = if cluster >= MIB {
            2 * MIB + odd
        } else {
            4 * MIB + odd
        };
        b.converted(
            name,
            cluster,
            size,
            opts,
            true,
            "compressed clusters (qemu-img convert -c)",
        )?;
    }

    // Extended L2 with partial subcluster writes, zeroes and discards.
    let c = 64 * KIB;
    b.create(
        "extl2-c64k.qcow2",
        "extended_l2=on,cluster_size=65536",
        None,
        "4M",
    )?;
    b.qemu_io(
        "extl2-c64k.qcow2",
        &[
            Io::Data(2 * KIB + 512, KIB),
            Io::Data(c + 6 * KIB, 4 * KIB),
            Io::Data(3 * c, 2 * c),
            Io::Zero(3 * c + 8 * KIB, 6 * KIB, false),
            Io::Discard(4 * c + 32 * KIB, 8 * KIB),
            Io::Zero(6 * c, 2 * c, false),
            Io::Zero(9 * c + 2 * KIB, 2 * KIB, false),
            Io::Compressed(12 * c, 2 * c),
            Io::Data(20 * c + 1000 * 2, 30 * KIB),
            Io::Data(4 * MIB - 3 * KIB, 3 * KIB),
        ],
    )?;
    b.add("extl2-c64k", "extl2-c64k.qcow2", FixtureKind::qcow2(c), "extended L2: partial subcluster writes, zero and discarded subclusters, a compressed cluster")?;

    // Zero clusters: allocated zero clusters (the offset is kept), unmapped ones, and ones
    // over unallocated space; plus compressed clusters written by qemu-io.
    b.converted(
        "zero-base-c64k",
        c,
        4 * MIB + odd,
        "",
        false,
        "qcow2 v3 (base of the zero-cluster fixture)",
    )?;
    fs::copy(b.path("zero-base-c64k.qcow2"), b.path("zero-c64k.qcow2"))?;
    b.qemu_io(
        "zero-c64k.qcow2",
        &[
            Io::Zero(c, 2 * c, false),
            Io::Zero(0, 32 * KIB, false),
            Io::Zero(4 * c, c, true),
            Io::Zero(40 * c, 3 * c, false),
            Io::Compressed(50 * c, 2 * c),
        ],
    )?;
    b.add(
        "zero-c64k",
        "zero-c64k.qcow2",
        FixtureKind::qcow2(c),
        "zero clusters, allocated and not (write -z, write -z -u)",
    )?;

    // Preallocated metadata, v3 and v2, with some data written.
    for (name, compat) in [("prealloc-c64k", "1.1"), ("v2-prealloc-c64k", "0.10")] {
        let image = format!("{name}.qcow2");
        let o = format!("preallocation=metadata,cluster_size=65536,compat={compat}");
        b.create(&image, &o, None, "3M")?;
        b.qemu_io(
            &image,
            &[
                Io::Data(100 * KIB, 200 * KIB),
                Io::Data(2 * MIB + 512, 4 * KIB),
            ],
        )?;
        b.add(
            name,
            &image,
            FixtureKind::qcow2(c),
            "preallocation=metadata",
        )?;
    }

    // A lazy-refcounts image left dirty by a killed writer.
    b.create("dirty-c64k.qcow2", "lazy_refcounts=on", None, "2M")?;
    b.qemu_io(
        "dirty-c64k.qcow2",
        &[Io::Data(0, 64 * KIB), Io::Data(MIB + 512, 8 * KIB)],
    )?;
    // qemu-io kills itself before it can clear the dirty bit; its exit status is the signal.
    let _ = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -q -P 0x42 512k 64k",
            "-c",
            "sigraise 9",
            "dirty-c64k.qcow2",
        ])
        .current_dir(&dir)
        .output()?;
    b.add(
        "dirty-c64k",
        "dirty-c64k.qcow2",
        FixtureKind::qcow2(c),
        "the dirty bit set (lazy refcounts, writer killed)",
    )?;

    // Backing chains: base (3 MiB) <- mid (5 MiB) <- top (6 MiB and a bit); each backing
    // file is shorter than its overlay.
    b.converted(
        "chain-base",
        c,
        3 * MIB,
        "",
        false,
        "qcow2 v3 (base of the chains)",
    )?;
    b.create(
        "chain-mid.qcow2",
        "",
        Some(("chain-base.qcow2", "qcow2")),
        "5M",
    )?;
    b.qemu_io(
        "chain-mid.qcow2",
        &[
            Io::Data(100 * KIB, 50 * KIB),
            Io::Data(2 * MIB + 512, 2 * c),
            Io::Data(4 * MIB, 100 * KIB),
            Io::Zero(MIB, c, false),
        ],
    )?;
    b.add(
        "chain2",
        "chain-mid.qcow2",
        FixtureKind::backed(c, 1),
        "overlay on a shorter qcow2 backing file",
    )?;
    b.create(
        "chain-top.qcow2",
        "cluster_size=16384",
        Some(("chain-mid.qcow2", "qcow2")),
        "6145K",
    )?;
    b.qemu_io(
        "chain-top.qcow2",
        &[
            Io::Data(120 * KIB, 8 * KIB),
            Io::Zero(2 * MIB + 16 * KIB, 32 * KIB, false),
            Io::Data(5 * MIB - 512, 8 * KIB),
            Io::Compressed(3 * MIB, 32 * KIB),
        ],
    )?;
    b.add(
        "chain3",
        "chain-top.qcow2",
        FixtureKind::backed(16 * KIB, 2),
        "a chain of three qcow2 images",
    )?;

    // A raw backing file under a v2 overlay and an extended-L2 overlay.
    write_source(&b.path("backing.raw"), 7, 3 * MIB, &spread(3 * MIB, c))?;
    b.create(
        "v2-on-raw.qcow2",
        "compat=0.10",
        Some(("backing.raw", "raw")),
        "4M",
    )?;
    b.qemu_io(
        "v2-on-raw.qcow2",
        &[
            Io::Data(64 * KIB + 512, 3 * KIB),
            Io::Data(3 * MIB - 4 * KIB, 16 * KIB),
        ],
    )?;
    b.add(
        "v2-on-raw",
        "v2-on-raw.qcow2",
        FixtureKind::backed(c, 1),
        "qcow2 v2 overlay on a shorter raw backing file",
    )?;
    b.create(
        "extl2-on-raw.qcow2",
        "extended_l2=on",
        Some(("backing.raw", "raw")),
        "4M",
    )?;
    b.qemu_io(
        "extl2-on-raw.qcow2",
        &[
            Io::Data(2 * KIB + 100 * 2, 512),
            Io::Data(c + 10 * KIB, 5 * KIB),
            Io::Zero(5 * KIB, 3 * KIB, false),
            Io::Zero(3 * c + 4 * KIB, 4 * KIB, true),
            Io::Data(3 * MIB - KIB, 6 * KIB),
        ],
    )?;
    b.add(
        "extl2-on-raw",
        "extl2-on-raw.qcow2",
        FixtureKind::backed(c, 1),
        "extended L2 overlay: unallocated subclusters read the backing file",
    )?;

    // External data files, plain and raw.
    for (name, raw) in [("datafile", "off"), ("datafile-raw", "on")] {
        let image = format!("{name}.qcow2");
        let o = format!("data_file={name}.data,data_file_raw={raw}");
        b.create(&image, &o, None, "3M")?;
        b.qemu_io(
            &image,
            &[
                Io::Data(0, 96 * KIB),
                Io::Data(MIB + 512, 20 * KIB),
                Io::Zero(16 * KIB, 64 * KIB, false),
            ],
        )?;
        let kind = FixtureKind {
            data_file: true,
            ..FixtureKind::qcow2(c)
        };
        b.add(name, &image, kind, "an external data file")?;
    }
    Ok(b.out)
}

/// Generates small images (256 KiB disks, a few hundred KiB of file) of the main kinds:
/// seeds for mutation tests and fuzzing, where every case reads the whole disk.
pub fn generate_small(dir: &Path) -> io::Result<Vec<Fixture>> {
    fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let mut b = Builder {
        dir: &dir,
        out: Vec::new(),
        seed: 0x5a11,
    };
    let size = 256 * KIB + 3 * 512;
    for (name, cluster, opts, compress) in [
        ("small-v3-c512", 512, "", false),
        ("small-v3-c4k", 4 * KIB, "", false),
        ("small-v2-c4k", 4 * KIB, ",compat=0.10", false),
        ("small-zlib-c4k", 4 * KIB, "", true),
        ("small-zstd-c4k", 4 * KIB, ",compression_type=zstd", true),
        ("small-zlib-extl2-c16k", 16 * KIB, ",extended_l2=on", true),
    ] {
        b.converted(name, cluster, size, opts, compress, "a small image")?;
    }
    let c = 16 * KIB;
    b.create(
        "small-extl2-c16k.qcow2",
        "extended_l2=on,cluster_size=16384",
        None,
        "256K",
    )?;
    b.qemu_io(
        "small-extl2-c16k.qcow2",
        &[
            Io::Data(1536, 1024),
            Io::Data(c + 2048, 4 * KIB),
            Io::Zero(c + 4096, 1024, false),
            Io::Zero(4 * c, 2 * c, false),
            Io::Compressed(8 * c, c),
            Io::Discard(c + 8192, 1024),
        ],
    )?;
    b.add(
        "small-extl2-c16k",
        "small-extl2-c16k.qcow2",
        FixtureKind::qcow2(c),
        "a small extended-L2 image",
    )?;
    fs::copy(b.path("small-v3-c4k.qcow2"), b.path("small-zero-c4k.qcow2"))?;
    b.qemu_io(
        "small-zero-c4k.qcow2",
        &[
            Io::Zero(0, 8 * KIB, false),
            Io::Zero(64 * KIB, 16 * KIB, true),
        ],
    )?;
    b.add(
        "small-zero-c4k",
        "small-zero-c4k.qcow2",
        FixtureKind::qcow2(4 * KIB),
        "a small image with zero clusters",
    )?;
    b.create(
        "small-overlay-c4k.qcow2",
        "cluster_size=4096",
        Some(("small-v3-c4k.qcow2", "qcow2")),
        "300K",
    )?;
    b.qemu_io("small-overlay-c4k.qcow2", &[Io::Data(8 * KIB, 8 * KIB)])?;
    b.add(
        "small-overlay-c4k",
        "small-overlay-c4k.qcow2",
        FixtureKind::backed(4 * KIB, 1),
        "a small overlay",
    )?;
    Ok(b.out)
}

/// Writes a raw disk of `size` bytes for benchmarks: per MiB, about two thirds
/// compressible text, a sixth incompressible bytes and a sixth left as a hole (zeros).
pub fn write_compressible(path: &Path, size: u64, seed: u64) -> io::Result<()> {
    let f = File::create(path)?;
    f.set_len(size)?;
    let mut rng = Rng(seed);
    let mut off = 0;
    while off < size {
        let len = MIB.min(size - off);
        let fill = match rng.next_u64() % 6 {
            0 => None,
            1 => Some(Fill::Random),
            _ => Some(Fill::Text),
        };
        if let Some(fill) = fill {
            f.write_all_at(&content(seed, off, len as usize, fill), off)?;
        }
        off += len;
    }
    f.sync_all()
}

/// Writes `dir/fixtures.tsv`: one line per fixture, `name<TAB>image<TAB>raw`, with paths
/// relative to `dir`, for a harness that serves the directory over HTTP.
pub fn write_tsv(dir: &Path, fixtures: &[Fixture]) -> io::Result<()> {
    let dir = dir.canonicalize()?;
    let rel = |p: &Path| -> io::Result<String> {
        p.strip_prefix(&dir)
            .map(|r| r.to_string_lossy().into_owned())
            .map_err(|_| io::Error::other(format!("{} is outside {}", p.display(), dir.display())))
    };
    let mut f = File::create(dir.join("fixtures.tsv"))?;
    for fx in fixtures {
        writeln!(f, "{}\t{}\t{}", fx.name, rel(&fx.image)?, rel(&fx.raw)?)?;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_sector_unique() {
        let a = content(1, 0, 2048, Fill::Text);
        assert_eq!(a, content(1, 0, 2048, Fill::Text));
        assert_eq!(&a[700..1000], &content(1, 700, 300, Fill::Text)[..]);
        assert_ne!(a[..512], a[512..1024]);
        assert_ne!(
            content(1, 0, 64, Fill::Random),
            content(2, 0, 64, Fill::Random)
        );
    }

    #[test]
    fn spread_stays_inside_the_disk() {
        for (size, cluster) in [(4 * MIB, 512), (36 * MIB, 16 * KIB), (4 * MIB, 2 * MIB)] {
            for (off, len, _) in spread(size, cluster) {
                assert!(off + len <= size, "{off}+{len} > {size}");
            }
        }
    }
}
