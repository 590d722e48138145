//! `qemuweb prepare`: an image made ready for a static web host.
//!
//! The output directory gets:
//!
//! - the disk: a qcow2 (compressed unless told otherwise) whose cluster size is the block
//!   size our HTTP device fetches ([`HttpOptions`]' `chunk_size`, 64 KiB), so a lazy reader
//!   fetches whole clusters and nothing it does not need, written by `qemu-img convert`;
//!   or a raw copy. The source (raw or qcow2) is vetted first ([`crate::gate`]): a backing
//!   or data file it names is refused unless [`PrepareOptions::backing_dir`] allows it,
//!   and `qemu-img` is handed the vetted chain, so nothing else reaches the disk;
//! - `vm.json`: the profile, inputs and overrides a page passes to `QemuClient.startVm`,
//!   the disk named by a URL relative to the page;
//! - `_headers`: the COOP/COEP/CORP headers for hosts that read that file (Netlify,
//!   Cloudflare Pages), since the runtime needs cross-origin isolation;
//! - `manifest.json`: every file's size and SHA-256, the image's format, virtual size and
//!   cluster size;
//! - with [`PrepareOptions::app`], a built web app (such as `examples/vm-launcher`'s
//!   `dist/`, made by `scripts/build-example`) copied in, its `index.html` opening on this
//!   disk and profile (`?disk=...&profile=...` when the address has no query), its own
//!   `_headers` kept when it has one;
//! - with [`PrepareOptions::atlas`], `atlas/`: the disk split into content-addressed
//!   chunks (an Atlas [`DirAtlasBackend`] store), its manifest hash in `manifest.json`.

use crate::error::{CliError, Result};
use crate::run_tool;
use qemuweb_config::{profile_by_id, DiskFormat, DiskInput, ImageSource, VmInputs, VmOverrides};
use qemuweb_storage::atlas::{AtlasStore, DirAtlasBackend, FileOrigin, ManifestType, StoreOptions};
use qemuweb_storage::format::ImageFormat;
use qemuweb_storage::{FileBlockDevice, HttpOptions};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image forms `prepare` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrepareFormat {
    /// qcow2 with the HTTP device's block size as cluster size.
    Qcow2,
    /// A raw image.
    Raw,
}

/// What to prepare.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// The source image (raw or qcow2).
    pub image: PathBuf,
    /// The source's format; `None` goes by its magic (read by our own reader).
    pub source_format: Option<ImageFormat>,
    /// The directory the backing and data files the source names may come from (plain
    /// relative names, resolved inside it); `None` refuses them all.
    pub backing_dir: Option<PathBuf>,
    /// The output directory (created; must be empty or absent unless `force`).
    pub out_dir: PathBuf,
    /// The VM profile id written to `vm.json`.
    pub profile: String,
    /// The output format.
    pub format: PrepareFormat,
    /// Compress qcow2 clusters (zlib, which our qcow2 reader decodes).
    pub compress: bool,
    /// The qcow2 cluster size; `None` takes the HTTP device's block size.
    pub cluster_size: Option<u32>,
    /// Also store the disk in a content-addressed Atlas store under `atlas/`.
    pub atlas: bool,
    /// Guest RAM in MiB for `vm.json`, overriding the profile.
    pub memory_mib: Option<u32>,
    /// Write into a non-empty `out_dir`, replacing the files `prepare` writes.
    pub force: bool,
    /// A built web app to copy in and preconfigure (its directory holds `index.html`).
    pub app: Option<PathBuf>,
    /// The engine the page runs the VM on: `vm.json` names it when it is QEMU, and a
    /// boot state is saved on it (a state resumes only on the engine that saved it).
    pub engine: crate::boot::EngineArg,
    /// The QEMU engine's build (a `qemuweb-wasm-build` output directory; default
    /// `$QEMUWEB_QEMU_DIR`): a boot state on QEMU runs it, and with an app it is copied
    /// into the site's `qemu/`.
    pub qemu_dir: Option<PathBuf>,
    /// Boot the prepared disk once in headless Chromium and publish its state beside it
    /// (`boot-state/`), so pages resume at the prompt instead of booting.
    pub boot_state: Option<BootStateOptions>,
}

/// How `prepare --boot-state` boots the disk to save its state.
#[derive(Debug, Clone)]
pub struct BootStateOptions {
    /// When to save: at a prompt on the serial console, or after some time.
    pub when: crate::boot_state::SaveWhen,
    /// How long the boot may take at most.
    pub timeout: std::time::Duration,
    /// The browser and assets to boot it with (its engine and QEMU build are
    /// [`PrepareOptions::engine`] and [`PrepareOptions::qemu_dir`]).
    pub browser: crate::boot::BrowserBoot,
}

/// The directory of the QEMU build in a site with an app and `--engine qemu`.
pub const QEMU_DIR: &str = "qemu";

/// The directory of the published boot state in the output.
pub const BOOT_STATE_DIR: &str = "boot-state";

/// One file of the output with its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// The path relative to the output directory.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

/// The image as `qemu-img info` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    /// The disk file, relative to the output directory.
    pub path: String,
    /// `qcow2` or `raw`.
    pub format: String,
    /// The guest-visible size in bytes.
    pub virtual_size: u64,
    /// The qcow2 cluster size, when qcow2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// Whether clusters are compressed.
    pub compressed: bool,
}

/// `manifest.json`: what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareManifest {
    /// The image.
    pub image: ImageInfo,
    /// The profile id in `vm.json`.
    pub profile: String,
    /// The Atlas store's name for the disk and its manifest hash, with `--atlas`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub atlas: Option<AtlasEntry>,
    /// Every file written but the manifest (disk, `vm.json`, `_headers`, the app's files,
    /// the boot state's) with size and SHA-256.
    pub files: Vec<FileEntry>,
    /// The published boot state, with `--boot-state`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_state: Option<BootStateEntry>,
}

/// The published boot state in the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootStateEntry {
    /// Its manifest, relative to the output directory.
    pub manifest: String,
    /// The id pages import it under.
    pub snapshot_id: String,
    /// The bytes of its parts together.
    pub bytes: u64,
}

/// The disk in the Atlas store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AtlasEntry {
    /// The store directory, relative to the output directory.
    pub dir: String,
    /// The file name in the store.
    pub name: String,
    /// `sha256:<hex>` of the file's chunk manifest.
    pub manifest_hash: String,
    /// The number of chunks.
    pub chunks: usize,
}

/// The `_headers` file: cross-origin isolation for every path.
pub const HEADERS_FILE: &str = "/*\n  Cross-Origin-Opener-Policy: same-origin\n  \
Cross-Origin-Embedder-Policy: require-corp\n  Cross-Origin-Resource-Policy: cross-origin\n";

/// The cluster size `prepare` uses by default: the block size [`HttpOptions`] fetches.
///
/// ```
/// assert_eq!(qemuweb_cli::prepare::default_cluster_size(), 64 * 1024);
/// ```
pub fn default_cluster_size() -> u32 {
    HttpOptions::default().chunk_size
}

/// The `vm.json` for a disk at `disk_url` (relative to the page): profile, inputs and
/// overrides as `QemuClient.startVm` takes them.
///
/// ```
/// use qemuweb_cli::prepare::{vm_json, PrepareFormat};
/// let v = vm_json("linux-i386-pc-nographic", "disk.qcow2", PrepareFormat::Qcow2, None).unwrap();
/// assert_eq!(v["inputs"]["disk"]["source"]["url"], "disk.qcow2");
/// assert_eq!(v["profile"]["id"], "linux-i386-pc-nographic");
/// ```
///
/// # Errors
///
/// [`CliError::Config`] for an unknown profile.
pub fn vm_json(
    profile: &str,
    disk_url: &str,
    format: PrepareFormat,
    memory_mib: Option<u32>,
) -> Result<serde_json::Value> {
    let profile = profile_by_id(profile)?;
    let inputs = VmInputs {
        disk: Some(DiskInput::new(
            ImageSource::url(disk_url),
            match format {
                PrepareFormat::Qcow2 => DiskFormat::Qcow2,
                PrepareFormat::Raw => DiskFormat::Raw,
            },
        )),
        ..VmInputs::default()
    };
    let overrides = VmOverrides {
        memory_mib,
        ..VmOverrides::default()
    };
    Ok(serde_json::json!({ "profile": profile, "inputs": inputs, "overrides": overrides }))
}

/// Lowercase hex SHA-256 of a file, read in pieces.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| CliError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| CliError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn entry(dir: &Path, name: &str) -> Result<FileEntry> {
    let path = dir.join(name);
    let size = std::fs::metadata(&path)
        .map_err(|e| CliError::io(&path, e))?
        .len();
    Ok(FileEntry {
        path: name.to_string(),
        size,
        sha256: sha256_file(&path)?,
    })
}

/// `qemu-img info` of the disk `path` this program wrote in `format`: (format, virtual
/// size, cluster size).
fn image_info(path: &Path, format: &str) -> Result<(String, u64, Option<u64>)> {
    let info = crate::qemu_img_info(path, format)?;
    Ok((
        info["format"].as_str().unwrap_or("").to_string(),
        info["virtual-size"].as_u64().unwrap_or(0),
        info["cluster-size"].as_u64(),
    ))
}

/// Checks a cluster size: a power of two from 512 bytes to 2 MiB (qcow2's limits).
///
/// ```
/// assert!(qemuweb_cli::prepare::check_cluster_size(65536).is_ok());
/// assert!(qemuweb_cli::prepare::check_cluster_size(3000).is_err());
/// ```
///
/// # Errors
///
/// [`CliError::InvalidArgument`] otherwise.
pub fn check_cluster_size(size: u32) -> Result<()> {
    if size.is_power_of_two() && (512..=2 << 20).contains(&size) {
        Ok(())
    } else {
        Err(CliError::InvalidArgument(format!(
            "cluster size {size}: must be a power of two from 512 bytes to 2 MiB"
        )))
    }
}

/// Prepares `opts.image` into `opts.out_dir` (see the module documentation), reporting
/// each step to `step`, and returns what `manifest.json` holds.
///
/// # Errors
///
/// [`CliError::InvalidArgument`] for a bad cluster size, a missing image or a non-empty
/// output directory without `force`; [`CliError::Config`] for an unknown profile;
/// [`CliError::Storage`] when the source is refused (see [`vet_image`](crate::gate::vet_image):
/// a file it names, a format other than raw and qcow2, bad metadata);
/// [`CliError::Tool`] when `qemu-img` fails;
/// [`CliError::Io`] for file errors; [`CliError::Storage`] when the Atlas store fails.
pub fn prepare(opts: &PrepareOptions, step: &dyn Fn(&str)) -> Result<PrepareManifest> {
    let cluster = opts.cluster_size.unwrap_or_else(default_cluster_size);
    check_cluster_size(cluster)?;
    profile_by_id(&opts.profile)?;
    if let Some(app) = &opts.app {
        if !app.join("index.html").is_file() {
            return Err(CliError::InvalidArgument(format!(
                "--app {}: no index.html there (a built app, e.g. scripts/build-example's dist)",
                app.display()
            )));
        }
    }
    if !opts.image.is_file() {
        return Err(CliError::InvalidArgument(format!(
            "{}: no such image",
            opts.image.display()
        )));
    }
    let source =
        crate::gate::vet_image(&opts.image, opts.source_format, opts.backing_dir.as_deref())?;
    let dir = &opts.out_dir;
    if dir.exists() && !opts.force {
        let mut entries = std::fs::read_dir(dir).map_err(|e| CliError::io(dir, e))?;
        if entries.next().is_some() {
            return Err(CliError::InvalidArgument(format!(
                "{}: not empty (--force writes into it)",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;

    let disk_name = match opts.format {
        PrepareFormat::Qcow2 => "disk.qcow2",
        PrepareFormat::Raw => "disk.img",
    };
    let disk = dir.join(disk_name);
    step(&format!("converting to {disk_name}"));
    let mut convert = Command::new("qemu-img");
    convert.arg("convert");
    match opts.format {
        PrepareFormat::Qcow2 => {
            if opts.compress {
                convert.arg("-c");
            }
            convert
                .args(["-O", "qcow2", "-o"])
                .arg(format!("cluster_size={cluster},compression_type=zlib"));
        }
        PrepareFormat::Raw => {
            convert.args(["-O", "raw"]);
        }
    }
    // The vetted chain, every file and format stated: qemu-img opens nothing else.
    convert.arg(source.qemu_filename()).arg(&disk);
    run_tool(&mut convert, "qemu-img", "qemu-utils")?;
    let (format, virtual_size, cluster_size) = image_info(
        &disk,
        match opts.format {
            PrepareFormat::Qcow2 => "qcow2",
            PrepareFormat::Raw => "raw",
        },
    )?;

    let boot_state = match &opts.boot_state {
        Some(b) => {
            step("booting the disk once to save its state (boot-state/)");
            Some(save_boot_state(opts, b, &disk, dir)?)
        }
        None => None,
    };

    step("writing vm.json and _headers");
    let mut vm = vm_json(&opts.profile, disk_name, opts.format, opts.memory_mib)?;
    if opts.engine == crate::boot::EngineArg::Qemu {
        vm["engine"] = "qemu".into();
    }
    if let Some(b) = &boot_state {
        vm["bootState"] = b.manifest.clone().into();
    }
    let vm_path = dir.join("vm.json");
    let text = serde_json::to_string_pretty(&vm).expect("JSON values serialize");
    std::fs::write(&vm_path, text + "\n").map_err(|e| CliError::io(&vm_path, e))?;
    let mut app_files = Vec::new();
    if let Some(app) = &opts.app {
        step("copying the app");
        copy_tree(app, dir, "", &mut app_files)?;
        let qemu = opts.engine == crate::boot::EngineArg::Qemu;
        if qemu {
            step("copying the QEMU build into qemu/");
            let build =
                qemuweb_headless::qemu_dir_or_env(opts.qemu_dir.clone()).ok_or_else(|| {
                    CliError::InvalidArgument(
                        "--app with --engine qemu needs --qemu-dir DIR (or QEMUWEB_QEMU_DIR): the \
                     QEMU build the page runs"
                            .into(),
                    )
                })?;
            if !build.join("qemu-build.json").is_file() {
                return Err(CliError::InvalidArgument(format!(
                    "{}: no qemu-build.json (not a QEMU build: scripts/build-qemu)",
                    build.display()
                )));
            }
            let to = dir.join(QEMU_DIR);
            std::fs::create_dir_all(&to).map_err(|e| CliError::io(&to, e))?;
            copy_tree(&build, &to, &format!("{QEMU_DIR}/"), &mut app_files)?;
        }
        let preset = AppPreset {
            disk: disk_name,
            profile: &opts.profile,
            memory_mib: opts.memory_mib,
            boot_state: boot_state.as_ref().map(|b| b.manifest.as_str()),
            qemu_dir: qemu.then_some(QEMU_DIR),
        };
        preconfigure_app(&dir.join("index.html"), &preset)?;
    }
    if !app_files.iter().any(|f| f == "_headers") {
        let headers = dir.join("_headers");
        std::fs::write(&headers, HEADERS_FILE).map_err(|e| CliError::io(&headers, e))?;
    }

    let atlas = if opts.atlas {
        step("storing the disk in atlas/ (content-addressed chunks)");
        let root = dir.join("atlas");
        let store = AtlasStore::new(DirAtlasBackend::open(&root)?);
        let device = FileBlockDevice::open(&disk, true)?;
        let file_type = match opts.format {
            PrepareFormat::Qcow2 => ManifestType::Qcow2,
            PrepareFormat::Raw => ManifestType::Raw,
        };
        let meta = futures::executor::block_on(store.store_device(
            disk_name,
            &device,
            StoreOptions::new(file_type, FileOrigin::Derived),
        ))?;
        let manifest = futures::executor::block_on(store.file_manifest(disk_name))?;
        Some(AtlasEntry {
            dir: "atlas".into(),
            name: disk_name.into(),
            manifest_hash: meta.manifest_hash.to_string(),
            chunks: manifest.chunks.len(),
        })
    } else {
        None
    };

    step("hashing");
    let manifest = PrepareManifest {
        image: ImageInfo {
            path: disk_name.into(),
            format,
            virtual_size,
            cluster_size,
            compressed: opts.format == PrepareFormat::Qcow2 && opts.compress,
        },
        profile: opts.profile.clone(),
        atlas,
        files: [disk_name, "vm.json", "_headers"]
            .into_iter()
            .map(String::from)
            .chain(app_files.into_iter().filter(|f| f != "_headers"))
            .chain(boot_state_files(dir, boot_state.is_some())?)
            .map(|f| entry(dir, &f))
            .collect::<Result<_>>()?,
        boot_state,
    };
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).expect("the manifest serializes");
    std::fs::write(&path, text + "\n").map_err(|e| CliError::io(&path, e))?;
    Ok(manifest)
}

/// Copies the regular files under `from` into `to` (keeping the tree), recording their
/// relative paths in `copied`.
fn copy_tree(from: &Path, to: &Path, prefix: &str, copied: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(|e| CliError::io(from, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| CliError::io(from, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        let (src, dst) = (e.path(), to.join(&name));
        let kind = e.file_type().map_err(|err| CliError::io(&src, err))?;
        if kind.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|err| CliError::io(&dst, err))?;
            copy_tree(&src, &dst, &format!("{rel}/"), copied)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).map_err(|err| CliError::io(&src, err))?;
            copied.push(rel);
        }
    }
    Ok(())
}

/// What the app `prepare` copies in opens on.
#[derive(Debug, Clone, Copy)]
pub struct AppPreset<'a> {
    /// The disk's URL, relative to the page.
    pub disk: &'a str,
    /// The profile id.
    pub profile: &'a str,
    /// Guest RAM in MiB, when not the profile's.
    pub memory_mib: Option<u32>,
    /// The published boot state's manifest, relative to the page.
    pub boot_state: Option<&'a str>,
    /// The QEMU build's directory, relative to the page, when the VM runs on the QEMU
    /// engine.
    pub qemu_dir: Option<&'a str>,
}

/// The script `prepare` puts first in the app's `<head>`: with no query in the address,
/// it adds one naming the disk and the profile (and the memory and the boot state, when
/// there are, and the QEMU engine with its build's directory), before the app reads it.
///
/// ```
/// use qemuweb_cli::prepare::{app_preset_script, AppPreset};
/// let preset = AppPreset { disk: "disk.qcow2", profile: "linux-i386-pc-nographic", memory_mib: None, boot_state: None, qemu_dir: None };
/// assert!(app_preset_script(&preset).contains("?disk=disk.qcow2&profile=linux-i386-pc-nographic\""));
/// let preset = AppPreset { memory_mib: Some(96), boot_state: Some("boot-state/boot-state.json"), ..preset };
/// assert!(app_preset_script(&preset).contains("&memory=96&bootState=boot-state/boot-state.json"));
/// let preset = AppPreset { qemu_dir: Some("qemu"), ..preset };
/// assert!(app_preset_script(&preset).contains("boot-state.json&engine=qemu&qemuDir=qemu/\""));
/// ```
pub fn app_preset_script(preset: &AppPreset<'_>) -> String {
    let mut query = format!("?disk={}&profile={}", preset.disk, preset.profile);
    if let Some(m) = preset.memory_mib {
        query.push_str(&format!("&memory={m}"));
    }
    if let Some(b) = preset.boot_state {
        query.push_str(&format!("&bootState={b}"));
    }
    if let Some(q) = preset.qemu_dir {
        query.push_str(&format!("&engine=qemu&qemuDir={q}/"));
    }
    let query = serde_json::to_string(&query).expect("strings serialize");
    format!(
        "<script>if (!location.search) history.replaceState(null, \"\", location.pathname + {query});</script>"
    )
}

fn preconfigure_app(index: &Path, preset: &AppPreset<'_>) -> Result<()> {
    let html = std::fs::read_to_string(index).map_err(|e| CliError::io(index, e))?;
    let at = html
        .find("<head>")
        .map(|i| i + "<head>".len())
        .ok_or_else(|| {
            CliError::InvalidArgument(format!("{}: no <head> to preconfigure", index.display()))
        })?;
    let html = format!(
        "{}\n{}{}",
        &html[..at],
        app_preset_script(preset),
        &html[at..]
    );
    std::fs::write(index, html).map_err(|e| CliError::io(index, e))
}

/// The paths (relative to `dir`) of the boot state's files, when there is one.
fn boot_state_files(dir: &Path, present: bool) -> Result<Vec<String>> {
    if !present {
        return Ok(Vec::new());
    }
    let state = dir.join(BOOT_STATE_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&state)
        .map_err(|e| CliError::io(&state, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| format!("{BOOT_STATE_DIR}/{n}"))
        .collect())
}

/// Boots `disk` in headless Chromium as `vm.json` describes it, saves its state when
/// `b.when` is reached and publishes it into `dir/boot-state`.
fn save_boot_state(
    opts: &PrepareOptions,
    b: &BootStateOptions,
    disk: &Path,
    dir: &Path,
) -> Result<BootStateEntry> {
    let boot = crate::boot::BootOptions {
        profile: opts.profile.clone(),
        image: Some(disk.to_path_buf()),
        kernel: None,
        initrd: None,
        append: None,
        format: None,
        backing_dir: None,
        accel: crate::boot::AccelArg::Auto,
        memory_mib: opts.memory_mib,
        smp: None,
        snapshot: false,
        timeout: Some(b.timeout),
    };
    let browser = crate::boot::BrowserBoot {
        engine: opts.engine,
        qemu_dir: opts.qemu_dir.clone(),
        ..b.browser.clone()
    };
    let mut runner = crate::boot::browser_options(&boot, &browser)?;
    if runner.engine == qemuweb_headless::Engine::V86 && runner.v86_dir.is_none() {
        runner.v86_dir = Some(qemuweb_headless::assets::ensure_v86()?);
    }
    runner.vm_id = Some("prepare".into());
    let snapshot = tempfile::Builder::new()
        .prefix(".boot-state-")
        .tempfile_in(dir)
        .map_err(|e| CliError::io(dir, e))?
        .into_temp_path();
    runner.save_snapshot = Some(snapshot.to_path_buf());
    let echo: Option<Box<dyn std::io::Write + Send>> = if b.browser.verbose {
        Some(Box::new(std::io::stderr()))
    } else {
        None
    };
    let (console, reached) = crate::boot_state::console_until(b.when.clone(), echo);
    let outcome = qemuweb_headless::run(&runner, console)?;
    let reached = *reached.lock().unwrap_or_else(|e| e.into_inner());
    match outcome {
        qemuweb_headless::Outcome::InputClosed if reached => {}
        qemuweb_headless::Outcome::Timeout | qemuweb_headless::Outcome::InputClosed => {
            return Err(CliError::Timeout {
                seconds: b.timeout.as_secs(),
            })
        }
        other => {
            return Err(CliError::InvalidArgument(format!(
                "booting the disk to save its state: {other}"
            )))
        }
    }
    let state = crate::boot_state::publish_state(&snapshot, disk, &dir.join(BOOT_STATE_DIR))?;
    Ok(BootStateEntry {
        manifest: format!(
            "{BOOT_STATE_DIR}/{}",
            qemuweb_storage::snapshot::MANIFEST_NAME
        ),
        snapshot_id: state.snapshot_id,
        bytes: state.file_bytes,
    })
}
