//! Sequential read of a whole compressed qcow2 image: ours (`Qcow2Device` on a
//! `FileBlockDevice`, into a buffer) against `qemu-img convert -O raw`, for zlib and zstd.
//!
//! Run with `cargo bench -p qemuweb-storage --bench qcow2_read`. `QCOW2_BENCH_MIB` sets the
//! disk size (default 256) and `QCOW2_BENCH_REPS` the repetitions (default 3; the best is
//! reported).

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    native::main();
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use futures::executor::block_on;
    use qemuweb_storage::format::{OpenOptions, Qcow2Device};
    use qemuweb_storage::{BlockDevice, FileBlockDevice};
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn env_u64(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .expect("running qemu-img");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn best(reps: u64, mut f: impl FnMut() -> Duration) -> Duration {
        (0..reps).map(|_| f()).min().unwrap()
    }

    /// Reads the whole image through our reader, returning the time and a checksum.
    fn ours(image: &Path) -> (Duration, u64) {
        block_on(async {
            let start = Instant::now();
            let dev = Box::new(FileBlockDevice::open(image, true).unwrap());
            let disk = Qcow2Device::open(dev, &OpenOptions::default())
                .await
                .unwrap();
            let mut buf = vec![0u8; 4 << 20];
            let mut sum = 0u64;
            let mut at = 0;
            while at < disk.size() {
                let n = (disk.size() - at).min(buf.len() as u64) as usize;
                disk.read_at(at, &mut buf[..n]).await.unwrap();
                sum = sum.wrapping_add(buf[..n].iter().step_by(4093).map(|&b| u64::from(b)).sum());
                at += n as u64;
            }
            (start.elapsed(), sum)
        })
    }

    /// The checksum [`ours`] computes, of the raw source image.
    fn raw_sum(source: &Path) -> u64 {
        let data = std::fs::read(source).unwrap();
        data.chunks(4 << 20)
            .map(|c| c.iter().step_by(4093).map(|&b| u64::from(b)).sum::<u64>())
            .fold(0u64, u64::wrapping_add)
    }

    fn mbps(bytes: u64, t: Duration) -> f64 {
        bytes as f64 / 1e6 / t.as_secs_f64()
    }

    pub fn main() {
        let mib = env_u64("QCOW2_BENCH_MIB", 256);
        let reps = env_u64("QCOW2_BENCH_REPS", 3).max(1);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qcow2-bench");
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("source.raw");
        let size = mib << 20;
        qemuweb_testkit::fixtures::write_compressible(&source, size, 42).unwrap();
        println!("qcow2_read: {mib} MiB disk, best of {reps}");
        let want = raw_sum(&source);
        for (name, opts) in [
            ("zlib", "cluster_size=65536"),
            ("zstd", "cluster_size=65536,compression_type=zstd"),
        ] {
            let image = dir.join(format!("{name}.qcow2"));
            let out = dir.join("out.raw");
            let (img, src, outs) = (
                image.to_str().unwrap(),
                source.to_str().unwrap(),
                out.to_str().unwrap(),
            );
            qemu_img(&[
                "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", opts, src, img,
            ]);
            let stored = std::fs::metadata(&image).unwrap().len();
            let qemu = best(reps, || {
                let _ = std::fs::remove_file(&out);
                let start = Instant::now();
                qemu_img(&["convert", "-f", "qcow2", "-O", "raw", img, outs]);
                start.elapsed()
            });
            let _ = std::fs::remove_file(&out);
            let us = best(reps, || {
                let (t, s) = ours(&image);
                assert_eq!(s, want, "{name}: the read differs from the source image");
                t
            });
            println!(
                "{name}: image {:.1} MB; qemu-img convert -O raw {:.0} MB/s ({:.3} s); \
                 Qcow2Device read {:.0} MB/s ({:.3} s); ours/qemu-img {:.2}",
                stored as f64 / 1e6,
                mbps(size, qemu),
                qemu.as_secs_f64(),
                mbps(size, us),
                us.as_secs_f64(),
                qemu.as_secs_f64() / us.as_secs_f64()
            );
        }
    }
}
