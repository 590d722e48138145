//! The build as a list of [`Step`]s: the shell scripts a plan produces (dependencies,
//! the patched QEMU source, QEMU configure, build and `-O2` relink, firmware), each run in
//! the build environment.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::patches::PatchSeries;
use crate::plan::{BuildPlan, SourceFile, TcgBackend, WasmCpu};

/// Where a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// On the machine running this tool (e.g. `debootstrap` itself).
    Host,
    /// Inside the build environment (the chroot, the container, or the host for `host`).
    Env,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run a bash script.
    Script {
        /// Where.
        place: Place,
        /// The script, complete with `set -euxo pipefail`.
        script: String,
    },
    /// Download these files into the download cache, verify their SHA-256 and copy them
    /// into the work directory's `src/`.
    Fetch(Vec<SourceFile>),
    /// Write the patch files of this series, from the build's [`PatchSource`], into the
    /// work directory's `patches/` (each checked against the SHA-256 the plan records).
    Patches(PatchSeries),
}

/// One cached unit of the build.
///
/// ```
/// use qemuweb_wasm_build::{Place, Step};
/// let step = Step::script("hello", Place::Env, "echo hello");
/// assert!(step.fingerprint().contains("echo hello"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Its name, used for its stamp, its log file and in errors.
    pub name: String,
    /// What it does.
    pub action: Action,
}

impl Step {
    /// A script step.
    pub fn script(name: &str, place: Place, script: &str) -> Self {
        Step {
            name: name.to_string(),
            action: Action::Script {
                place,
                script: script.to_string(),
            },
        }
    }

    /// Everything that determines the step's result, as text: what its cache key hashes.
    pub fn fingerprint(&self) -> String {
        match &self.action {
            Action::Script { place, script } => format!("{}\n{place:?}\n{script}", self.name),
            Action::Fetch(files) => {
                let mut s = format!("{}\nfetch\n", self.name);
                for f in files {
                    let _ = writeln!(s, "{} {}", f.file, f.sha256);
                }
                s
            }
            Action::Patches(series) => {
                let mut s = format!(
                    "{}\npatches {} {}\n",
                    self.name, series.name, series.series_sha256
                );
                for p in &series.patches {
                    let _ = writeln!(s, "{} {}", p.file, p.sha256);
                }
                s
            }
        }
    }
}

/// Quotes `s` for bash (single quotes).
///
/// ```
/// assert_eq!(qemuweb_wasm_build::steps::sh_quote("it's"), r"'it'\''s'");
/// ```
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn sh_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The compiler and linker flags of a build, with `-m64` added for wasm64 (Emscripten 6
/// builds wasm64 with Memory64 from `-m64`; `-sMEMORY64` is deprecated).
fn flags(plan: &BuildPlan, cpu: WasmCpu) -> (Vec<String>, Vec<String>) {
    let mut cflags = plan.cflags.clone();
    let mut ldflags = plan.ldflags.clone();
    if cpu == WasmCpu::Wasm64 {
        cflags.insert(1.min(cflags.len()), "-m64".into());
        ldflags.insert(0, "-m64".into());
    }
    (cflags, ldflags)
}

/// Strings as the inside of a meson array: `'-O3', '-pthread'`.
fn meson_list(v: &[String]) -> String {
    v.iter()
        .map(|f| format!("'{}'", f.replace('\'', "")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The meson cross file for Emscripten, with the dependencies installed under `prefix`.
///
/// It names no C++ compiler: nothing built here is C++, and meson's C++ sanity check with
/// `em++` makes Emscripten build its C++ runtime (libc++, libc++abi) for minutes.
///
/// ```
/// let plan = qemuweb_wasm_build::BuildPlan::wasm64();
/// let cross = qemuweb_wasm_build::steps::meson_cross_file(&plan, qemuweb_wasm_build::WasmCpu::Wasm32, "/w/prefix");
/// assert!(cross.contains("system = 'emscripten'"));
/// assert!(cross.contains("cpu_family = 'wasm32'"));
/// ```
pub fn meson_cross_file(plan: &BuildPlan, cpu: WasmCpu, prefix: &str) -> String {
    let (cflags, ldflags) = flags(plan, cpu);
    let list = meson_list;
    let mut link = ldflags.clone();
    link.push(format!("-L{prefix}/lib"));
    let cpu_name = match cpu {
        WasmCpu::Wasm32 => "wasm32",
        WasmCpu::Wasm64 => "wasm64",
    };
    format!(
        "[binaries]\n\
         c = 'emcc'\n\
         ar = 'emar'\n\
         ranlib = 'emranlib'\n\
         pkg-config = ['pkg-config', '--static']\n\
         \n\
         [host_machine]\n\
         system = 'emscripten'\n\
         cpu_family = '{cpu_name}'\n\
         cpu = '{cpu_name}'\n\
         endian = 'little'\n\
         \n\
         [built-in options]\n\
         c_args = [{c}]\n\
         c_link_args = [{l}]\n\
         \n\
         [properties]\n\
         pkg_config_libdir = '{prefix}/lib/pkgconfig'\n",
        c = list(&cflags),
        l = list(&link),
    )
}

/// The name of the device configuration files the plan writes
/// (`configs/devices/<target>/qemuweb.mak`).
pub const DEVICES_CONFIG: &str = "qemuweb";

/// QEMU's `configure` arguments for the plan (after `emconfigure .../configure`): its
/// options, then the TCG backend, the CPU, each device set and the target list.
///
/// ```
/// let plan = qemuweb_wasm_build::BuildPlan::wasm64();
/// let args = qemuweb_wasm_build::steps::configure_args(&plan, qemuweb_wasm_build::WasmCpu::Wasm64);
/// assert!(args.contains(&"--cpu=wasm64".to_string()));
/// assert!(args.contains(&"--with-devices-aarch64=qemuweb".to_string()));
/// assert_eq!(args.last().unwrap(), "--target-list=x86_64-softmmu,aarch64-softmmu");
/// ```
pub fn configure_args(plan: &BuildPlan, cpu: WasmCpu) -> Vec<String> {
    let mut args = plan.configure_options.clone();
    // The JIT is a tier over the interpreter (patch 0010's meson option tcg_wasm_jit).
    args.push("--enable-tcg-interpreter".into());
    if plan.tcg == TcgBackend::Jit {
        args.push("--enable-tcg-wasm-jit".into());
    }
    if cpu == WasmCpu::Wasm64 {
        args.push("--cpu=wasm64".into());
    }
    for d in &plan.devices {
        args.push(format!(
            "--with-devices-{}={DEVICES_CONFIG}",
            d.target.trim_end_matches("-softmmu")
        ));
    }
    args.push(format!("--target-list={}", plan.targets.join(",")));
    args
}

/// The lines every script starts with: strict bash, the paths and the flags.
fn prelude(plan: &BuildPlan, cpu: WasmCpu, work: &str) -> String {
    let (cflags, ldflags) = flags(plan, cpu);
    format!(
        "set -euxo pipefail\n\
         export W={w}\n\
         export PREFIX=\"$W/prefix\"\n\
         export CFLAGS={c}\n\
         export CXXFLAGS=\"$CFLAGS\"\n\
         export LDFLAGS={l}\" -L$PREFIX/lib\"\n\
         export PKG_CONFIG_PATH=\"$PREFIX/lib/pkgconfig\" PKG_CONFIG_LIBDIR=\"$PREFIX/lib/pkgconfig\"\n\
         JOBS=\"${{JOBS:-2}}\"\n\
         mkdir -p \"$W/build\" \"$PREFIX/lib\"\n\
         cd \"$W\"\n\
         unpack() {{ rm -rf \"$W/build/$1\"; mkdir -p \"$W/build/$1\"; tar -xf \"$W/src/$2\" -C \"$W/build/$1\" --strip-components=1; }}\n",
        w = sh_quote(work),
        c = sh_quote(&cflags.join(" ")),
        l = sh_quote(&ldflags.join(" ")),
    )
}

/// The steps that build the plan in an environment whose work directory is `work` (as
/// the scripts see it), after the environment's own setup steps.
///
/// `cpu` comes from [`BuildPlan::validate`].
///
/// ```
/// use qemuweb_wasm_build::{steps::build_steps, BuildPlan};
/// let plan = BuildPlan::wasm64();
/// let cpu = plan.validate().unwrap();
/// let names: Vec<String> = build_steps(&plan, cpu, "/work").into_iter().map(|s| s.name).collect();
/// assert_eq!(names.first().map(String::as_str), Some("fetch"));
/// assert!(names.contains(&"qemu-link".to_string()));
/// assert_eq!(names.last().map(String::as_str), Some("firmware"));
/// ```
pub fn build_steps(plan: &BuildPlan, cpu: WasmCpu, work: &str) -> Vec<Step> {
    let pre = prelude(plan, cpu, work);
    let src = |name: &str| {
        plan.dependency(name)
            .map(|d| sh_quote(&d.source.file))
            .unwrap_or_else(|| sh_quote(&format!("missing-{name}")))
    };
    let env = |name: &str, body: String| Step::script(name, Place::Env, &format!("{pre}{body}"));
    let cross = meson_cross_file(plan, cpu, &format!("{work}/prefix"));
    let autotools_host = match cpu {
        WasmCpu::Wasm32 => "wasm32-unknown-linux",
        WasmCpu::Wasm64 => "wasm64-unknown-emscripten",
    };
    // glib's deprecated GCompletion assigns strncmp to a pointer with an `unsigned` length.
    let mut glib_cflags = flags(plan, cpu).0;
    glib_cflags.push("-Wno-incompatible-function-pointer-types".into());
    let mut steps = vec![
        Step {
            name: "fetch".into(),
            action: Action::Fetch(plan.source_files()),
        },
        env(
            "cross-file",
            format!("cat > \"$W/cross.meson\" <<'CROSS'\n{cross}CROSS\ncat \"$W/cross.meson\"\n"),
        ),
    ];
    for dep in &plan.dependencies {
        let body = match dep.name.as_str() {
            "zlib" => format!(
                "unpack zlib {}\ncd build/zlib\n\
                 emconfigure ./configure --prefix=\"$PREFIX\" --static\n\
                 emmake make -j\"$JOBS\" install\n",
                src("zlib")
            ),
            "libffi" => format!(
                "unpack libffi {}\ncd build/libffi\n\
                 # libffi adds -fexceptions for GCC-like compilers: with emcc every later link\n\
                 # test then pulls in Emscripten's C++ exception runtime (built on demand, for\n\
                 # minutes), useless to QEMU's C. Its C++ check uses emcc for the same reason.\n\
                 sed -i 's/^  CFLAGS=\"$CFLAGS -fexceptions\"$/  :/' configure.ac\n\
                 ! grep -q 'CFLAGS -fexceptions' configure.ac\n\
                 [ -x configure ] || autoreconf -fiv\n\
                 emconfigure ./configure CXX=emcc --host={autotools_host} --prefix=\"$PREFIX\" \
                 --enable-static --disable-shared --disable-dependency-tracking \
                 --disable-builddir --disable-multi-os-directory --disable-raw-api --disable-docs\n\
                 emmake make -j\"$JOBS\" install SUBDIRS=include\n\
                 # A libffi.pc without -L (Debian's) leaves wasm-ld unable to find -lffi.\n\
                 sed -i 's|^Libs: -lffi|Libs: -L${{libdir}} -lffi|' \"$PREFIX/lib/pkgconfig/libffi.pc\"\n\
                 grep '^Libs: -L' \"$PREFIX/lib/pkgconfig/libffi.pc\"\n",
                src("libffi")
            ),
            "pixman" => format!(
                "unpack pixman {}\ncd build/pixman\n\
                 meson setup _build --cross-file=\"$W/cross.meson\" --prefix=\"$PREFIX\" \
                 --default-library=static --buildtype=release -Dtests=disabled -Ddemos=disabled \
                 -Dopenmp=disabled -Dgtk=disabled -Dlibpng=disabled\n\
                 meson install -C _build\n",
                src("pixman")
            ),
            "pcre2" => format!(
                "unpack pcre2 {}\ncd build/pcre2\n\
                 emconfigure ./configure --host={autotools_host} --prefix=\"$PREFIX\" --enable-static \
                 --disable-shared --disable-jit\n\
                 emmake make -j\"$JOBS\" install\n",
                src("pcre2")
            ),
            "glib" => format!(
                "# glib needs res_query from libresolv: a stub that always fails.\n\
                 mkdir -p build/resolv\n\
                 printf '#include <netinet/in.h>\\nint res_query(const char *n, int c, int t, unsigned char *a, int l) {{ return -1; }}\\n' > build/resolv/r.c\n\
                 emcc $CFLAGS -c build/resolv/r.c -o build/resolv/r.o\n\
                 rm -f \"$PREFIX/lib/libresolv.a\"\n\
                 emar rcs \"$PREFIX/lib/libresolv.a\" build/resolv/r.o\n\
                 unpack glib {}\ncd build/glib\n\
                 # Its fuzzing programs are built (and linked by emcc, one by one) even\n\
                 # without tests: leave them out.\n\
                 sed -i \"s/^subdir('fuzzing')$/# &/\" meson.build\n\
                 grep -q \"^# subdir('fuzzing')$\" meson.build\n\
                 # Environment CFLAGS do not reach the host machine of a meson cross build.\n\
                 meson setup _build -Dc_args={glib_cargs} \
                 --cross-file=\"$W/cross.meson\" --prefix=\"$PREFIX\" --default-library=static \
                 --buildtype=release --wrap-mode=nodownload -Dselinux=disabled -Dxattr=false \
                 -Dlibmount=disabled -Dnls=disabled -Dintrospection=disabled -Dtests=false \
                 -Dglib_debug=disabled -Dglib_assert=false -Dglib_checks=false\n\
                 # Emscripten declares these but does not implement them usefully.\n\
                 sed -i '/HAVE_POSIX_SPAWN/d;/HAVE_PTHREAD_GETNAME_NP/d' _build/config.h\n\
                 meson install -C _build\n",
                src("glib"),
                glib_cargs = sh_quote(&format!("[{}]", meson_list(&glib_cflags))),
            ),
            "libfdt" => format!(
                "unpack libfdt {}\ncd build/libfdt\n\
                 # Only the library, compiled directly: dtc's meson build makes a shared\n\
                 # libfdt too, which Emscripten's linker refuses.\n\
                 rm -rf _obj\nmkdir _obj\n\
                 for c in libfdt/*.c; do emcc $CFLAGS -Ilibfdt -c \"$c\" -o \"_obj/$(basename \"${{c%.c}}\").o\"; done\n\
                 rm -f \"$PREFIX/lib/libfdt.a\"\n\
                 emar rcs \"$PREFIX/lib/libfdt.a\" _obj/*.o\n\
                 mkdir -p \"$PREFIX/include\"\n\
                 cp libfdt/fdt.h libfdt/libfdt.h libfdt/libfdt_env.h \"$PREFIX/include/\"\n\
                 # QEMU finds it with meson's find_library, which looks only in the compiler's\n\
                 # own directories: Emscripten's sysroot (where its ports go too).\n\
                 LIBDIR=$(emcc $CFLAGS -print-search-dirs | sed -n 's/^libraries: =.*://p')\n\
                 test -d \"$LIBDIR\"\n\
                 cp \"$PREFIX/lib/libfdt.a\" \"$LIBDIR/\"\n\
                 cp libfdt/fdt.h libfdt/libfdt.h libfdt/libfdt_env.h \"$LIBDIR/../../include/\"\n",
                src("libfdt")
            ),
            other => format!("echo 'no recipe for dependency {other}' >&2\nexit 1\n"),
        };
        steps.push(env(&dep.name, body));
    }
    steps.push(Step {
        name: "patches".into(),
        action: Action::Patches(plan.qemu.patches.clone()),
    });
    steps.push(env("qemu-source", qemu_source_script(plan)));
    steps.push(env(
        "qemu-configure",
        format!(
            "rm -rf build/qemu\nmkdir -p build/qemu\ncd build/qemu\n\
             # emconfigure resets PKG_CONFIG_PATH/LIBDIR; it passes this one on.\n\
             export EM_PKG_CONFIG_PATH=\"$PREFIX/lib/pkgconfig\"\n\
             emconfigure \"$W/build/qemu-src/configure\" {}\n",
            sh_words(&configure_args(plan, cpu))
        ),
    ));
    steps.push(env(
        "qemu-build",
        "cd build/qemu\nemmake make -j\"$JOBS\"\n".to_string(),
    ));
    let mut link = String::from(
        "emcc --version | head -1 > \"$W/build/emcc-version.txt\"\n\
         cd build/qemu\n# meson passes no -O to the final emcc link: relink optimised.\n",
    );
    let link_flags = std::iter::once(&plan.link_opt_level)
        .chain(&plan.link_flags)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    for bin in plan.binaries() {
        let _ = writeln!(
            link,
            "rm -f {b}.js {b}.wasm\nEMCC_CFLAGS={o} ninja -j\"$JOBS\" {b}.js\nls -l {b}.js {b}.wasm",
            b = sh_quote(&bin),
            o = sh_quote(&link_flags),
        );
    }
    steps.push(env("qemu-link", link));
    // Last: a change of firmware files reruns only this step.
    steps.push(env("firmware", firmware_script(plan)));
    steps
}

/// The line a failing patch leaves in the `qemu-source` log, followed by its file name.
pub const PATCH_FAILED_MARKER: &str = "QEMUWEB-PATCH-FAILED";

/// Unpacks QEMU, applies the series' patches that apply to the plan (each checked against
/// its recorded SHA-256, tried with `--dry-run` first so that a patch that does not apply
/// is named and changes nothing) and writes the device sets.
fn qemu_source_script(plan: &BuildPlan) -> String {
    let series = &plan.qemu.patches;
    let mut s = format!(
        "unpack qemu-src {}\ncd build/qemu-src\n\
         apply() {{ # FILE SHA256\n  \
           local p=\"$W/patches/{dir}/$1\"\n  \
           echo \"$2  $p\" | sha256sum -c --quiet\n  \
           if ! patch -p1 --forward --batch --dry-run -i \"$p\"; then\n    \
             echo \"{PATCH_FAILED_MARKER} $1\"; exit 65\n  \
           fi\n  \
           patch -p1 --forward --batch -i \"$p\"\n\
         }}\n",
        sh_quote(&plan.qemu.source.file),
        dir = series.name.replace(['\'', '"', '$', '`', '\\'], ""),
    );
    for p in series.applicable(plan.tcg) {
        let _ = writeln!(s, "apply {} {}", sh_quote(&p.file), sh_quote(&p.sha256));
    }
    for d in &plan.devices {
        let _ = writeln!(
            s,
            "cat > configs/devices/{}/{DEVICES_CONFIG}.mak <<'MAK'\n{}\nMAK",
            sh_quote(&d.target),
            d.entries.join("\n")
        );
    }
    s
}

/// Extracts the firmware files from their Debian packages into `$W/firmware`.
fn firmware_script(plan: &BuildPlan) -> String {
    let mut s = String::from(
        "rm -rf firmware build/firmware-pkgs\nmkdir -p firmware build/firmware-pkgs\n\
         extract() { # DEB DIR\n  \
           if command -v dpkg-deb >/dev/null; then dpkg-deb -x \"$1\" \"$2\"; \
           else (cd \"$2\" && ar x \"$1\" && tar -xf data.tar.*); fi\n}\n",
    );
    for pkg in &plan.firmware {
        let dir = format!("build/firmware-pkgs/{}", pkg.package);
        let _ = writeln!(
            s,
            "mkdir -p {d}\nextract \"$W/src/\"{f} {d}",
            d = sh_quote(&dir),
            f = sh_quote(&pkg.source.file)
        );
        for file in &pkg.files {
            let _ = writeln!(
                s,
                "cp {} firmware/{}",
                sh_quote(&format!("{dir}/{}", file.path)),
                sh_quote(&file.name)
            );
        }
    }
    s.push_str("ls -l firmware\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps_of(plan: &BuildPlan) -> Vec<Step> {
        build_steps(plan, plan.validate().unwrap(), "/work")
    }

    fn script_of(plan: &BuildPlan, name: &str) -> String {
        let step = steps_of(plan).into_iter().find(|s| s.name == name).unwrap();
        match step.action {
            Action::Script { script, place } => {
                assert_eq!(place, Place::Env);
                script
            }
            _ => panic!("{name} is not a script"),
        }
    }

    fn script(name: &str) -> String {
        script_of(&BuildPlan::wasm64(), name)
    }

    #[test]
    fn steps_come_in_build_order() {
        let names: Vec<String> = steps_of(&BuildPlan::wasm64())
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "fetch",
                "cross-file",
                "zlib",
                "libffi",
                "pixman",
                "pcre2",
                "glib",
                "libfdt",
                "patches",
                "qemu-source",
                "qemu-configure",
                "qemu-build",
                "qemu-link",
                "firmware"
            ]
        );
        let names: Vec<String> = steps_of(&BuildPlan::wasm32())
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert!(!names.contains(&"libfdt".to_string()));
    }

    #[test]
    fn the_cross_file_targets_emscripten_with_the_plan_flags() {
        let plan = BuildPlan::wasm32();
        let cross = meson_cross_file(&plan, WasmCpu::Wasm32, "/work/prefix");
        for line in [
            "c = 'emcc'",
            "ar = 'emar'",
            "pkg-config = ['pkg-config', '--static']",
            "system = 'emscripten'",
            "cpu_family = 'wasm32'",
            "c_args = ['-O3', '-pthread', '-DWASM_BIGINT']",
            "c_link_args = ['-sWASM_BIGINT', '-sASYNCIFY=1', '-L/work/prefix/lib']",
            "pkg_config_libdir = '/work/prefix/lib/pkgconfig'",
        ] {
            assert!(
                cross.lines().any(|l| l == line),
                "missing {line:?} in\n{cross}"
            );
        }
        assert!(script_of(&plan, "cross-file").contains(&cross));
        assert!(!cross.contains("cpp"), "no C++ compiler: {cross}");
        let cross64 = meson_cross_file(&BuildPlan::wasm64(), WasmCpu::Wasm64, "/p");
        for line in [
            "cpu_family = 'wasm64'",
            "cpu = 'wasm64'",
            "c_args = ['-O3', '-m64', '-pthread', '-DWASM_BIGINT']",
            "c_link_args = ['-m64', '-sWASM_BIGINT', '-sASYNCIFY=1', '-L/p/lib']",
        ] {
            assert!(
                cross64.lines().any(|l| l == line),
                "missing {line:?} in\n{cross64}"
            );
        }
        assert!(!cross64.contains("MEMORY64"));
    }

    #[test]
    fn the_configure_line_has_the_backend_cpu_devices_and_targets() {
        let line = script_of(&BuildPlan::wasm32(), "qemu-configure");
        let want = "emconfigure \"$W/build/qemu-src/configure\" '--static' '--disable-tools' \
                    '--disable-docs' '--without-default-features' '--enable-tcg' \
                    '--disable-download' '--disable-install-blobs' '--enable-tcg-interpreter' \
                    '--target-list=i386-softmmu'";
        assert!(line.contains(want), "{line}");
        let line = script("qemu-configure");
        let want = "'--without-default-devices' '--enable-tcg' '--enable-fdt=system' \
                    '--disable-download' '--disable-install-blobs' '--enable-tcg-interpreter' \
                    '--cpu=wasm64' '--with-devices-x86_64=qemuweb' \
                    '--with-devices-aarch64=qemuweb' \
                    '--target-list=x86_64-softmmu,aarch64-softmmu'";
        assert!(line.contains(want), "{line}");
    }

    #[test]
    fn scripts_are_strict_and_carry_the_flags() {
        for step in steps_of(&BuildPlan::wasm64()) {
            if let Action::Script { script, .. } = &step.action {
                assert!(
                    script.starts_with("set -euxo pipefail\nexport W='/work'\n"),
                    "{}",
                    step.name
                );
                assert!(script.contains("export CFLAGS='-O3 -m64 -pthread -DWASM_BIGINT'"));
                assert!(script.contains(
                    "export LDFLAGS='-m64 -sWASM_BIGINT -sASYNCIFY=1'\" -L$PREFIX/lib\""
                ));
            }
        }
        assert!(script("libffi").contains("--host=wasm64-unknown-emscripten"));
        assert!(script_of(&BuildPlan::wasm32(), "libffi").contains("--host=wasm32-unknown-linux"));
        assert!(script("libffi").contains("Libs: -L${libdir} -lffi"));
        assert!(script("libffi").contains("configure CXX=emcc"));
        assert!(script("libffi").contains("! grep -q 'CFLAGS -fexceptions' configure.ac"));
        assert!(script("glib").contains("\"s/^subdir('fuzzing')$/# &/\""));
        assert!(script("pcre2").contains("--disable-jit"));
        assert!(script("glib").contains("/HAVE_POSIX_SPAWN/d;/HAVE_PTHREAD_GETNAME_NP/d"));
        assert!(script("glib").contains("libresolv.a"));
        assert!(script("glib").contains(
            "-Dc_args='['\\''-O3'\\'', '\\''-m64'\\'', '\\''-pthread'\\'', '\\''-DWASM_BIGINT'\\'', \
             '\\''-Wno-incompatible-function-pointer-types'\\'']'"
        ));
        assert!(script("libfdt").contains("emar rcs \"$PREFIX/lib/libfdt.a\" _obj/*.o"));
        assert!(script("libfdt").contains("-print-search-dirs"));
        assert!(script("qemu-configure")
            .contains("export EM_PKG_CONFIG_PATH=\"$PREFIX/lib/pkgconfig\""));
    }

    #[test]
    fn the_source_step_applies_the_series_in_order_and_writes_the_device_sets() {
        let plan = BuildPlan::wasm64();
        let src = script("qemu-source");
        assert!(src.contains("unpack qemu-src 'qemu_10.2.2+ds.orig.tar.xz'"));
        let mut at = 0;
        for p in plan.qemu.patches.applicable(plan.tcg) {
            let line = format!("apply '{}' '{}'", p.file, p.sha256);
            let found = src[at..]
                .find(&line)
                .unwrap_or_else(|| panic!("{line} in\n{src}"));
            at += found;
        }
        assert!(src.contains("--dry-run") && src.contains(PATCH_FAILED_MARKER));
        assert!(src.contains(
            "cat > configs/devices/'x86_64-softmmu'/qemuweb.mak <<'MAK'\nCONFIG_I440FX=y\n"
        ));
        assert!(src.contains("CONFIG_ARM_VIRT=y\n"));
        // The patches step carries every patch's checksum.
        let step = steps_of(&plan)
            .into_iter()
            .find(|s| s.name == "patches")
            .unwrap();
        for p in &plan.qemu.patches.patches {
            assert!(step.fingerprint().contains(&p.sha256));
        }
    }

    #[test]
    fn jit_only_patches_are_applied_only_for_the_jit_backend() {
        // The embedded series: 0010-0014 are [tcg=jit], 0020 and 0030 are for every backend.
        let plan = BuildPlan::wasm64();
        let interp = script_of(&plan, "qemu-source");
        let jit = plan.clone().with_tcg(TcgBackend::Jit);
        let jit_src = script_of(&jit, "qemu-source");
        for p in [
            "0010-tcg-wasm-jit-option.patch",
            "0011-tcg-tci-block-header.patch",
            "0012-tcg-wasm-jit.patch",
            "0013-tci-direct-helper-calls.patch",
            "0014-tcg-wasm-jit-regions.patch",
        ] {
            assert!(!interp.contains(p), "{p}");
            assert!(jit_src.contains(&format!("apply '{p}'")), "{p}");
        }
        for src in [&interp, &jit_src] {
            assert!(src.contains("apply '0020-qemuweb-display.patch'"));
            assert!(src.contains("apply '0030-qemuweb-netdev.patch'"));
        }
        assert_ne!(plan.hash(), jit.hash());
        let args = configure_args(&jit, WasmCpu::Wasm64);
        assert!(args.contains(&"--enable-tcg-interpreter".to_string()));
        assert!(args.contains(&"--enable-tcg-wasm-jit".to_string()));
        assert!(
            !configure_args(&plan, WasmCpu::Wasm64).contains(&"--enable-tcg-wasm-jit".to_string())
        );
    }

    #[test]
    fn the_link_step_relinks_every_binary_with_the_plan_opt_level_and_flags() {
        let link = script("qemu-link");
        for b in ["qemu-system-x86_64", "qemu-system-aarch64"] {
            assert!(
                link.contains(&format!("rm -f '{b}'.js '{b}'.wasm")),
                "{link}"
            );
            assert!(
                link.contains(&format!(
                    "EMCC_CFLAGS='-O2 -sMEMORY64=2 --profiling-funcs' ninja -j\"$JOBS\" '{b}'.js"
                )),
                "{link}"
            );
        }
    }

    #[test]
    fn the_firmware_step_takes_every_file() {
        let fw = script("firmware");
        for f in [
            "bios-256k.bin",
            "vgabios-stdvga.bin",
            "kvmvapic.bin",
            "linuxboot_dma.bin",
            "QEMU_EFI.fd",
            "bios-microvm.bin",
        ] {
            assert!(fw.contains(&format!("firmware/'{f}'")), "{f} in\n{fw}");
        }
        assert!(fw.contains("extract \"$W/src/\"'seabios_1.16.3-2_all.deb'"));
    }

    /// The names of the steps whose fingerprints differ between two plans.
    fn differing_steps(a: &BuildPlan, b: &BuildPlan) -> Vec<String> {
        steps_of(a)
            .iter()
            .zip(&steps_of(b))
            .filter(|(x, y)| x.fingerprint() != y.fingerprint())
            .map(|(x, _)| x.name.clone())
            .collect()
    }

    #[test]
    fn the_wasm64_link_lowers_the_memory_and_only_the_link_step_has_it() {
        // The wasm64 link's own flags are checked by
        // the_link_step_relinks_every_binary_with_the_plan_opt_level_and_flags.
        let wasm32 = script_of(&BuildPlan::wasm32(), "qemu-link");
        assert!(wasm32.contains("EMCC_CFLAGS='-O2' ninja"), "{wasm32}");
        let plan = BuildPlan::wasm64();
        let mut full = plan.clone();
        full.link_flags.clear();
        assert_eq!(differing_steps(&plan, &full), ["qemu-link"]);
        let mut bad = plan;
        bad.link_flags = vec!["MEMORY64=2".into()];
        assert!(bad.validate().is_err());
    }

    #[test]
    fn only_the_link_step_changes_with_the_link_opt_level() {
        let plan = BuildPlan::wasm64();
        let mut o3 = plan.clone();
        o3.link_opt_level = "-O3".into();
        assert_eq!(differing_steps(&plan, &o3), ["qemu-link"]);
    }

    #[test]
    fn a_changed_patch_reruns_from_the_patches_step() {
        let plan = BuildPlan::wasm64();
        let mut changed = plan.clone();
        changed.qemu.patches.patches[1].sha256 = "f".repeat(64);
        let a = steps_of(&plan);
        let b = steps_of(&changed);
        let first = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x.fingerprint() != y.fingerprint())
            .unwrap();
        assert_eq!(a[first].name, "patches");
    }
}
