//! The build as a list of [`Step`]s: the shell scripts a plan produces (dependencies,
//! QEMU configure, build and `-O2` relink, firmware), each run in the build environment.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::plan::{BuildPlan, SourceFile, WasmCpu};

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

/// The compiler and linker flags of a build, with `-sMEMORY64` added for wasm64.
fn flags(plan: &BuildPlan, cpu: WasmCpu) -> (Vec<String>, Vec<String>) {
    let mut cflags = plan.cflags.clone();
    let mut ldflags = plan.ldflags.clone();
    if cpu == WasmCpu::Wasm64 {
        cflags.push("-sMEMORY64=1".into());
        ldflags.push("-sMEMORY64=1".into());
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
/// ```
/// let plan = qemuweb_wasm_build::BuildPlan::default();
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
         cpp = 'em++'\n\
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
         cpp_args = [{c}]\n\
         c_link_args = [{l}]\n\
         cpp_link_args = [{l}]\n\
         \n\
         [properties]\n\
         pkg_config_libdir = '{prefix}/lib/pkgconfig'\n",
        c = list(&cflags),
        l = list(&link),
    )
}

/// QEMU's `configure` arguments for the plan (after `emconfigure .../configure`).
///
/// ```
/// let plan = qemuweb_wasm_build::BuildPlan::default();
/// let args = qemuweb_wasm_build::steps::configure_args(&plan, qemuweb_wasm_build::WasmCpu::Wasm32);
/// assert!(args.contains(&"--target-list=i386-softmmu".to_string()));
/// ```
pub fn configure_args(plan: &BuildPlan, cpu: WasmCpu) -> Vec<String> {
    let mut args = plan.configure_options.clone();
    if cpu == WasmCpu::Wasm64 {
        args.push("--cpu=wasm64".into());
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
/// let plan = BuildPlan::default();
/// let cpu = plan.validate().unwrap();
/// let names: Vec<String> = build_steps(&plan, cpu, "/work").into_iter().map(|s| s.name).collect();
/// assert_eq!(names.first().map(String::as_str), Some("fetch"));
/// assert_eq!(names.last().map(String::as_str), Some("qemu-link"));
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
        WasmCpu::Wasm64 => "wasm64-unknown-linux",
    };
    // glib's deprecated GCompletion assigns strncmp to a pointer with an `unsigned` length.
    let mut glib_cflags = flags(plan, cpu).0;
    glib_cflags.push("-Wno-incompatible-function-pointer-types".into());
    let mut steps = vec![
        Step {
            name: "fetch".into(),
            action: Action::Fetch(plan.source_files()),
        },
        env("firmware", firmware_script(plan)),
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
                 [ -x configure ] || autoreconf -fiv\n\
                 emconfigure ./configure --host={autotools_host} --prefix=\"$PREFIX\" --enable-static \
                 --disable-shared --disable-dependency-tracking --disable-builddir \
                 --disable-multi-os-directory --disable-raw-api --disable-docs\n\
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
            other => format!("echo 'no recipe for dependency {other}' >&2\nexit 1\n"),
        };
        steps.push(env(&dep.name, body));
    }
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
    for bin in plan.binaries() {
        let _ = writeln!(
            link,
            "rm -f {b}.js {b}.wasm\nEMCC_CFLAGS={o} ninja -j\"$JOBS\" {b}.js\nls -l {b}.js {b}.wasm",
            b = sh_quote(&bin),
            o = sh_quote(&plan.link_opt_level),
        );
    }
    steps.push(env("qemu-link", link));
    steps
}

/// Unpacks QEMU and applies the two source fixes the Emscripten build needs.
fn qemu_source_script(plan: &BuildPlan) -> String {
    format!(
        "unpack qemu-src {}\ncd build/qemu-src\n\
         # Debian's +ds tarball has no edk2 firmware blobs to unpack.\n\
         sed -i 's/^    unpack_edk2_blobs = bzip2.found()/    unpack_edk2_blobs = false/' meson.build\n\
         grep -q '^    unpack_edk2_blobs = false' meson.build\n\
         # emcc 3.1.69 does not expand nested response files; both are empty without modules.\n\
         python3 - <<'PY'\n\
         p = 'meson.build'\n\
         s = open(p).read()\n\
         old = \"    link_args += ['@block.syms', '@qemu.syms']\\n\"\n\
         new = \"    if host_os != 'emscripten'\\n      link_args += ['@block.syms', '@qemu.syms']\\n    endif\\n\"\n\
         assert old in s, 'meson.build: block.syms link line not found'\n\
         open(p, 'w').write(s.replace(old, new))\n\
         PY\n",
        sh_quote(&plan.qemu.source.file)
    )
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

    fn steps() -> Vec<Step> {
        let plan = BuildPlan::default();
        build_steps(&plan, plan.validate().unwrap(), "/work")
    }

    fn script(name: &str) -> String {
        let step = steps().into_iter().find(|s| s.name == name).unwrap();
        match step.action {
            Action::Script { script, place } => {
                assert_eq!(place, Place::Env);
                script
            }
            Action::Fetch(_) => panic!("{name} is a fetch"),
        }
    }

    #[test]
    fn steps_come_in_build_order() {
        let names: Vec<String> = steps().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "fetch",
                "firmware",
                "cross-file",
                "zlib",
                "libffi",
                "pixman",
                "pcre2",
                "glib",
                "qemu-source",
                "qemu-configure",
                "qemu-build",
                "qemu-link"
            ]
        );
    }

    #[test]
    fn the_cross_file_targets_emscripten_with_the_plan_flags() {
        let plan = BuildPlan::default();
        let cross = meson_cross_file(&plan, WasmCpu::Wasm32, "/work/prefix");
        for line in [
            "c = 'emcc'",
            "cpp = 'em++'",
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
        let cross64 = meson_cross_file(&plan, WasmCpu::Wasm64, "/p");
        assert!(cross64.contains("cpu_family = 'wasm64'") && cross64.contains("'-sMEMORY64=1'"));
        assert!(script("cross-file").contains(&cross));
    }

    #[test]
    fn the_configure_line_has_tcg_and_the_targets() {
        let line = script("qemu-configure");
        let want = "emconfigure \"$W/build/qemu-src/configure\" '--static' '--disable-tools' \
                    '--disable-docs' '--without-default-features' '--enable-tcg' \
                    '--enable-tcg-interpreter' '--disable-download' '--disable-install-blobs' \
                    '--target-list=i386-softmmu'";
        assert!(line.contains(want), "{line}");
        let mut plan = BuildPlan::default().with_targets(&["i386-softmmu", "x86_64-softmmu"]);
        plan.qemu.wasm64 = true;
        let args = configure_args(&plan, plan.validate().unwrap());
        assert!(args.ends_with(&[
            "--cpu=wasm64".to_string(),
            "--target-list=i386-softmmu,x86_64-softmmu".to_string()
        ]));
    }

    #[test]
    fn scripts_are_strict_and_carry_the_flags() {
        for step in steps() {
            if let Action::Script { script, .. } = &step.action {
                assert!(
                    script.starts_with("set -euxo pipefail\nexport W='/work'\n"),
                    "{}",
                    step.name
                );
                assert!(script.contains("export CFLAGS='-O3 -pthread -DWASM_BIGINT'"));
                assert!(script
                    .contains("export LDFLAGS='-sWASM_BIGINT -sASYNCIFY=1'\" -L$PREFIX/lib\""));
            }
        }
        assert!(script("libffi").contains("--host=wasm32-unknown-linux"));
        assert!(script("libffi").contains("Libs: -L${libdir} -lffi"));
        assert!(script("pcre2").contains("--disable-jit"));
        assert!(script("glib").contains("/HAVE_POSIX_SPAWN/d;/HAVE_PTHREAD_GETNAME_NP/d"));
        assert!(script("glib").contains("libresolv.a"));
        assert!(script("glib").contains(
            "-Dc_args='['\\''-O3'\\'', '\\''-pthread'\\'', '\\''-DWASM_BIGINT'\\'', \
             '\\''-Wno-incompatible-function-pointer-types'\\'']'"
        ));
        assert!(script("qemu-configure")
            .contains("export EM_PKG_CONFIG_PATH=\"$PREFIX/lib/pkgconfig\""));
        assert!(script("qemu-source").contains("unpack qemu-src 'qemu_10.2.2+ds.orig.tar.xz'"));
        assert!(script("qemu-source").contains("unpack_edk2_blobs = false"));
    }

    #[test]
    fn the_link_step_relinks_with_the_plan_opt_level() {
        let link = script("qemu-link");
        assert!(
            link.contains("rm -f 'qemu-system-i386'.js 'qemu-system-i386'.wasm"),
            "{link}"
        );
        assert!(
            link.contains("EMCC_CFLAGS='-O2' ninja -j\"$JOBS\" 'qemu-system-i386'.js"),
            "{link}"
        );
    }

    #[test]
    fn the_firmware_step_takes_the_four_files() {
        let fw = script("firmware");
        for f in [
            "bios-256k.bin",
            "vgabios-stdvga.bin",
            "kvmvapic.bin",
            "linuxboot_dma.bin",
        ] {
            assert!(fw.contains(&format!("firmware/'{f}'")), "{f} in\n{fw}");
        }
        assert!(fw.contains("extract \"$W/src/\"'seabios_1.16.3-2_all.deb'"));
    }

    #[test]
    fn only_the_link_step_changes_with_the_link_opt_level() {
        let plan = BuildPlan::default();
        let mut o3 = plan.clone();
        o3.link_opt_level = "-O3".into();
        let a = build_steps(&plan, WasmCpu::Wasm32, "/work");
        let b = build_steps(&o3, WasmCpu::Wasm32, "/work");
        let differing: Vec<&str> = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.fingerprint() != y.fingerprint())
            .map(|(x, _)| x.name.as_str())
            .collect();
        assert_eq!(differing, ["qemu-link"]);
    }
}
