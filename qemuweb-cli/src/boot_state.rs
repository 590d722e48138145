//! Boot states: a disk booted once in headless Chromium, its VM's whole state saved and
//! published beside the disk (`boot-state.json` and its parts; see
//! `qemuweb_storage::snapshot::PublishedState`), so pages resume at the prompt instead of
//! booting. Used by `prepare --boot-state` and `boot --browser --save` (and resumed by
//! `boot --browser` unless `--cold`).

use crate::error::{CliError, Result};
use qemuweb_storage::format::{detect_format, open_image, OpenOptions};
use qemuweb_storage::snapshot::{publish, PublishOptions, PublishedDisk, PublishedState};
use qemuweb_storage::{BlockDevice, FileBlockDevice};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When a booting VM is saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveWhen {
    /// When this text appears on its serial console (a shell prompt, say), after a
    /// moment of quiet for the guest to settle.
    Prompt(String),
    /// After this long.
    After(Duration),
}

/// The directory `boot --browser --save` writes the state of `image` to:
/// `IMAGE.boot-state` beside it.
///
/// ```
/// use std::path::Path;
/// assert_eq!(qemuweb_cli::boot_state::state_dir_for(Path::new("/d/x.qcow2")), Path::new("/d/x.qcow2.boot-state"));
/// ```
pub fn state_dir_for(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".boot-state");
    image.with_file_name(name)
}

/// The published state a `boot --browser` of `image` resumes (unless `--cold`): the one
/// `--save` keeps beside it (`IMAGE.boot-state/boot-state.json`), else, for the disk of a
/// site `prepare --boot-state` wrote, the site's (`boot-state/boot-state.json`, when the
/// `vm.json` beside the image names it and the image as its disk). `None` when there is
/// neither.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let image = dir.path().join("disk.qcow2");
/// assert_eq!(qemuweb_cli::boot_state::state_to_resume(&image), None);
/// std::fs::create_dir(dir.path().join("boot-state")).unwrap();
/// std::fs::write(dir.path().join("boot-state/boot-state.json"), "{}").unwrap();
/// std::fs::write(
///     dir.path().join("vm.json"),
///     r#"{"inputs": {"disk": {"source": {"kind": "url", "url": "disk.qcow2"}}}, "bootState": "boot-state/boot-state.json"}"#,
/// ).unwrap();
/// assert_eq!(
///     qemuweb_cli::boot_state::state_to_resume(&image),
///     Some(dir.path().join("boot-state/boot-state.json"))
/// );
/// ```
pub fn state_to_resume(image: &Path) -> Option<PathBuf> {
    let saved = state_dir_for(image).join(qemuweb_storage::snapshot::MANIFEST_NAME);
    if saved.is_file() {
        return Some(saved);
    }
    let dir = image.parent()?;
    let vm_json = dir.join("vm.json");
    // vm.json is a few hundred bytes; anything much larger is not prepare's.
    if std::fs::metadata(&vm_json).ok()?.len() > 1 << 20 {
        return None;
    }
    let vm: serde_json::Value = serde_json::from_slice(&std::fs::read(&vm_json).ok()?).ok()?;
    let published = format!(
        "{}/{}",
        crate::prepare::BOOT_STATE_DIR,
        qemuweb_storage::snapshot::MANIFEST_NAME
    );
    let names_image = vm["inputs"]["disk"]["source"]["url"].as_str()
        == image.file_name().and_then(|n| n.to_str());
    let manifest = dir.join(&published);
    (names_image && vm["bootState"].as_str() == Some(&published) && manifest.is_file())
        .then_some(manifest)
}

/// What a published state names of the disk image at `path` (disk id `disk_id`): its
/// format, virtual size, file size and SHA-256.
///
/// # Errors
///
/// [`CliError::Io`] for file errors; [`CliError::Storage`] when the image cannot be read.
pub fn describe_disk(path: &Path, disk_id: &str) -> Result<PublishedDisk> {
    let dev = FileBlockDevice::open(path, true)?;
    let file_size = dev.size();
    let (format, virtual_size) = futures::executor::block_on(async {
        let format = detect_format(&dev).await?;
        let image = open_image(
            Box::new(dev),
            &OpenOptions {
                format: Some(format),
                ..OpenOptions::default()
            },
        )
        .await?;
        Ok::<_, qemuweb_storage::StorageError>((format, image.size()))
    })?;
    Ok(PublishedDisk {
        id: disk_id.to_string(),
        format: format.name().to_string(),
        virtual_size,
        file_size,
        sha256: crate::prepare::sha256_file(path)?,
    })
}

/// Publishes the snapshot file `snapshot` (saved over the disk image `disk`) into
/// `out_dir`.
///
/// # Errors
///
/// As [`describe_disk`]; [`CliError::Storage`] for a damaged snapshot or one of another
/// disk.
pub fn publish_state(snapshot: &Path, disk: &Path, out_dir: &Path) -> Result<PublishedState> {
    let options = PublishOptions {
        disks: vec![describe_disk(disk, "disk0")?],
        ..PublishOptions::default()
    };
    Ok(publish(snapshot, out_dir, &options)?)
}

/// Checks the published state `manifest` (a `boot-state.json`) before a boot resumes it
/// over the disk image `image` (disk `disk0`): the manifest parses, every part is there
/// with its size, and the image is the one the state was saved over (format, sizes and
/// SHA-256; a page cannot hash the image, so this is the one place a state of another
/// image with the same sizes is caught). The parts' content is checked by the page as it
/// imports them (each chunk's digest).
///
/// # Errors
///
/// [`CliError::Storage`] of kind `Corrupt` (the manifest is damaged, a part is missing
/// or of another size) or `Mismatch` (the state belongs to another image);
/// [`CliError::Io`] when a file cannot be read.
pub fn check_state(manifest: &Path, image: &Path) -> Result<PublishedState> {
    use qemuweb_storage::StorageError;
    let size = std::fs::metadata(manifest)
        .map_err(|e| CliError::io(manifest, e))?
        .len();
    if size > qemuweb_storage::snapshot::MAX_MANIFEST_BYTES as u64 {
        return Err(StorageError::corrupt(format!("{} is too large", manifest.display())).into());
    }
    let bytes = std::fs::read(manifest).map_err(|e| CliError::io(manifest, e))?;
    let state = PublishedState::parse(&bytes)?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    for part in &state.parts {
        let path = dir.join(&part.path);
        let found = std::fs::metadata(&path).map(|m| m.len()).ok();
        if found != Some(part.bytes) {
            return Err(StorageError::corrupt(format!(
                "{}: {} bytes expected, {}",
                path.display(),
                part.bytes,
                found.map_or("no such file".into(), |n| format!("{n} found"))
            ))
            .into());
        }
    }
    let saved = match state.disks.as_slice() {
        [d] if d.id == "disk0" => d,
        _ => {
            return Err(StorageError::mismatch(
                format!("the published state {}", manifest.display()),
                "disks",
                state
                    .disks
                    .iter()
                    .map(|d| d.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                "disk0",
            )
            .into())
        }
    };
    let given = describe_disk(image, "disk0")?;
    if &given != saved {
        return Err(StorageError::mismatch(
            format!("the published state {}", manifest.display()),
            format!("the image {}", image.display()),
            saved.identity(),
            given.identity(),
        )
        .into());
    }
    Ok(state)
}

/// A serial console for a run that ends (its input closes) when `when` is reached;
/// echoes the guest's output to `echo`. The returned flag says whether `when` was
/// reached (a run that ended otherwise, e.g. at the time limit, has not).
pub fn console_until(
    when: SaveWhen,
    echo: Option<Box<dyn Write + Send>>,
) -> (qemuweb_headless::Console, Arc<Mutex<bool>>) {
    let (tx, rx) = mpsc::channel::<()>();
    let reached = Arc::new(Mutex::new(false));
    match &when {
        SaveWhen::After(d) => {
            let (tx, reached, d) = (tx.clone(), reached.clone(), *d);
            std::thread::spawn(move || {
                std::thread::sleep(d);
                *reached.lock().unwrap_or_else(|e| e.into_inner()) = true;
                let _ = tx.send(());
            });
        }
        SaveWhen::Prompt(_) => {}
    }
    let output = Watch {
        text: match when {
            SaveWhen::Prompt(t) => t.into_bytes(),
            SaveWhen::After(_) => Vec::new(),
        },
        seen: Vec::new(),
        tx: Some(tx),
        reached: reached.clone(),
        echo,
    };
    let console = qemuweb_headless::Console {
        input: Box::new(Gate(rx)),
        output: Box::new(output),
    };
    (console, reached)
}

/// Console input that stays open until the gate's channel fires (or closes).
struct Gate(mpsc::Receiver<()>);

impl Read for Gate {
    fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
        let _ = self.0.recv();
        Ok(0)
    }
}

/// Console output that watches for a text.
struct Watch {
    text: Vec<u8>,
    /// The last bytes seen (as long as the text), across writes.
    seen: Vec<u8>,
    tx: Option<mpsc::Sender<()>>,
    reached: Arc<Mutex<bool>>,
    echo: Option<Box<dyn Write + Send>>,
}

/// The quiet after the prompt before the state is saved.
const SETTLE: Duration = Duration::from_secs(2);

impl Write for Watch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(e) = &mut self.echo {
            let _ = e.write_all(buf).and_then(|()| e.flush());
        }
        if !self.text.is_empty() && self.tx.is_some() {
            self.seen.extend_from_slice(buf);
            if self.seen.windows(self.text.len()).any(|w| w == self.text) {
                *self.reached.lock().unwrap_or_else(|e| e.into_inner()) = true;
                let tx = self.tx.take().expect("checked");
                std::thread::spawn(move || {
                    std::thread::sleep(SETTLE);
                    let _ = tx.send(());
                });
            }
            let keep = self.text.len().saturating_sub(1);
            if self.seen.len() > keep {
                self.seen.drain(..self.seen.len() - keep);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_ends_at_the_prompt_even_split_across_writes() {
        let (mut console, reached) =
            console_until(SaveWhen::Prompt("root@debian:~# ".into()), None);
        console.output.write_all(b"booting...\r\nroot@deb").unwrap();
        assert!(!*reached.lock().unwrap());
        console.output.write_all(b"ian:~# ").unwrap();
        assert!(*reached.lock().unwrap());
        let mut buf = [0u8; 8];
        assert_eq!(console.input.read(&mut buf).unwrap(), 0, "the input closes");
    }

    /// A published state of `image` in `dir/x.boot-state` (one 100-byte part).
    fn published_beside(image: &Path) -> PathBuf {
        let dir = state_dir_for(image);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state.000"), [1u8; 100]).unwrap();
        let state = PublishedState {
            parts: vec![qemuweb_storage::snapshot::PublishedPart {
                path: "state.000".into(),
                bytes: 100,
            }],
            file_bytes: 100,
            disks: vec![describe_disk(image, "disk0").unwrap()],
            ..PublishedState::example()
        };
        state.validate().unwrap();
        let manifest = dir.join(qemuweb_storage::snapshot::MANIFEST_NAME);
        std::fs::write(&manifest, serde_json::to_vec(&state).unwrap()).unwrap();
        manifest
    }

    #[test]
    fn a_state_of_another_image_or_damaged_is_a_typed_error() {
        use qemuweb_storage::ErrorKind as Kind;
        let kind = |e: CliError| match e {
            CliError::Storage(s) => s.kind(),
            other => panic!("not a storage error: {other}"),
        };
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("d.img");
        std::fs::write(&image, vec![7u8; 8192]).unwrap();
        let manifest = published_beside(&image);
        assert_eq!(check_state(&manifest, &image).unwrap().parts.len(), 1);

        // Another image of the same format and sizes: only its SHA-256 tells.
        let other = dir.path().join("other.img");
        std::fs::write(&other, vec![8u8; 8192]).unwrap();
        let e = check_state(&manifest, &other).unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");
        assert_eq!(kind(e), Kind::Mismatch);

        // A part of another size, then missing.
        let part = manifest.with_file_name("state.000");
        std::fs::write(&part, [1u8; 99]).unwrap();
        assert_eq!(
            kind(check_state(&manifest, &image).unwrap_err()),
            Kind::Corrupt
        );
        std::fs::remove_file(&part).unwrap();
        assert_eq!(
            kind(check_state(&manifest, &image).unwrap_err()),
            Kind::Corrupt
        );

        // A damaged manifest.
        std::fs::write(&manifest, b"{\"format\": 1, \"snapshotId\": ").unwrap();
        assert_eq!(
            kind(check_state(&manifest, &image).unwrap_err()),
            Kind::Corrupt
        );
    }

    #[test]
    fn a_published_disk_names_its_image() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.img");
        std::fs::write(&raw, vec![7u8; 8192]).unwrap();
        let d = describe_disk(&raw, "disk0").unwrap();
        assert_eq!(
            (d.format.as_str(), d.virtual_size, d.file_size),
            ("raw", 8192, 8192)
        );
        assert_eq!(d.sha256.len(), 64);
    }
}
