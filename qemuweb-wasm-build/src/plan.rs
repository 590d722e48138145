//! The pinned, versioned build plan: what is built, from which verified sources, with
//! which options. The plan is data (serde, JSON); its [`BuildPlan::hash`] names the output.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Debian's archive, whose pool serves every pinned file of the default plan.
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// One file fetched by URL and verified by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// The file name it is stored under (the last part of the URL).
    pub file: String,
    /// Where it is downloaded from.
    pub url: String,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

impl SourceFile {
    /// A file in Debian's pool, e.g. `pool("q/qemu", "qemu_10.2.2+ds.orig.tar.xz", ...)`.
    ///
    /// ```
    /// let f = qemuweb_wasm_build::SourceFile::debian_pool("z/zlib", "zlib_1.3.orig.tar.gz", "00");
    /// assert_eq!(f.url, "http://deb.debian.org/debian/pool/main/z/zlib/zlib_1.3.orig.tar.gz");
    /// ```
    pub fn debian_pool(dir: &str, file: &str, sha256: &str) -> Self {
        SourceFile {
            file: file.to_string(),
            url: format!("{DEBIAN_MIRROR}/pool/main/{dir}/{file}"),
            sha256: sha256.to_string(),
        }
    }
}

/// A library QEMU needs, built with Emscripten before QEMU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The library, one of `zlib`, `libffi`, `pixman`, `pcre2`, `glib`.
    pub name: String,
    /// Its version (the Debian source package version the tarball comes from).
    pub version: String,
    /// Its source tarball.
    pub source: SourceFile,
}

/// A firmware file taken out of a Debian binary package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareFile {
    /// Its path inside the package, e.g. `usr/share/seabios/bios-256k.bin`.
    pub path: String,
    /// Its name in the output directory, e.g. `bios-256k.bin`.
    pub name: String,
}

/// A Debian binary package the firmware comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwarePackage {
    /// The package, e.g. `seabios`.
    pub package: String,
    /// Its version.
    pub version: String,
    /// The `.deb` file.
    pub source: SourceFile,
    /// The files taken from it.
    pub files: Vec<FirmwareFile>,
}

/// The Emscripten the plan was tested with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmscriptenSpec {
    /// The version `emcc --version` must report, e.g. `3.1.69`.
    pub version: String,
    /// The emsdk image used in the container environment.
    pub container_image: String,
}

/// The Debian build root of the debootstrap environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRootSpec {
    /// The Debian suite, e.g. `trixie` (its `emscripten` package is the plan's Emscripten).
    pub suite: String,
    /// The debootstrap variant, e.g. `minbase`.
    pub variant: String,
    /// The mirror.
    pub mirror: String,
    /// The packages installed into it.
    pub packages: Vec<String>,
}

/// The QEMU source and what it can do on WebAssembly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuSpec {
    /// The upstream version, e.g. `10.2.2`.
    pub version: String,
    /// The source tarball.
    pub source: SourceFile,
    /// Whether this QEMU has the wasm64 host (`--cpu=wasm64`), which 64-bit guests need.
    pub wasm64: bool,
}

/// A pinned, versioned plan for building QEMU to WebAssembly.
///
/// ```
/// let plan = qemuweb_wasm_build::BuildPlan::default();
/// assert_eq!(plan.qemu.version, "10.2.2");
/// assert_eq!(plan.link_opt_level, "-O2");
/// let json = serde_json::to_string(&plan).unwrap();
/// let back: qemuweb_wasm_build::BuildPlan = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.hash(), plan.hash());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// The plan's revision; bumped when the recipe changes in a way the data does not show.
    pub revision: u32,
    /// QEMU.
    pub qemu: QemuSpec,
    /// The Emscripten the recipe was tested with.
    pub emscripten: EmscriptenSpec,
    /// The debootstrap build root.
    pub build_root: BuildRootSpec,
    /// The libraries, in build order.
    pub dependencies: Vec<Dependency>,
    /// Firmware packages.
    pub firmware: Vec<FirmwarePackage>,
    /// QEMU targets, e.g. `i386-softmmu`.
    pub targets: Vec<String>,
    /// QEMU `configure` options (the target list and CPU are added from [`Self::targets`]).
    pub configure_options: Vec<String>,
    /// Compiler flags for the dependencies and QEMU.
    pub cflags: Vec<String>,
    /// Linker flags for the dependencies and QEMU.
    pub ldflags: Vec<String>,
    /// The optimisation level of QEMU's final link (meson passes none), e.g. `-O2`.
    pub link_opt_level: String,
}

/// Guest word size of each QEMU target this tool knows.
const KNOWN_TARGETS: &[(&str, u32)] = &[
    ("i386-softmmu", 32),
    ("x86_64-softmmu", 64),
    ("arm-softmmu", 32),
    ("aarch64-softmmu", 64),
    ("riscv32-softmmu", 32),
    ("riscv64-softmmu", 64),
];

/// Which WebAssembly memory model a build uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WasmCpu {
    /// 32-bit pointers (QEMU 10.1 and 10.2).
    Wasm32,
    /// 64-bit pointers (`--cpu=wasm64`, `-sMEMORY64`).
    Wasm64,
}

impl Default for BuildPlan {
    /// The plan measured on Debian: QEMU 10.2.2 (Debian `+ds` tarball) and the libraries
    /// of Debian trixie, built by trixie's Emscripten 3.1.69, target `i386-softmmu`.
    fn default() -> Self {
        let pool = SourceFile::debian_pool;
        let dep = |name: &str, version: &str, source: SourceFile| Dependency {
            name: name.into(),
            version: version.into(),
            source,
        };
        let fw = |path: &str| FirmwareFile {
            path: path.into(),
            name: path.rsplit('/').next().unwrap_or(path).into(),
        };
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        BuildPlan {
            revision: 1,
            qemu: QemuSpec {
                version: "10.2.2".into(),
                source: pool(
                    "q/qemu",
                    "qemu_10.2.2+ds.orig.tar.xz",
                    "be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb",
                ),
                wasm64: false,
            },
            emscripten: EmscriptenSpec {
                version: "3.1.69".into(),
                container_image: "docker.io/emscripten/emsdk:3.1.69".into(),
            },
            build_root: BuildRootSpec {
                suite: "trixie".into(),
                variant: "minbase".into(),
                mirror: DEBIAN_MIRROR.into(),
                packages: strings(&[
                    "emscripten",
                    "meson",
                    "ninja-build",
                    "pkgconf",
                    "python3",
                    "python3-venv",
                    "build-essential",
                    "libglib2.0-dev-bin",
                    "dpkg-dev",
                    "autoconf",
                    "automake",
                    "libtool",
                    "libltdl-dev",
                    "nodejs",
                    "xz-utils",
                    "bzip2",
                    "ca-certificates",
                    "file",
                    "python3-pycotap",
                    "texinfo",
                    "device-tree-compiler",
                ]),
            },
            dependencies: vec![
                dep(
                    "zlib",
                    "1:1.3.dfsg+really1.3.1-1",
                    pool(
                        "z/zlib",
                        "zlib_1.3.dfsg+really1.3.1.orig.tar.gz",
                        "60dd315c07f616887caa029408308a018ace66e3d142726a97db164b3b8f69fb",
                    ),
                ),
                dep(
                    "libffi",
                    "3.4.8-2",
                    pool(
                        "libf/libffi",
                        "libffi_3.4.8.orig.tar.gz",
                        "cbb7f0b3b095dc506387ec1e35b891bfb4891d05b90a495bc69a10f2293f80ff",
                    ),
                ),
                dep(
                    "pixman",
                    "0.44.0",
                    pool(
                        "p/pixman",
                        "pixman_0.44.0.orig.tar.gz",
                        "89a4c1e1e45e0b23dffe708202cb2eaffde0fe3727d7692b2e1739fec78a7dac",
                    ),
                ),
                dep(
                    "pcre2",
                    "10.46-1~deb13u2",
                    pool(
                        "p/pcre2",
                        "pcre2_10.46.orig.tar.gz",
                        "8d28d7f2c3b970c3a4bf3776bcbb5adfc923183ce74bc8df1ebaad8c1985bd07",
                    ),
                ),
                dep(
                    "glib",
                    "2.84.4-3~deb13u5",
                    pool(
                        "g/glib2.0",
                        "glib2.0_2.84.4.orig.tar.xz",
                        "8a9ea10943c36fc117e253f80c91e477b673525ae45762942858aef57631bb90",
                    ),
                ),
            ],
            firmware: vec![
                FirmwarePackage {
                    package: "seabios".into(),
                    version: "1.16.3-2".into(),
                    source: pool(
                        "s/seabios",
                        "seabios_1.16.3-2_all.deb",
                        "2b590534250b940f43222eeab9a8f57f337a9d9a73fc412a43ab8cd07a7e56f6",
                    ),
                    files: vec![
                        fw("usr/share/seabios/bios-256k.bin"),
                        fw("usr/share/seabios/vgabios-stdvga.bin"),
                    ],
                },
                FirmwarePackage {
                    package: "qemu-system-data".into(),
                    version: "1:10.0.13+ds-0+deb13u1".into(),
                    source: pool(
                        "q/qemu",
                        "qemu-system-data_10.0.13+ds-0+deb13u1_all.deb",
                        "a0e03c526cc09d4c2ab20aa19a8c12e916cdc49a170acb16a6563c28f70eafd3",
                    ),
                    files: vec![
                        fw("usr/share/qemu/kvmvapic.bin"),
                        fw("usr/share/qemu/linuxboot_dma.bin"),
                    ],
                },
            ],
            targets: strings(&["i386-softmmu"]),
            configure_options: strings(&[
                "--static",
                "--disable-tools",
                "--disable-docs",
                "--without-default-features",
                "--enable-tcg",
                "--enable-tcg-interpreter",
                "--disable-download",
                "--disable-install-blobs",
            ]),
            cflags: strings(&["-O3", "-pthread", "-DWASM_BIGINT"]),
            ldflags: strings(&["-sWASM_BIGINT", "-sASYNCIFY=1"]),
            link_opt_level: "-O2".into(),
        }
    }
}

impl BuildPlan {
    /// The plan with other targets.
    ///
    /// ```
    /// let plan = qemuweb_wasm_build::BuildPlan::default().with_targets(&["i386-softmmu"]);
    /// assert_eq!(plan.targets, ["i386-softmmu"]);
    /// ```
    pub fn with_targets<S: AsRef<str>>(mut self, targets: &[S]) -> Self {
        self.targets = targets.iter().map(|t| t.as_ref().to_string()).collect();
        self
    }

    /// Reads a plan from JSON.
    ///
    /// ```
    /// let plan = qemuweb_wasm_build::BuildPlan::default();
    /// let json = plan.to_json();
    /// assert_eq!(qemuweb_wasm_build::BuildPlan::from_json(&json).unwrap(), plan);
    /// ```
    pub fn from_json(json: &str) -> Result<Self> {
        Ok(serde_json::from_str(json)?)
    }

    /// The plan as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serialises")
    }

    /// The plan's hash (SHA-256 of its JSON, hex): the cache key of its output.
    ///
    /// ```
    /// let a = qemuweb_wasm_build::BuildPlan::default();
    /// let mut b = a.clone();
    /// b.link_opt_level = "-O3".into();
    /// assert_ne!(a.hash(), b.hash());
    /// assert_eq!(a.hash().len(), 64);
    /// ```
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("a plan always serialises");
        hex(&Sha256::digest(&json))
    }

    /// Checks the plan and its targets up front: every target must be known and buildable
    /// by this QEMU for WebAssembly. 64-bit guests need the wasm64 host, which QEMU 10.x
    /// lacks.
    ///
    /// ```
    /// use qemuweb_wasm_build::{BuildPlan, ErrorKind, WasmCpu};
    /// assert_eq!(BuildPlan::default().validate().unwrap(), WasmCpu::Wasm32);
    /// let err = BuildPlan::default().with_targets(&["x86_64-softmmu"]).validate().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::TargetRefused);
    /// ```
    pub fn validate(&self) -> Result<WasmCpu> {
        if self.targets.is_empty() {
            return Err(Error::InvalidPlan("no targets".into()));
        }
        let files = self
            .dependencies
            .iter()
            .map(|d| &d.source)
            .chain(self.firmware.iter().map(|f| &f.source))
            .chain([&self.qemu.source]);
        for f in files {
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::InvalidPlan(format!(
                    "{}: sha256 {:?} is not 64 hex digits",
                    f.file, f.sha256
                )));
            }
            if f.file.contains('/') || f.file.starts_with('.') || f.file.is_empty() {
                return Err(Error::InvalidPlan(format!("bad file name {:?}", f.file)));
            }
        }
        if !self.link_opt_level.starts_with("-O") {
            return Err(Error::InvalidPlan(format!(
                "link_opt_level {:?} is not an -O level",
                self.link_opt_level
            )));
        }
        let mut cpu = WasmCpu::Wasm32;
        for target in &self.targets {
            let bits = target_bits(target).ok_or_else(|| Error::UnknownTarget {
                target: target.clone(),
                known: KNOWN_TARGETS
                    .iter()
                    .map(|t| t.0)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            if bits == 64 {
                if !self.qemu.wasm64 {
                    return Err(Error::TargetRefused {
                        target: target.clone(),
                        reason: format!(
                            "QEMU {} builds only the wasm32 host, where meson enables no \
                             accelerator for a 64-bit guest (host long bits 32 < target long \
                             bits 64: \"No accelerator available\"); 64-bit guests need QEMU's \
                             wasm64 host (--cpu=wasm64), which this QEMU lacks",
                            self.qemu.version
                        ),
                    });
                }
                cpu = WasmCpu::Wasm64;
            }
        }
        Ok(cpu)
    }

    /// The `qemu-system-*` program names of the targets, e.g. `qemu-system-i386`.
    ///
    /// ```
    /// assert_eq!(qemuweb_wasm_build::BuildPlan::default().binaries(), ["qemu-system-i386"]);
    /// ```
    pub fn binaries(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| format!("qemu-system-{}", t.trim_end_matches("-softmmu")))
            .collect()
    }

    /// Every file the plan downloads: QEMU, the libraries and the firmware packages.
    pub fn source_files(&self) -> Vec<SourceFile> {
        let mut files = vec![self.qemu.source.clone()];
        files.extend(self.dependencies.iter().map(|d| d.source.clone()));
        files.extend(self.firmware.iter().map(|f| f.source.clone()));
        files
    }

    /// The dependency called `name`.
    pub fn dependency(&self, name: &str) -> Option<&Dependency> {
        self.dependencies.iter().find(|d| d.name == name)
    }
}

/// The guest word size of a known QEMU target.
///
/// ```
/// assert_eq!(qemuweb_wasm_build::plan::target_bits("aarch64-softmmu"), Some(64));
/// assert_eq!(qemuweb_wasm_build::plan::target_bits("m68k-softmmu"), None);
/// ```
pub fn target_bits(target: &str) -> Option<u32> {
    KNOWN_TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, bits)| *bits)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn default_plan_is_valid_and_wasm32() {
        assert_eq!(BuildPlan::default().validate().unwrap(), WasmCpu::Wasm32);
    }

    #[test]
    fn sixty_four_bit_targets_are_refused_without_wasm64() {
        for t in ["x86_64-softmmu", "aarch64-softmmu"] {
            let err = BuildPlan::default()
                .with_targets(&["i386-softmmu", t])
                .validate()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TargetRefused, "{t}");
            let msg = err.to_string();
            assert!(
                msg.contains(t) && msg.contains("10.2.2") && msg.contains("wasm64"),
                "{msg}"
            );
        }
    }

    #[test]
    fn sixty_four_bit_targets_use_wasm64_when_the_qemu_has_it() {
        let mut plan = BuildPlan::default().with_targets(&["x86_64-softmmu", "aarch64-softmmu"]);
        plan.qemu.wasm64 = true;
        assert_eq!(plan.validate().unwrap(), WasmCpu::Wasm64);
        assert_eq!(
            plan.binaries(),
            ["qemu-system-x86_64", "qemu-system-aarch64"]
        );
    }

    #[test]
    fn unknown_targets_and_bad_plans_are_typed_errors() {
        let err = BuildPlan::default()
            .with_targets(&["m68k-softmmu"])
            .validate()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownTarget);
        let none: [&str; 0] = [];
        let err = BuildPlan::default()
            .with_targets(&none)
            .validate()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPlan);
        let mut plan = BuildPlan::default();
        plan.dependencies[0].source.sha256 = "abc".into();
        assert_eq!(plan.validate().unwrap_err().kind(), ErrorKind::InvalidPlan);
        let mut plan = BuildPlan::default();
        plan.firmware[0].source.file = "../x.deb".into();
        assert_eq!(plan.validate().unwrap_err().kind(), ErrorKind::InvalidPlan);
        let err = BuildPlan::from_json("{\"revision\": 1}").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Json);
    }

    #[test]
    fn the_hash_follows_every_field() {
        let base = BuildPlan::default();
        let mut changed = base.clone();
        changed.dependencies[2].source.sha256 = "0".repeat(64);
        assert_ne!(base.hash(), changed.hash());
        assert_eq!(base.hash(), BuildPlan::default().hash());
    }

    #[test]
    fn every_pinned_url_is_in_debians_pool_and_names_its_file() {
        for f in BuildPlan::default().source_files() {
            assert!(
                f.url.starts_with("http://deb.debian.org/debian/pool/main/"),
                "{}",
                f.url
            );
            assert!(f.url.ends_with(&format!("/{}", f.file)), "{}", f.url);
        }
    }
}
