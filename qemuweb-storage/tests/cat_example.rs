//! The `cat` example prints exactly what `qemu-img convert -O raw` gives, from files and
//! over HTTP, and refuses backing files outside `--backing-dir`.
#![cfg(not(target_arch = "wasm32"))]

use qemuweb_testkit::fixtures::{generate_small, Fixture};
use qemuweb_testkit::server::TestServer;
use qemuweb_testkit::watchdog::{watch, Finished};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `cargo test` builds the examples beside the test binaries' `deps` directory.
fn cat_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("cat");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds it",
        bin.display()
    );
    bin
}

/// The `cat` example under the watchdog (it reads from the test server: a hang fails in
/// two minutes with its output's tail).
fn cat(args: &[&str]) -> Finished {
    let mut cmd = Command::new(cat_binary());
    cmd.args(args);
    let mut cat = watch("cat example", &mut cmd, Duration::from_secs(120));
    cat.close_stdin();
    cat.finish()
}

fn fixtures(tag: &str) -> (PathBuf, Vec<Fixture>) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("qemuweb-cat-{tag}-"))
        .tempdir()
        .unwrap()
        .keep();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let list = generate_small(&dir).unwrap();
    (dir, list)
}

fn dir_arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `out` is a successful run that printed the raw oracle of `f` (else it fails, naming
/// `f` and, for a wrong output, `how` it was read).
fn assert_prints_raw(out: &Finished, f: &Fixture, how: &str) {
    assert!(
        out.status.success(),
        "{}: {}",
        f.name,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == std::fs::read(&f.raw).unwrap(),
        "{} differs{how}",
        f.name
    );
}

#[test]
fn files_match_qemu_img_and_backing_files_need_permission() {
    let (dir, list) = fixtures("files");
    let mut chains = 0;
    for f in &list {
        let image = f.image.to_str().unwrap();
        let out = cat(&["--backing-dir", dir_arg(&dir), image]);
        assert_prints_raw(&out, f, "");
        if f.needs_resolver {
            chains += 1;
            let denied = cat(&[image]);
            assert_eq!(denied.status.code(), Some(1), "{}", f.name);
            let msg = String::from_utf8_lossy(&denied.stderr);
            assert!(msg.contains("ImplicitOpenDenied"), "{}: {msg}", f.name);
        }
    }
    assert!(chains > 0, "the fixtures include images with backing files");
    // A byte range.
    let f = &list[0];
    let out = cat(&[
        "--offset",
        "1000",
        "--length",
        "777",
        f.image.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&f.raw).unwrap()[1000..1777]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn urls_match_qemu_img() {
    let (dir, list) = fixtures("http");
    let server = TestServer::start(&dir).unwrap();
    for f in &list {
        let name = f.image.file_name().unwrap().to_str().unwrap();
        let out = cat(&["--backing-http", &server.url_for(name)]);
        assert_prints_raw(&out, f, " over HTTP");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_arguments_and_inputs_fail_clearly() {
    let out = cat(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
    let out = cat(&["--format", "vmdk", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cat(&["/nonexistent/disk.qcow2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[Io]"));
    let out = cat(&["http://127.0.0.1:9/disk.qcow2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[Network]"));
}
