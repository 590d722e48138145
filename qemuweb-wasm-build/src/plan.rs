//! The pinned, versioned build plan: what is built, from which verified sources, with
//! which options. The plan is data (serde, JSON); its [`BuildPlan::hash`] names the output.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::patches::{PatchSeries, PatchSource};

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
    /// The version `emcc --version` must report, e.g. `6.0.5`.
    pub version: String,
    /// The emsdk image used in the container environment.
    pub container_image: String,
}

/// The Debian build root of the debootstrap environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRootSpec {
    /// The Debian suite, e.g. `forky` (its `emscripten` package is the plan's Emscripten).
    pub suite: String,
    /// The debootstrap variant, e.g. `minbase`.
    pub variant: String,
    /// The mirror.
    pub mirror: String,
    /// The debootstrap script to use instead of the suite's own, e.g.
    /// `/usr/share/debootstrap/scripts/sid` (Debian 12's debootstrap has no `forky` script;
    /// sid's makes a forky root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
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
    /// Whether this QEMU (with its patches) has the wasm64 host (`--cpu=wasm64`), which
    /// 64-bit guests need.
    pub wasm64: bool,
    /// Our patch series for this source (`patches/<name>/`), applied in order. Each
    /// patch's `Upstream:` header says what upstream did and when to drop it: this is the
    /// one place that records what the plan still needs from a newer QEMU.
    pub patches: PatchSeries,
}

/// Which TCG backend QEMU runs guest code with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcgBackend {
    /// QEMU's TCG interpreter (TCI, `--enable-tcg-interpreter`): the backend every
    /// released QEMU has on WebAssembly.
    Interpreter,
    /// A WebAssembly code generator, a tier over the interpreter (patches `0010`-`0019` of
    /// the series, marked `[tcg=jit]`; configured with `--enable-tcg-interpreter
    /// --enable-tcg-wasm-jit`).
    Jit,
}

impl TcgBackend {
    /// `interpreter` or `jit`.
    pub fn as_str(self) -> &'static str {
        match self {
            TcgBackend::Interpreter => "interpreter",
            TcgBackend::Jit => "jit",
        }
    }
}

impl std::str::FromStr for TcgBackend {
    type Err = Error;

    /// Parses `interpreter` or `jit`.
    ///
    /// ```
    /// assert_eq!("jit".parse::<qemuweb_wasm_build::TcgBackend>().unwrap(), qemuweb_wasm_build::TcgBackend::Jit);
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "interpreter" => Ok(TcgBackend::Interpreter),
            "jit" => Ok(TcgBackend::Jit),
            other => Err(Error::InvalidPlan(format!(
                "unknown TCG backend {other:?} (interpreter, jit)"
            ))),
        }
    }
}

/// The devices one QEMU target is built with: QEMU's Kconfig entries, written to
/// `configs/devices/<target>/qemuweb.mak` and selected with
/// `--with-devices-<arch>=qemuweb`. With `--without-default-devices` only these (and what
/// they `select`) are built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// The QEMU target, e.g. `x86_64-softmmu`.
    pub target: String,
    /// Kconfig lines, e.g. `CONFIG_Q35=y`.
    pub entries: Vec<String>,
}

/// A pinned, versioned plan for building QEMU to WebAssembly.
///
/// ```
/// let plan = qemuweb_wasm_build::BuildPlan::wasm64();
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
    /// QEMU targets, e.g. `x86_64-softmmu`.
    pub targets: Vec<String>,
    /// The TCG backend.
    pub tcg: TcgBackend,
    /// The device set of each target (empty: QEMU's default devices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceConfig>,
    /// QEMU `configure` options (the target list, CPU, TCG backend and device sets are
    /// added from the fields above).
    pub configure_options: Vec<String>,
    /// Compiler flags for the dependencies and QEMU (`-m64` is added for wasm64).
    pub cflags: Vec<String>,
    /// Linker flags for the dependencies and QEMU (`-m64` is added for wasm64).
    pub ldflags: Vec<String>,
    /// The optimisation level of QEMU's final link (meson passes none), e.g. `-O2`.
    pub link_opt_level: String,
    /// Further flags of QEMU's final link only: the wasm64 plan's `-sMEMORY64=2`, which
    /// lowers the 64-bit pointers to a 32-bit memory and table (see [`WasmCpu::Wasm64`]),
    /// and `--profiling-funcs`, which keeps QEMU's function names in the module's name
    /// section (about 4 % of the `.wasm`; no effect on the code), so that a profile of the
    /// page (DevTools, Node's `--cpu-prof`) and a stack trace of a crash name QEMU's
    /// functions instead of `wasm-function[N]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_flags: Vec<String>,
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
    /// 32-bit pointers (QEMU 10.1 and 10.2 without our patches).
    Wasm32,
    /// 64-bit pointers (`--cpu=wasm64`, `-m64`), so that QEMU can run 64-bit guests.
    ///
    /// The wasm64 plan links them into a 32-bit memory (`-sMEMORY64=2` in
    /// [`BuildPlan::link_flags`]: Binaryen's Memory64 and Table64 lowering; the modules'
    /// linear memory is 2 GiB): the browser needs no Memory64, and V8 checks no access
    /// against bounds (its guard regions do that for 32-bit memories, while each Memory64
    /// access carries a compare and a branch).
    Wasm64,
}

/// The name of the series in `patches/` for QEMU 10.2.2.
pub const SERIES_10_2_2: &str = "qemu-10.2.2";

/// The Kconfig device set of the wasm64 build's `x86_64-softmmu`: the machines and devices
/// the default profiles use (`pc` for i386 guests, `q35`, `microvm`; virtio block, SCSI,
/// entropy and network; e1000; the standard VGA; xHCI with the USB keyboard and tablet),
/// and the HPET that `pc` and `q35` have in every QEMU built with its default devices.
///
/// The HPET is not optional for speed. Without it Linux checks the TSC against jiffies,
/// which lag on an emulated CPU, declares the TSC unstable and reads time from the ACPI PM
/// timer, an I/O port: every clock read, `clock_gettime` from user space included, leaves
/// the compiled code for QEMU's device path. A Debian amd64 kernel reached init in 133 s
/// that way, in 71 s with the HPET (`qemuweb-wasm-build`'s Node runner, JIT build), and the
/// disk's full boot in the page reached the root shell in 375 s instead of 637 s.
pub const X86_64_DEVICES: &[&str] = &[
    "CONFIG_I440FX=y",
    "CONFIG_Q35=y",
    "CONFIG_MICROVM=y",
    "CONFIG_HPET=y",
    "CONFIG_VIRTIO_PCI=y",
    "CONFIG_VIRTIO_MMIO=y",
    "CONFIG_VIRTIO_BLK=y",
    "CONFIG_VIRTIO_SCSI=y",
    "CONFIG_VIRTIO_RNG=y",
    "CONFIG_VIRTIO_NET=y",
    "CONFIG_E1000_PCI=y",
    "CONFIG_VGA_PCI=y",
    "CONFIG_USB_XHCI_PCI=y",
    "CONFIG_USB_HID=y",
];

/// The Kconfig device set of the wasm64 build's `aarch64-softmmu`: the `virt` machine and
/// the devices the default profiles use (virtio block, SCSI, entropy, network and GPU over
/// PCI or MMIO; xHCI with the USB keyboard and tablet).
pub const AARCH64_DEVICES: &[&str] = &[
    "CONFIG_ARM_VIRT=y",
    "CONFIG_VIRTIO_PCI=y",
    "CONFIG_VIRTIO_MMIO=y",
    "CONFIG_VIRTIO_BLK=y",
    "CONFIG_VIRTIO_SCSI=y",
    "CONFIG_VIRTIO_RNG=y",
    "CONFIG_VIRTIO_NET=y",
    "CONFIG_VIRTIO_GPU=y",
    "CONFIG_USB_XHCI_PCI=y",
    "CONFIG_USB_HID=y",
];

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn firmware_file(path: &str) -> FirmwareFile {
    FirmwareFile {
        path: path.into(),
        name: path.rsplit('/').next().unwrap_or(path).into(),
    }
}

fn dependency(name: &str, version: &str, source: SourceFile) -> Dependency {
    Dependency {
        name: name.into(),
        version: version.into(),
        source,
    }
}

/// The libraries both plans share (Debian trixie's): zlib, pixman, pcre2, glib.
fn common_dependency(name: &str) -> Dependency {
    let pool = SourceFile::debian_pool;
    match name {
        "zlib" => dependency(
            "zlib",
            "1:1.3.dfsg+really1.3.1-1",
            pool(
                "z/zlib",
                "zlib_1.3.dfsg+really1.3.1.orig.tar.gz",
                "60dd315c07f616887caa029408308a018ace66e3d142726a97db164b3b8f69fb",
            ),
        ),
        "pixman" => dependency(
            "pixman",
            "0.44.0",
            pool(
                "p/pixman",
                "pixman_0.44.0.orig.tar.gz",
                "89a4c1e1e45e0b23dffe708202cb2eaffde0fe3727d7692b2e1739fec78a7dac",
            ),
        ),
        "pcre2" => dependency(
            "pcre2",
            "10.46-1~deb13u2",
            pool(
                "p/pcre2",
                "pcre2_10.46.orig.tar.gz",
                "8d28d7f2c3b970c3a4bf3776bcbb5adfc923183ce74bc8df1ebaad8c1985bd07",
            ),
        ),
        _ => dependency(
            "glib",
            "2.84.4-3~deb13u5",
            pool(
                "g/glib2.0",
                "glib2.0_2.84.4.orig.tar.xz",
                "8a9ea10943c36fc117e253f80c91e477b673525ae45762942858aef57631bb90",
            ),
        ),
    }
}

/// SeaBIOS and QEMU's x86 option ROMs (Debian trixie's packages).
fn x86_firmware() -> Vec<FirmwarePackage> {
    let pool = SourceFile::debian_pool;
    vec![
        FirmwarePackage {
            package: "seabios".into(),
            version: "1.16.3-2".into(),
            source: pool(
                "s/seabios",
                "seabios_1.16.3-2_all.deb",
                "2b590534250b940f43222eeab9a8f57f337a9d9a73fc412a43ab8cd07a7e56f6",
            ),
            files: vec![
                firmware_file("usr/share/seabios/bios-256k.bin"),
                firmware_file("usr/share/seabios/vgabios-stdvga.bin"),
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
                firmware_file("usr/share/qemu/kvmvapic.bin"),
                firmware_file("usr/share/qemu/linuxboot_dma.bin"),
            ],
        },
    ]
}

fn qemu_10_2_2(wasm64: bool) -> QemuSpec {
    QemuSpec {
        version: "10.2.2".into(),
        source: SourceFile::debian_pool(
            "q/qemu",
            "qemu_10.2.2+ds.orig.tar.xz",
            "be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb",
        ),
        wasm64,
        patches: PatchSource::embedded()
            .series(SERIES_10_2_2)
            .expect("the series built into the tool is checked by its unit tests"),
    }
}

const BASE_PACKAGES: &[&str] = &[
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
    "patch",
];

impl Default for BuildPlan {
    /// [`BuildPlan::wasm32`]: the plan `scripts/build-qemu` builds (and CI tests) unless
    /// asked for another (`--plan wasm64`).
    fn default() -> Self {
        BuildPlan::wasm32()
    }
}

impl BuildPlan {
    /// The wasm64 plan: QEMU 10.2.2 (Debian's `+ds` tarball) with our patch series,
    /// `x86_64-softmmu` and `aarch64-softmmu` for the wasm64 host (Memory64, threads),
    /// built by Emscripten 6.0.5 in a Debian forky root, with the libraries of Debian trixie
    /// (libffi 3.5.2 from forky, the first with wasm64 support) and libfdt (the `virt` and
    /// `microvm` machines need it); the TCG interpreter; device sets trimmed to what the
    /// default profiles use ([`X86_64_DEVICES`], [`AARCH64_DEVICES`]); firmware SeaBIOS +
    /// VGA BIOS + QEMU's option ROMs for x86 and the EFI firmware of Debian's
    /// `qemu-efi-aarch64` (`QEMU_EFI.fd`, the AAVMF build) for aarch64.
    ///
    /// ```
    /// let plan = qemuweb_wasm_build::BuildPlan::wasm64();
    /// assert_eq!(plan.validate().unwrap(), qemuweb_wasm_build::WasmCpu::Wasm64);
    /// assert_eq!(plan.binaries(), ["qemu-system-x86_64", "qemu-system-aarch64"]);
    /// ```
    pub fn wasm64() -> Self {
        let pool = SourceFile::debian_pool;
        let mut firmware = x86_firmware();
        // SeaBIOS for the microvm machine (minimal-x86_64).
        firmware[0]
            .files
            .push(firmware_file("usr/share/seabios/bios-microvm.bin"));
        firmware.push(FirmwarePackage {
            package: "qemu-efi-aarch64".into(),
            version: "2025.02-8+deb13u1".into(),
            source: SourceFile {
                file: "qemu-efi-aarch64_2025.02-8+deb13u1_all.deb".into(),
                url: format!(
                    "{DEBIAN_MIRROR}/pool/main/e/edk2/qemu-efi-aarch64_2025.02-8%2bdeb13u1_all.deb"
                ),
                sha256: "a00b2411a79c8aeafd95a7c868ac3cd1aab592f1af9fff965f02d81a625276ed".into(),
            },
            files: vec![firmware_file("usr/share/qemu-efi-aarch64/QEMU_EFI.fd")],
        });
        BuildPlan {
            revision: 2,
            qemu: qemu_10_2_2(true),
            emscripten: EmscriptenSpec {
                version: "6.0.5".into(),
                container_image: "docker.io/emscripten/emsdk:6.0.5".into(),
            },
            build_root: BuildRootSpec {
                suite: "forky".into(),
                variant: "minbase".into(),
                mirror: DEBIAN_MIRROR.into(),
                script: Some("/usr/share/debootstrap/scripts/sid".into()),
                packages: strings(BASE_PACKAGES),
            },
            dependencies: vec![
                common_dependency("zlib"),
                dependency(
                    "libffi",
                    "3.5.2-1",
                    pool(
                        "libf/libffi",
                        "libffi_3.5.2.orig.tar.gz",
                        "dd19253d3007f366319a51d248a40c9e5fcace4498cbea990b566291844e4e30",
                    ),
                ),
                common_dependency("pixman"),
                common_dependency("pcre2"),
                common_dependency("glib"),
                dependency(
                    "libfdt",
                    "1.7.2-2",
                    pool(
                        "d/device-tree-compiler",
                        "device-tree-compiler_1.7.2.orig.tar.xz",
                        "92d8ca769805ae1f176204230438fe52808f4e1c7944053c9eec0e649b237539",
                    ),
                ),
            ],
            firmware,
            targets: strings(&["x86_64-softmmu", "aarch64-softmmu"]),
            tcg: TcgBackend::Interpreter,
            devices: vec![
                DeviceConfig {
                    target: "x86_64-softmmu".into(),
                    entries: strings(X86_64_DEVICES),
                },
                DeviceConfig {
                    target: "aarch64-softmmu".into(),
                    entries: strings(AARCH64_DEVICES),
                },
            ],
            configure_options: strings(&[
                "--static",
                "--disable-tools",
                "--disable-docs",
                "--without-default-features",
                "--without-default-devices",
                "--enable-tcg",
                "--enable-fdt=system",
                "--disable-download",
                "--disable-install-blobs",
            ]),
            cflags: strings(&["-O3", "-pthread", "-DWASM_BIGINT"]),
            ldflags: strings(&["-sWASM_BIGINT", "-sASYNCIFY=1"]),
            link_opt_level: "-O2".into(),
            link_flags: strings(&["-sMEMORY64=2", "--profiling-funcs"]),
        }
    }

    /// The wasm32 plan of the first QEMU engine (no longer built by `scripts/test`: i386
    /// guests run on the wasm64 `qemu-system-x86_64` or on v86): QEMU 10.2.2
    /// `i386-softmmu` for the wasm32 host, Emscripten 3.1.69 in a Debian trixie root, the
    /// libraries of Debian trixie, QEMU's default device set, SeaBIOS and the x86 option
    /// ROMs. Kept for browsers without Memory64.
    ///
    /// ```
    /// let plan = qemuweb_wasm_build::BuildPlan::wasm32();
    /// assert_eq!(plan.validate().unwrap(), qemuweb_wasm_build::WasmCpu::Wasm32);
    /// assert_eq!(plan.binaries(), ["qemu-system-i386"]);
    /// ```
    pub fn wasm32() -> Self {
        BuildPlan {
            revision: 2,
            qemu: qemu_10_2_2(false),
            emscripten: EmscriptenSpec {
                version: "3.1.69".into(),
                container_image: "docker.io/emscripten/emsdk:3.1.69".into(),
            },
            build_root: BuildRootSpec {
                suite: "trixie".into(),
                variant: "minbase".into(),
                mirror: DEBIAN_MIRROR.into(),
                script: None,
                packages: strings(BASE_PACKAGES),
            },
            dependencies: vec![
                common_dependency("zlib"),
                dependency(
                    "libffi",
                    "3.4.8-2",
                    SourceFile::debian_pool(
                        "libf/libffi",
                        "libffi_3.4.8.orig.tar.gz",
                        "cbb7f0b3b095dc506387ec1e35b891bfb4891d05b90a495bc69a10f2293f80ff",
                    ),
                ),
                common_dependency("pixman"),
                common_dependency("pcre2"),
                common_dependency("glib"),
            ],
            firmware: x86_firmware(),
            targets: strings(&["i386-softmmu"]),
            tcg: TcgBackend::Interpreter,
            devices: Vec::new(),
            configure_options: strings(&[
                "--static",
                "--disable-tools",
                "--disable-docs",
                "--without-default-features",
                "--enable-tcg",
                "--disable-download",
                "--disable-install-blobs",
            ]),
            cflags: strings(&["-O3", "-pthread", "-DWASM_BIGINT"]),
            ldflags: strings(&["-sWASM_BIGINT", "-sASYNCIFY=1"]),
            link_opt_level: "-O2".into(),
            link_flags: Vec::new(),
        }
    }

    /// The plan with other targets (device sets of targets no longer built are dropped).
    ///
    /// ```
    /// let plan = qemuweb_wasm_build::BuildPlan::wasm64().with_targets(&["x86_64-softmmu"]);
    /// assert_eq!(plan.targets, ["x86_64-softmmu"]);
    /// assert_eq!(plan.devices.len(), 1);
    /// ```
    pub fn with_targets<S: AsRef<str>>(mut self, targets: &[S]) -> Self {
        self.targets = targets.iter().map(|t| t.as_ref().to_string()).collect();
        let kept = self.targets.clone();
        self.devices.retain(|d| kept.contains(&d.target));
        self
    }

    /// The plan with another TCG backend.
    ///
    /// ```
    /// use qemuweb_wasm_build::{BuildPlan, ErrorKind, TcgBackend};
    /// let plan = BuildPlan::wasm64().with_tcg(TcgBackend::Jit);
    /// // The series has the [tcg=jit] patches the JIT needs.
    /// plan.validate().unwrap();
    /// // Without them it is an invalid plan.
    /// let mut bare = plan.clone();
    /// bare.qemu.patches.patches.retain(|p| p.when.is_none());
    /// assert_eq!(bare.validate().unwrap_err().kind(), ErrorKind::InvalidPlan);
    /// ```
    pub fn with_tcg(mut self, tcg: TcgBackend) -> Self {
        self.tcg = tcg;
        self
    }

    /// The device set of `target`, if the plan trims it.
    pub fn devices_of(&self, target: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.target == target)
    }

    /// Reads a plan from JSON.
    ///
    /// ```
    /// let plan = qemuweb_wasm_build::BuildPlan::wasm64();
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
    /// let a = qemuweb_wasm_build::BuildPlan::wasm64();
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
    /// by this QEMU for WebAssembly (64-bit guests need the wasm64 host), device sets must
    /// belong to built targets (and cover all of them with `--without-default-devices`),
    /// the JIT backend needs the series' `[tcg=jit]` patches, and what the plan derives
    /// (CPU, targets, TCG backend, device sets) must not also be in `configure_options`.
    /// Returns the memory model the build uses: wasm64 when the plan's QEMU is built for
    /// the wasm64 host, else wasm32.
    ///
    /// ```
    /// use qemuweb_wasm_build::{BuildPlan, ErrorKind, WasmCpu};
    /// assert_eq!(BuildPlan::wasm32().validate().unwrap(), WasmCpu::Wasm32);
    /// let err = BuildPlan::wasm32().with_targets(&["x86_64-softmmu"]).validate().unwrap_err();
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
        if let Some(f) = self.link_flags.iter().find(|f| !f.starts_with('-')) {
            return Err(Error::InvalidPlan(format!("link flag {f:?} is not a flag")));
        }
        for derived in [
            "--cpu",
            "--target-list",
            "--enable-tcg-interpreter",
            "--disable-tcg-interpreter",
            "--enable-tcg-wasm-jit",
            "--with-devices-",
        ] {
            if let Some(o) = self
                .configure_options
                .iter()
                .find(|o| o.starts_with(derived))
            {
                return Err(Error::InvalidPlan(format!(
                    "configure option {o:?} comes from the plan's fields (wasm64, targets, \
                     tcg, devices); remove it from configure_options"
                )));
            }
        }
        let no_defaults = self
            .configure_options
            .iter()
            .any(|o| o == "--without-default-devices");
        for d in &self.devices {
            if !self.targets.contains(&d.target) {
                return Err(Error::InvalidPlan(format!(
                    "a device set for {}, which the plan does not build",
                    d.target
                )));
            }
            if let Some(bad) = d.entries.iter().find(|e| !valid_kconfig_line(e)) {
                return Err(Error::InvalidPlan(format!(
                    "device set of {}: {bad:?} is not a CONFIG_NAME=y or =n line",
                    d.target
                )));
            }
        }
        if no_defaults {
            if let Some(t) = self.targets.iter().find(|t| self.devices_of(t).is_none()) {
                return Err(Error::InvalidPlan(format!(
                    "--without-default-devices and no device set for {t}: it would have no \
                     machine"
                )));
            }
        }
        if self.tcg == TcgBackend::Jit
            && self
                .qemu
                .patches
                .applicable(TcgBackend::Jit)
                .all(|p| p.when.is_none())
        {
            return Err(Error::InvalidPlan(format!(
                "the jit TCG backend needs the series' [tcg=jit] patches (0010-0019), and \
                 series {} has none",
                self.qemu.patches.name
            )));
        }
        let cpu = if self.qemu.wasm64 {
            WasmCpu::Wasm64
        } else {
            WasmCpu::Wasm32
        };
        for target in &self.targets {
            let bits = target_bits(target).ok_or_else(|| Error::UnknownTarget {
                target: target.clone(),
                known: KNOWN_TARGETS
                    .iter()
                    .map(|t| t.0)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            if bits == 64 && !self.qemu.wasm64 {
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
        }
        Ok(cpu)
    }

    /// The `qemu-system-*` program names of the targets, e.g. `qemu-system-x86_64`.
    ///
    /// ```
    /// assert_eq!(qemuweb_wasm_build::BuildPlan::wasm32().binaries(), ["qemu-system-i386"]);
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

/// Whether `line` is a Kconfig assignment QEMU's device files take: `CONFIG_NAME=y|n`.
fn valid_kconfig_line(line: &str) -> bool {
    let Some((name, value)) = line.split_once('=') else {
        return false;
    };
    name.strip_prefix("CONFIG_").is_some_and(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    }) && matches!(value, "y" | "n")
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
    fn the_default_plan_is_the_wasm32_plan_and_both_plans_are_valid() {
        assert_eq!(BuildPlan::default(), BuildPlan::wasm32());
        assert_eq!(BuildPlan::wasm64().validate().unwrap(), WasmCpu::Wasm64);
        assert_eq!(BuildPlan::wasm32().validate().unwrap(), WasmCpu::Wasm32);
        let plan = BuildPlan::wasm64();
        assert_eq!(plan.emscripten.version, "6.0.5");
        assert_eq!(plan.build_root.suite, "forky");
        assert_eq!(plan.tcg, TcgBackend::Interpreter);
        assert_eq!(plan.dependency("libffi").unwrap().version, "3.5.2-1");
        assert!(plan.dependency("libfdt").is_some());
        assert_eq!(plan.qemu.patches.name, SERIES_10_2_2);
    }

    #[test]
    fn sixty_four_bit_targets_are_refused_without_wasm64() {
        for t in ["x86_64-softmmu", "aarch64-softmmu"] {
            let err = BuildPlan::wasm32()
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
    fn a_wasm64_plan_builds_any_known_target_for_wasm64() {
        let plan = BuildPlan::wasm64().with_targets(&["x86_64-softmmu"]);
        assert_eq!(plan.validate().unwrap(), WasmCpu::Wasm64);
        assert_eq!(plan.binaries(), ["qemu-system-x86_64"]);
        assert!(plan.devices_of("aarch64-softmmu").is_none());
    }

    #[test]
    fn device_sets_must_match_the_targets() {
        // A target without a device set under --without-default-devices has no machine.
        let mut plan = BuildPlan::wasm64();
        plan.targets.push("riscv64-softmmu".into());
        let err = plan.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPlan);
        assert!(err.to_string().contains("riscv64-softmmu"), "{err}");
        // A device set for a target that is not built.
        let mut plan = BuildPlan::wasm64();
        plan.targets.retain(|t| t != "aarch64-softmmu");
        assert_eq!(plan.validate().unwrap_err().kind(), ErrorKind::InvalidPlan);
        // A line that is not Kconfig.
        let mut plan = BuildPlan::wasm64();
        plan.devices[0]
            .entries
            .push("CONFIG_Q35=maybe; rm -rf /".into());
        assert_eq!(plan.validate().unwrap_err().kind(), ErrorKind::InvalidPlan);
        assert!(valid_kconfig_line("CONFIG_VIRTIO_NET=y"));
        assert!(!valid_kconfig_line("CONFIG_=y") && !valid_kconfig_line("Q35=y"));
    }

    #[test]
    fn derived_configure_options_are_refused() {
        for opt in [
            "--cpu=wasm64",
            "--target-list=x",
            "--enable-tcg-interpreter",
            "--with-devices-x86_64=a",
        ] {
            let mut plan = BuildPlan::wasm64();
            plan.configure_options.push(opt.into());
            let err = plan.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidPlan, "{opt}");
        }
    }

    #[test]
    fn the_jit_backend_needs_jit_patches() {
        // The embedded series has them.
        BuildPlan::wasm64()
            .with_tcg(TcgBackend::Jit)
            .validate()
            .unwrap();
        let mut plan = BuildPlan::wasm64().with_tcg(TcgBackend::Jit);
        plan.qemu.patches.patches.retain(|p| p.when.is_none());
        let err = plan.validate().unwrap_err();
        assert!(err.to_string().contains("[tcg=jit]"), "{err}");
        plan.qemu.patches.patches.push(crate::patches::PatchInfo {
            file: "0010-tcg-wasm.patch".into(),
            subject: "s".into(),
            sha256: "0".repeat(64),
            when: Some(crate::patches::PatchCondition::Tcg(TcgBackend::Jit)),
        });
        plan.validate().unwrap();
    }

    #[test]
    fn unknown_targets_and_bad_plans_are_typed_errors() {
        let err = BuildPlan::wasm32()
            .with_targets(&["m68k-softmmu"])
            .validate()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownTarget);
        let none: [&str; 0] = [];
        let err = BuildPlan::wasm32()
            .with_targets(&none)
            .validate()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPlan);
        let mut plan = BuildPlan::wasm64();
        plan.dependencies[0].source.sha256 = "abc".into();
        assert_eq!(plan.validate().unwrap_err().kind(), ErrorKind::InvalidPlan);
        let mut plan = BuildPlan::wasm64();
        plan.firmware[0].source.file = "../x.deb".into();
        assert_eq!(plan.validate().unwrap_err().kind(), ErrorKind::InvalidPlan);
        let err = BuildPlan::from_json("{\"revision\": 1}").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Json);
    }

    #[test]
    fn the_hash_follows_every_field_and_every_patch_byte() {
        let base = BuildPlan::wasm64();
        let mut changed = base.clone();
        changed.dependencies[2].source.sha256 = "0".repeat(64);
        assert_ne!(base.hash(), changed.hash());
        assert_eq!(base.hash(), BuildPlan::wasm64().hash());
        // A patch's bytes (its checksum) and the series file's bytes are in the hash.
        let mut changed = base.clone();
        changed.qemu.patches.patches[0].sha256 = "1".repeat(64);
        assert_ne!(base.hash(), changed.hash());
        let mut changed = base.clone();
        changed.qemu.patches.series_sha256 = "2".repeat(64);
        assert_ne!(base.hash(), changed.hash());
        let mut changed = base.clone();
        changed.tcg = TcgBackend::Jit;
        assert_ne!(base.hash(), changed.hash());
    }

    #[test]
    fn every_pinned_url_is_in_debians_pool_and_names_its_file() {
        for plan in [BuildPlan::wasm64(), BuildPlan::wasm32()] {
            for f in plan.source_files() {
                assert!(
                    f.url.starts_with("http://deb.debian.org/debian/pool/main/"),
                    "{}",
                    f.url
                );
                let encoded = f.file.replace('+', "%2b");
                assert!(
                    f.url.ends_with(&format!("/{}", f.file))
                        || f.url.ends_with(&format!("/{encoded}")),
                    "{}",
                    f.url
                );
            }
        }
    }
}
