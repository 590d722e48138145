//! Writes the guest-visible bytes of a disk image to stdout, like
//! `qemu-img convert -O raw IMAGE /dev/stdout`.
//!
//! ```text
//! cargo run -p qemuweb-storage --example cat -- [--backing-dir DIR] [--backing-http]
//!     [--format raw|qcow2] [--offset BYTES] [--length BYTES] [--progress] IMAGE_OR_URL
//! ```
//!
//! Files an image names (backing files, external data files) are refused unless
//! `--backing-dir DIR` allows names inside DIR, or `--backing-http` allows names relative to
//! the image's URL on the same origin.

// A native command-line tool: on wasm32 there is nothing to run.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    native::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use qemuweb_storage::format::{open_image, ImageFormat, OpenOptions};
    use qemuweb_storage::resolver::{DenyResolver, DirResolver, ImageResolver};
    use qemuweb_storage::{
        BlockDevice, FileBlockDevice, HttpBlockDevice, HttpOptions, HttpResolver,
    };
    use std::io::Write;
    use std::process::ExitCode;
    use std::rc::Rc;

    const USAGE: &str = "usage: cat [--backing-dir DIR] [--backing-http] [--format raw|qcow2] \
    [--offset BYTES] [--length BYTES] [--progress] IMAGE_OR_URL";

    /// Copy granularity: large enough for few HTTP round trips, small enough to stream.
    const CHUNK: u64 = 4 << 20;

    struct Args {
        image: String,
        backing_dir: Option<String>,
        backing_http: bool,
        format: Option<ImageFormat>,
        offset: u64,
        length: Option<u64>,
        progress: bool,
    }

    fn parse_args() -> Result<Args, String> {
        let mut args = std::env::args().skip(1);
        let mut parsed = Args {
            image: String::new(),
            backing_dir: None,
            backing_http: false,
            format: None,
            offset: 0,
            length: None,
            progress: false,
        };
        let number = |v: Option<String>, name: &str| -> Result<u64, String> {
            v.ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--backing-dir" => {
                    parsed.backing_dir = Some(args.next().ok_or("--backing-dir needs a directory")?)
                }
                "--backing-http" => parsed.backing_http = true,
                "--format" => {
                    parsed.format = Some(match args.next().as_deref() {
                        Some("raw") => ImageFormat::Raw,
                        Some("qcow2") => ImageFormat::Qcow2,
                        other => return Err(format!("--format: unknown format {other:?}")),
                    })
                }
                "--offset" => parsed.offset = number(args.next(), "--offset")?,
                "--length" => parsed.length = Some(number(args.next(), "--length")?),
                "--progress" => parsed.progress = true,
                "-h" | "--help" => return Err(USAGE.into()),
                s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
                s if parsed.image.is_empty() => parsed.image = s.to_string(),
                _ => return Err(format!("only one image may be given\n{USAGE}")),
            }
        }
        if parsed.image.is_empty() {
            return Err(USAGE.into());
        }
        Ok(parsed)
    }

    fn is_url(s: &str) -> bool {
        s.starts_with("http://") || s.starts_with("https://")
    }

    async fn run(args: Args) -> qemuweb_storage::Result<()> {
        let source: Box<dyn BlockDevice> = if is_url(&args.image) {
            let mut options = HttpOptions::default();
            if args.progress {
                options.on_progress = Some(Rc::new(|p: qemuweb_storage::Progress| {
                    eprint!("\rfetched {} of {} bytes", p.bytes_fetched, p.total);
                }));
            }
            Box::new(HttpBlockDevice::open(&args.image, options).await?)
        } else {
            Box::new(FileBlockDevice::open(&args.image, true)?)
        };
        let resolver: Rc<dyn ImageResolver> = match (&args.backing_dir, args.backing_http) {
            (Some(dir), _) => Rc::new(DirResolver::new(dir)?),
            (None, true) => Rc::new(HttpResolver::new(&args.image, HttpOptions::default())?),
            (None, false) => Rc::new(DenyResolver),
        };
        let options = OpenOptions {
            resolver,
            format: args.format,
            ..OpenOptions::default()
        };
        let disk = open_image(source, &options).await?;
        let end = match args.length {
            Some(len) => args.offset.saturating_add(len),
            None => disk.size(),
        };
        qemuweb_storage::check_range(
            disk.size(),
            args.offset,
            (end.saturating_sub(args.offset)) as usize,
        )?;
        let mut out = std::io::stdout().lock();
        let mut buf = vec![0u8; CHUNK.min(end - args.offset) as usize];
        let mut pos = args.offset;
        while pos < end {
            let n = (end - pos).min(CHUNK) as usize;
            disk.read_at(pos, &mut buf[..n]).await?;
            out.write_all(&buf[..n])
                .map_err(|e| qemuweb_storage::StorageError::io("writing to stdout", e))?;
            pos += n as u64;
        }
        out.flush()
            .map_err(|e| qemuweb_storage::StorageError::io("writing to stdout", e))?;
        if args.progress {
            eprintln!();
        }
        disk.close().await
    }

    pub fn main() -> ExitCode {
        let args = match parse_args() {
            Ok(a) => a,
            Err(msg) => {
                eprintln!("{msg}");
                return ExitCode::from(2);
            }
        };
        match futures::executor::block_on(run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cat: {e} [{:?}]", e.kind());
                ExitCode::FAILURE
            }
        }
    }
}
