//! The worker-side runtime (wasm32 only): decodes and checks the page's commands, builds
//! the storage stacks, runs the engine and sends events back.
//!
//! `web/worker.js` starts it:
//!
//! ```js
//! import init, { workerMain } from "./qemuweb_runtime.js";
//! await init();
//! workerMain();
//! ```

use crate::capabilities;
use crate::engine::qemu::{check_isolation, QemuConfig, QemuDisk, QemuEngine};
use crate::engine::qemu_build::{check_memory64, QemuBuild, MANIFEST};
use crate::engine::qemu_channel::{DEFAULT_TIMEOUT_MS, DEFAULT_WINDOW};
use crate::engine::qemu_net::QemuNic;
use crate::engine::v86::{stop_reason, DiskObject, V86Config, V86Engine, V86Nic};
use crate::engine::{
    plan, qemu_target, select_engine, Engine, EngineHost, EnginePlan, AVAILABLE_ENGINES,
};
use crate::error::{Result, RuntimeError};
use crate::network::with_nic_macs;
use crate::protocol::{
    classify, request_id_from_f64, AssetSource, Command, EngineAssets, EngineKind, Event,
    ExportFormat, Limits, LogLevel, Persistence, ProgressTotal, QemuOptions, ReadCacheOptions,
    Reply, Request, Session, StartPhase, StopReason, VmState, PROTOCOL_VERSION,
};
use crate::snapshot::resume::Resuming;
use crate::snapshot::save::{save, SaveRequest};
use crate::snapshot::{machine_digest, Resume, SnapshotInfo};
use crate::storage_stack::{open_disk, open_source, use_read_cache, DiskStack, FileMap};
use js_sys::{Object, Reflect, Uint8Array};
use qemuweb_config::{ImageSource, VmInputs, VmOverrides, VmProfile};
use qemuweb_storage::export::qcow2::{BackingFile, Qcow2ExportOptions};
use qemuweb_storage::export::{compact, qcow2};
use qemuweb_storage::read_cache::{IndexedDbReadCache, ReadCache};
use qemuweb_storage::snapshot::MachineRef;
use qemuweb_storage::{BlockDevice, HttpOptions};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::DedicatedWorkerGlobalScope;

/// How often a running VM's writes are made durable without being asked.
pub const AUTOSYNC_MS: u32 = 1000;

/// Posts events to the page.
struct Poster {
    scope: DedicatedWorkerGlobalScope,
}

impl EngineHost for Poster {
    fn emit(&self, event: Event) {
        post(&self.scope, &event);
    }
}

fn to_js<T: serde::Serialize>(
    value: &T,
) -> std::result::Result<JsValue, serde_wasm_bindgen::Error> {
    value.serialize(&serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true))
}

fn post(scope: &DedicatedWorkerGlobalScope, event: &Event) {
    match to_js(event) {
        Ok(v) => {
            let _ = scope.post_message(&v);
        }
        Err(e) => {
            // Only our own types are serialized; report rather than lose the failure.
            let fallback = Event::Log {
                vm_id: None,
                level: LogLevel::Warn,
                message: format!("could not encode a {} event: {e}", event.type_name()),
            };
            if let Ok(v) = to_js(&fallback) {
                let _ = scope.post_message(&v);
            }
        }
    }
}

/// The number of [`StartPhase`]s a start goes through.
const START_STEPS: u32 = 3;

/// What a `start` command asks for.
#[derive(Clone, Copy)]
struct StartRequest<'a> {
    vm_id: &'a str,
    profile: &'a VmProfile,
    inputs: &'a VmInputs,
    overrides: Option<&'a VmOverrides>,
    engine: Option<EngineKind>,
    assets: &'a EngineAssets,
    persistence: Persistence,
    limits: &'a Limits,
    files: &'a FileMap,
    resume: Option<&'a Resume>,
    read_cache: ReadCacheOptions,
    qemu: QemuOptions,
    /// The page's end of the VM's network channel (a VM attached to a network).
    network: Option<&'a web_sys::MessagePort>,
}

/// A VM this worker runs.
struct RunningVm {
    engine: Rc<dyn Engine>,
    disks: Vec<DiskStack>,
    /// The machine it runs (recorded in its snapshots).
    machine: MachineRef,
}

struct Worker {
    host: Rc<Poster>,
    session: RefCell<Session>,
    vm: RefCell<Option<Rc<RunningVm>>>,
    /// A stop that arrived while the VM was starting: (request id, force).
    pending_stop: RefCell<Option<(u64, bool)>>,
}

impl Worker {
    fn emit(&self, event: Event) {
        self.host.emit(event);
    }

    fn fail(&self, request_id: Option<u64>, vm_id: Option<&str>, error: &RuntimeError) {
        self.emit(Event::error(request_id, vm_id, error));
    }

    fn done(&self, request_id: u64, result: Reply) {
        self.emit(Event::Done { request_id, result });
    }

    fn set_state(&self, vm_id: &str, state: VmState) {
        self.session.borrow_mut().set_state(vm_id, state);
    }

    /// Decodes one message; answers the undecodable with an error event.
    fn on_message(self: &Rc<Self>, data: JsValue) {
        let is_object = data.is_object() && !js_sys::Array::is_array(&data);
        let get = |v: &JsValue, k: &str| {
            Reflect::get(v, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
        };
        let (request_id, command_js) = if is_object {
            (
                get(&data, "id").as_f64().and_then(request_id_from_f64),
                get(&data, "command"),
            )
        } else {
            (None, JsValue::UNDEFINED)
        };
        let command_type = if command_js.is_object() {
            get(&command_js, "type").as_string()
        } else {
            None
        };
        let decoded = classify(is_object, command_type.as_deref()).and_then(|()| {
            let request: Request = serde_wasm_bindgen::from_value(data.clone())
                .map_err(|e| RuntimeError::Malformed(format!("bad request: {e}")))?;
            request.validate()?;
            Ok(request)
        });
        let request = match decoded {
            Ok(r) => r,
            Err(e) => return self.fail(request_id, None, &e),
        };
        let id = request.id;
        let vm_id = request.command.vm_id().map(str::to_string);
        if let Err(e) = self.session.borrow_mut().check(&request.command) {
            return self.fail(Some(id), vm_id.as_deref(), &e);
        }
        let (files, display) = if command_type.as_deref() == Some("start") {
            let display = get(&command_js, "display");
            let display = if display.is_undefined() || display.is_null() {
                None
            } else {
                match display.dyn_into::<js_sys::SharedArrayBuffer>() {
                    Ok(sab) => Some(sab),
                    Err(_) => {
                        let e = RuntimeError::Unsupported(
                            "display: a SharedArrayBuffer display ring is needed (the page \
                             must be cross-origin isolated: COOP/COEP)"
                                .into(),
                        );
                        return self.fail(Some(id), vm_id.as_deref(), &e);
                    }
                }
            };
            (files_of(&get(&command_js, "files")), display)
        } else {
            (FileMap::new(), None)
        };
        let network = if command_type.as_deref() == Some("start") {
            get(&command_js, "network")
                .dyn_into::<web_sys::MessagePort>()
                .ok()
        } else {
            None
        };
        let this = self.clone();
        spawn_local(async move { this.run(id, request.command, files, display, network).await });
    }

    async fn run(
        self: Rc<Self>,
        id: u64,
        command: Command,
        files: FileMap,
        display: Option<js_sys::SharedArrayBuffer>,
        network: Option<web_sys::MessagePort>,
    ) {
        match command {
            Command::Hello { .. } => {
                self.emit(Event::Capabilities {
                    capabilities: capabilities::detect(),
                });
                self.done(id, Reply::Ok);
            }
            Command::Start {
                vm_id,
                profile,
                inputs,
                overrides,
                engine,
                assets,
                persistence,
                limits,
                resume,
                read_cache,
                qemu,
            } => {
                let request = StartRequest {
                    vm_id: &vm_id,
                    profile: &profile,
                    inputs: &inputs,
                    overrides: overrides.as_ref(),
                    engine,
                    assets: &assets,
                    persistence,
                    limits: &limits,
                    files: &files,
                    resume: resume.as_ref(),
                    read_cache,
                    qemu,
                    network: network.as_ref(),
                };
                let started = self.start(&request, display).await;
                let stop = self.pending_stop.borrow_mut().take();
                match started {
                    Ok(vm) => {
                        *self.vm.borrow_mut() = Some(vm.clone());
                        self.set_state(&vm_id, VmState::Running);
                        self.emit(Event::Started {
                            vm_id: vm_id.clone(),
                            engine: vm.engine.kind(),
                        });
                        self.done(id, Reply::Ok);
                        if let Some((stop_id, force)) = stop {
                            self.stop(stop_id, &vm_id, force).await;
                        } else {
                            spawn_local(self.clone().autosync(vm, vm_id.clone()));
                        }
                    }
                    Err(e) => {
                        self.set_state(&vm_id, VmState::Failed);
                        self.fail(Some(id), Some(&vm_id), &e);
                        if let Some((stop_id, _)) = stop {
                            self.emit(Event::Stopped {
                                vm_id: vm_id.clone(),
                                reason: StopReason::Error,
                            });
                            self.done(stop_id, Reply::Ok);
                        }
                    }
                }
            }
            Command::Stop { vm_id, force } => {
                if self.vm.borrow().is_none() {
                    // Still starting: stop when the start completes.
                    *self.pending_stop.borrow_mut() = Some((id, force));
                    return;
                }
                self.stop(id, &vm_id, force).await;
            }
            Command::Reset { vm_id } => {
                let r = match self.running() {
                    Some(vm) => vm.engine.reset().await,
                    None => Err(not_running(&vm_id)),
                };
                self.answer(id, &vm_id, r.map(|()| Reply::Ok));
            }
            Command::SerialIn { vm_id, data } => {
                let r = match self.running() {
                    Some(vm) => vm.engine.send_serial(&data),
                    None => Err(not_running(&vm_id)),
                };
                self.answer(id, &vm_id, r.map(|()| Reply::Ok));
            }
            Command::Input { vm_id, events } => {
                let r = match self.running() {
                    Some(vm) => vm.engine.send_input(&events),
                    None => Err(not_running(&vm_id)),
                };
                self.answer(id, &vm_id, r.map(|()| Reply::Ok));
            }
            Command::SyncOverlay { vm_id } => {
                let r = match self.running() {
                    Some(vm) => sync_all(&vm).await,
                    None => Err(not_running(&vm_id)),
                };
                self.answer(id, &vm_id, r.map(|()| Reply::Ok));
            }
            Command::ExportOverlay {
                vm_id,
                disk_id,
                format,
            } => {
                let r = match self.running() {
                    Some(vm) => export(&vm, &disk_id, format).await,
                    None => Err(not_running(&vm_id)),
                };
                self.answer(id, &vm_id, r.map(|data| Reply::Exported { data }));
            }
            Command::SaveSnapshot {
                vm_id,
                snapshot_id,
                name,
            } => {
                let r = match self.running() {
                    Some(vm) => {
                        let request = SaveRequest {
                            vm_id: &vm_id,
                            snapshot_id: &snapshot_id,
                            name: &name,
                            machine: vm.machine.clone(),
                        };
                        save(&*vm.engine, &vm.disks, request, &*self.host).await
                    }
                    None => Err(not_running(&vm_id)),
                };
                self.answer(
                    id,
                    &vm_id,
                    r.map(|h| Reply::Snapshot {
                        snapshot: SnapshotInfo::from(&h),
                    }),
                );
            }
            Command::QueryState { vm_id } => {
                let state = self
                    .session
                    .borrow()
                    .vm()
                    .map(|(_, s)| s)
                    .unwrap_or(VmState::Stopped);
                self.answer(id, &vm_id, Ok(Reply::State { state }));
            }
        }
    }

    /// Makes the guest's writes durable every [`AUTOSYNC_MS`] while `vm` runs, so a page
    /// that goes away (reload, tab closed, crash) loses at most that much.
    async fn autosync(self: Rc<Self>, vm: Rc<RunningVm>, vm_id: String) {
        let current = |this: &Self| {
            this.vm
                .borrow()
                .as_ref()
                .is_some_and(|v| Rc::ptr_eq(v, &vm))
        };
        let mut failed = false;
        loop {
            gloo_timers::future::TimeoutFuture::new(AUTOSYNC_MS).await;
            if !current(&self) {
                return;
            }
            let result = sync_all(&vm).await;
            match result {
                // Report a failure once, while the VM is still ours (a stop may have
                // closed the disks meanwhile).
                Err(e) if !failed && current(&self) => {
                    failed = true;
                    self.fail(None, Some(&vm_id), &e);
                }
                Ok(()) => failed = false,
                Err(_) => {}
            }
        }
    }

    fn answer(&self, id: u64, vm_id: &str, result: Result<Reply>) {
        match result {
            Ok(reply) => self.done(id, reply),
            Err(e) => self.fail(Some(id), Some(vm_id), &e),
        }
    }

    fn running(&self) -> Option<Rc<RunningVm>> {
        self.vm.borrow().clone()
    }

    async fn stop(&self, id: u64, vm_id: &str, force: bool) {
        let Some(vm) = self.vm.borrow_mut().take() else {
            return self.fail(Some(id), Some(vm_id), &not_running(vm_id));
        };
        let mut result = vm.engine.stop(force).await;
        if !force {
            if let Err(e) = sync_disks(&vm.disks).await {
                result = result.and(Err(e));
            }
        }
        close_disks(&vm.disks).await;
        self.set_state(vm_id, VmState::Stopped);
        let reason = match (&result, force) {
            (Err(_), _) => StopReason::Error,
            (Ok(()), f) => stop_reason(f),
        };
        if let Err(e) = &result {
            self.fail(None, Some(vm_id), e);
        }
        self.emit(Event::Stopped {
            vm_id: vm_id.to_string(),
            reason,
        });
        self.done(id, Reply::Ok);
    }

    /// Opens the persistent read cache the start asks for (a cache that cannot be opened
    /// is logged and the VM runs without).
    async fn use_read_cache(&self, vm_id: &str, options: ReadCacheOptions) {
        let cache: Option<Rc<dyn ReadCache>> = if options.enabled {
            match IndexedDbReadCache::open(options.max_bytes).await {
                Ok(c) => Some(Rc::new(c)),
                Err(e) => {
                    self.emit(Event::Log {
                        vm_id: Some(vm_id.to_string()),
                        level: LogLevel::Warn,
                        message: format!("no persistent read cache: {e}"),
                    });
                    None
                }
            }
        } else {
            None
        };
        use_read_cache(cache);
    }

    /// Sends a `phase` event: step `phase` of starting VM `vm_id` begins.
    fn phase(&self, vm_id: &str, phase: StartPhase) {
        self.emit(Event::Phase {
            vm_id: vm_id.to_string(),
            phase,
            step: phase as u32 + 1,
            steps: START_STEPS,
        });
    }

    async fn start(
        &self,
        request: &StartRequest<'_>,
        display: Option<js_sys::SharedArrayBuffer>,
    ) -> Result<Rc<RunningVm>> {
        let StartRequest {
            vm_id,
            assets,
            files,
            persistence,
            limits,
            ..
        } = *request;
        let engine = select_engine(request.profile, request.overrides, request.engine)?;
        let nics = crate::network::plan_nics(vm_id, request.profile, request.overrides, engine)?;
        // QEMU's NIC gets the MAC the page's switch knows it by.
        let pinned = with_nic_macs(request.profile, request.overrides, &nics);
        let plan = plan(
            request.profile,
            request.inputs,
            pinned.as_ref().or(request.overrides),
            request.engine,
        )?;
        let logs = (plan.warnings.iter().map(|w| (LogLevel::Warn, w)))
            .chain(plan.notes.iter().map(|n| (LogLevel::Debug, n)));
        for (level, message) in logs {
            self.emit(Event::Log {
                vm_id: Some(vm_id.to_string()),
                level,
                message: message.clone(),
            });
        }
        let nic = match (nics.into_iter().next(), request.network) {
            (Some(nic), Some(port)) => Some((nic, port.clone())),
            (Some(nic), None) => {
                return Err(RuntimeError::InvalidInputs(format!(
                    "the VM is attached to network '{}' but the page gave its worker no \
                     network channel (start it through QemuClient)",
                    nic.network
                )))
            }
            (None, _) => None,
        };
        self.use_read_cache(vm_id, request.read_cache).await;
        let machine = MachineRef {
            profile_id: request.profile.id.clone(),
            digest: machine_digest(request.profile, request.overrides),
        };
        self.phase(vm_id, StartPhase::Assets);
        // The snapshot is found and checked (engine, machine, disks) the same way for both
        // engines, before anything is downloaded or opened.
        let resuming = match request.resume {
            Some(r) => Some(
                Resuming::find(
                    vm_id,
                    r,
                    &plan,
                    request.profile,
                    request.overrides,
                    files,
                    &*self.host,
                )
                .await?,
            ),
            None => None,
        };
        if plan.engine == EngineKind::Qemu {
            let nic = nic.map(|(nic, port)| (nic.network, QemuNic { port }));
            return self
                .start_qemu(&plan, request, display, machine, resuming.as_ref(), nic)
                .await;
        }
        let nic = nic.map(|(nic, port)| V86Nic {
            model: nic.model,
            mac: nic.mac,
            port,
        });
        let bios_source = assets.bios.as_ref().ok_or(RuntimeError::MissingBios)?;
        let module_url = assets.v86_module.clone().ok_or_else(|| {
            RuntimeError::InvalidInputs(
                "assets.v86Module (the URL of v86's libv86.mjs) is missing".into(),
            )
        })?;
        let wasm_url = assets
            .v86_wasm
            .clone()
            .unwrap_or_else(|| beside(&module_url, "v86.wasm"));
        let bios = self.fetch_asset(vm_id, "bios", bios_source).await?;
        let vga_bios = match &assets.vga_bios {
            Some(s) => Some(self.fetch_asset(vm_id, "vgaBios", s).await?),
            None => None,
        };
        // A resumed guest's kernel is in its memory already.
        let boot_files = if resuming.is_some() {
            (None, None)
        } else {
            (plan.kernel.as_ref(), plan.initrd.as_ref())
        };
        let kernel = match boot_files.0 {
            Some(s) => Some(
                self.read_image(vm_id, "kernel", s, limits.max_kernel_bytes, files)
                    .await?,
            ),
            None => None,
        };
        let initrd = match boot_files.1 {
            Some(s) => Some(
                self.read_image(vm_id, "initrd", s, limits.max_initrd_bytes, files)
                    .await?,
            ),
            None => None,
        };
        let initial_state = match &resuming {
            Some(r) => Some(r.state(&*self.host).await?),
            None => None,
        };

        self.phase(vm_id, StartPhase::Disks);
        let disks = self
            .open_disks(vm_id, &plan, files, persistence, resuming.as_ref())
            .await?;
        self.phase(vm_id, StartPhase::Engine);
        let host: Rc<dyn EngineHost> = self.host.clone();
        let mut objects = Vec::new();
        for d in &disks {
            let dev: Rc<dyn BlockDevice> = d.cow.clone();
            match DiskObject::new(vm_id, &d.id, dev, host.clone()).await {
                Ok(o) => objects.push(o),
                Err(e) => {
                    close_disks(&disks).await;
                    return Err(e);
                }
            }
        }
        let config = V86Config {
            vm_id: vm_id.to_string(),
            module_url,
            wasm_url,
            memory_bytes: plan.memory_bytes,
            bios,
            vga_bios,
            kernel,
            initrd,
            cmdline: plan.cmdline.clone(),
            display,
            initial_state,
            nic,
        };
        running(
            V86Engine::start(config, objects, host).await,
            disks,
            machine,
        )
        .await
    }

    /// Builds the storage stack of every disk of `plan`.
    async fn open_disks(
        &self,
        vm_id: &str,
        plan: &EnginePlan,
        files: &FileMap,
        persistence: Persistence,
        resuming: Option<&Resuming>,
    ) -> Result<Vec<DiskStack>> {
        let mut disks: Vec<DiskStack> = Vec::new();
        for d in &plan.disks {
            let on_progress = self.progress_reporter(vm_id, &d.id);
            let resume = resuming.and_then(|r| r.disk(&d.id));
            let opened = open_disk(
                vm_id,
                d,
                files,
                plan.block_size,
                persistence,
                resume,
                on_progress,
            )
            .await;
            match opened {
                Ok(stack) => disks.push(stack),
                Err(e) => {
                    close_disks(&disks).await;
                    return Err(e);
                }
            }
        }
        Ok(disks)
    }

    /// Starts `plan` on the QEMU engine. Before anything is downloaded it checks that
    /// the page is cross-origin isolated and the browser has Memory64; then it reads the
    /// build's `qemu-build.json` (a few KB) and checks that the build has a module for the
    /// guest's arch that can address its RAM. Only then are the firmware, kernel and disks
    /// opened and the module started (firmware and kernel into the module's filesystem,
    /// disks through the disk channel).
    #[allow(clippy::too_many_arguments)]
    async fn start_qemu(
        &self,
        plan: &EnginePlan,
        request: &StartRequest<'_>,
        display: Option<js_sys::SharedArrayBuffer>,
        machine: MachineRef,
        resuming: Option<&Resuming>,
        nic: Option<(String, QemuNic)>,
    ) -> Result<Rc<RunningVm>> {
        let StartRequest {
            vm_id,
            assets,
            files,
            persistence,
            limits,
            ..
        } = *request;
        check_isolation()?;
        check_memory64(qemu_target().memory64, capabilities::detect().memory64)?;
        let q = plan
            .qemu
            .as_ref()
            .ok_or_else(|| RuntimeError::Engine("the plan has no QEMU part".into()))?;
        let dir = assets.qemu_dir.clone().ok_or_else(|| {
            RuntimeError::InvalidInputs(
                "assets.qemuDir (the URL of a QEMU build: the output directory of \
                 qemuweb-wasm-build or the dist/ of @qemuweb/qemu-wasm) is missing"
                    .into(),
            )
        })?;
        let dir = if dir.ends_with('/') {
            dir
        } else {
            format!("{dir}/")
        };
        let manifest = fetch_bytes(
            "the QEMU build's manifest",
            &format!("{dir}{MANIFEST}"),
            |_, _| {},
        )
        .await?;
        let build = QemuBuild::from_json(&String::from_utf8_lossy(&manifest))?;
        check_memory64(build.requirements.memory64, capabilities::detect().memory64)?;
        let module = build.module_for(q.arch)?;
        module.check_ram(plan.memory_bytes)?;
        if let Some((network, _)) = &nic {
            build.check_netdev(network)?;
        }
        let host_tso = match request.qemu.host_tso {
            Some(tso) => tso,
            None => capabilities::host_keeps_tso().await,
        };
        let args = build.accel_args(&q.args, request.qemu.jit, host_tso)?;
        let worker_url = assets.qemu_worker.clone().unwrap_or_else(|| {
            let here = Reflect::get(&js_sys::global(), &"location".into())
                .ok()
                .and_then(|l| Reflect::get(&l, &"href".into()).ok())
                .and_then(|h| h.as_string())
                .unwrap_or_default();
            beside(&here, "qemu-worker.js")
        });
        let mut mem_files = Vec::new();
        for name in &q.firmware {
            if !build.has_file(name) {
                return Err(RuntimeError::InvalidInputs(format!(
                    "the QEMU build at {dir} has no {name}, which this guest needs"
                )));
            }
            let source = AssetSource::Url {
                url: format!("{dir}{name}"),
            };
            let bytes = self.fetch_asset(vm_id, name, &source).await?;
            mem_files.push((format!("{}/{name}", q.firmware_dir), bytes));
        }
        for (source, path, what, limit) in [
            (
                &plan.kernel,
                &q.kernel_path,
                "kernel",
                limits.max_kernel_bytes,
            ),
            (
                &plan.initrd,
                &q.initrd_path,
                "initrd",
                limits.max_initrd_bytes,
            ),
        ] {
            if let (Some(source), Some(path)) = (source, path) {
                let bytes = self.read_image(vm_id, what, source, limit, files).await?;
                mem_files.push((path.clone(), bytes));
            }
        }
        // QEMU is given its kernel and firmware on a resume too (it loads them before the
        // state replaces the machine's memory). A published state is decoded: QEMU loads
        // the image file itself (bounded by the guest's memory and room for its devices).
        let resume_state = match resuming {
            Some(r) => Some(
                r.raw_state(&*self.host, plan.memory_bytes + MAX_STATE_OVERHEAD)
                    .await?,
            ),
            None => None,
        };
        self.phase(vm_id, StartPhase::Disks);
        let disks = self
            .open_disks(vm_id, plan, files, persistence, resuming)
            .await?;
        self.phase(vm_id, StartPhase::Engine);
        let config = QemuConfig {
            vm_id: vm_id.to_string(),
            worker_url,
            module_url: format!("{dir}{}", module.js),
            wasm_url: format!("{dir}{}", module.wasm),
            args,
            files: mem_files,
            disks: disks
                .iter()
                .zip(&q.disk_paths)
                .map(|(d, path)| QemuDisk {
                    path: path.clone(),
                    dev: d.cow.clone(),
                })
                .collect(),
            window: DEFAULT_WINDOW,
            io_timeout_ms: DEFAULT_TIMEOUT_MS,
            graphics: plan.graphics,
            display,
            resume_state,
            nic: nic.map(|(_, nic)| nic),
        };
        running(
            QemuEngine::start(config, self.host.clone()).await,
            disks,
            machine,
        )
        .await
    }

    async fn fetch_asset(&self, vm_id: &str, what: &str, source: &AssetSource) -> Result<Vec<u8>> {
        match source {
            AssetSource::Bytes { data } if data.is_empty() => Err(RuntimeError::InvalidInputs(
                format!("assets.{what} is empty"),
            )),
            AssetSource::Bytes { data } => Ok(data.clone()),
            AssetSource::Url { url } => {
                let report = self.progress_reporter(vm_id, what);
                fetch_bytes(what, url, |loaded, total| {
                    report(qemuweb_storage::Progress {
                        bytes_fetched: loaded,
                        total: total.unwrap_or(0),
                    })
                })
                .await
            }
        }
    }

    /// Reads a whole kernel or initrd through the same device layer as disks, after
    /// checking the size its source claims against `limit` ([`Limits::whole_len`]):
    /// nothing is read or allocated for a larger one.
    async fn read_image(
        &self,
        vm_id: &str,
        what: &str,
        source: &ImageSource,
        limit: u64,
        files: &FileMap,
    ) -> Result<Vec<u8>> {
        let options = HttpOptions::default()
            .chunk_size(1 << 20)
            .read_ahead(0)
            .cache_chunks(0);
        let report = self.progress_reporter(vm_id, what);
        let (dev, _) = open_source(what, source, files, options, report).await?;
        let len = match Limits::whole_len(what, dev.size(), limit) {
            Ok(len) => len,
            Err(e) => {
                let _ = dev.close().await;
                return Err(e);
            }
        };
        // In pieces, so a large file read from a Blob reports its progress too.
        let mut data = vec![0; len];
        let mut read = Ok(());
        for (i, piece) in data.chunks_mut(1 << 20).enumerate() {
            read = dev.read_at((i as u64) << 20, piece).await;
            if read.is_err() {
                break;
            }
        }
        let _ = dev.close().await;
        read.map_err(|e| RuntimeError::storage(what, e))?;
        Ok(data)
    }

    /// A progress callback sending `progress` events about `what` of VM `vm_id`.
    fn progress_reporter(
        &self,
        vm_id: &str,
        what: &str,
    ) -> impl Fn(qemuweb_storage::Progress) + 'static {
        let host = self.host.clone();
        let (vm_id, what) = (vm_id.to_string(), what.to_string());
        move |p| {
            host.emit(Event::Progress {
                vm_id: vm_id.clone(),
                what: what.clone(),
                loaded: p.bytes_fetched,
                total: (p.total > 0).then_some(p.total),
                total_of: ProgressTotal::FileSize,
            })
        }
    }
}

/// The VM `started` runs, or its disks closed again when the engine did not start.
async fn running<E: Engine + 'static>(
    started: Result<E>,
    disks: Vec<DiskStack>,
    machine: MachineRef,
) -> Result<Rc<RunningVm>> {
    match started {
        Ok(engine) => {
            // A resumed VM runs: what its disks held before goes.
            for d in &disks {
                d.settle_resume(true).await?;
            }
            Ok(Rc::new(RunningVm {
                engine: Rc::new(engine),
                disks,
                machine,
            }))
        }
        Err(e) => {
            close_disks(&disks).await;
            Err(e)
        }
    }
}

/// `name` in the directory of `url`.
fn beside(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_string(),
    }
}

fn not_running(vm_id: &str) -> RuntimeError {
    RuntimeError::OutOfOrder(format!("VM {vm_id:?} is not running"))
}

async fn sync_disks(disks: &[DiskStack]) -> Result<()> {
    for d in disks {
        d.sync().await?;
    }
    Ok(())
}

async fn sync_all(vm: &RunningVm) -> Result<()> {
    vm.engine.flush().await?;
    sync_disks(&vm.disks).await
}

/// Closes every disk; a disk opened on a snapshot's point whose VM never ran goes back to
/// what it held.
async fn close_disks(disks: &[DiskStack]) {
    for d in disks {
        let _ = d.settle_resume(false).await;
        let _ = d.close().await;
    }
}

async fn export(vm: &RunningVm, disk_id: &str, format: ExportFormat) -> Result<Vec<u8>> {
    sync_all(vm).await?;
    let disk =
        vm.disks.iter().find(|d| d.id == disk_id).ok_or_else(|| {
            RuntimeError::InvalidInputs(format!("the VM has no disk {disk_id:?}"))
        })?;
    let mut out = Vec::new();
    let r = match format {
        ExportFormat::Compact => compact::export(&disk.cow, &mut out).await,
        ExportFormat::Qcow2 => {
            let options = Qcow2ExportOptions {
                backing: Some(BackingFile {
                    name: disk.name.clone(),
                    format: disk.format.name().to_string(),
                }),
                cluster_size: None,
            };
            qcow2::export(&disk.cow, &options, &mut out)
                .await
                .map(|_| ())
        }
    };
    r.map_err(|e| RuntimeError::storage(disk_id, e))?;
    Ok(out)
}

/// The most bytes an asset may have (a BIOS is 256 KiB; a kernel comes as an image input,
/// not as an asset).
const MAX_ASSET_BYTES: u64 = 64 << 20;

/// What a QEMU machine state may hold beyond the guest's memory when a published state
/// is decoded: device state (video memory, firmware ROMs) and the image's metadata.
const MAX_STATE_OVERHEAD: u64 = 512 << 20;

/// Fetches `url` whole, reading the body as it arrives: `progress(loaded, total)` hears
/// every piece (`total` from `Content-Length`, when the response has one).
async fn fetch_bytes(
    what: &str,
    url: &str,
    progress: impl Fn(u64, Option<u64>),
) -> Result<Vec<u8>> {
    let err = |reason: String| RuntimeError::Fetch {
        what: what.to_string(),
        url: url.to_string(),
        reason,
    };
    let global: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let response = JsFuture::from(global.fetch_with_str(url))
        .await
        .map_err(|e| err(crate::engine::js_text(&e)))?;
    let response: web_sys::Response = response.unchecked_into();
    if !response.ok() {
        return Err(err(format!("HTTP status {}", response.status())));
    }
    let total = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_big = || err(format!("more than {MAX_ASSET_BYTES} bytes"));
    if total.is_some_and(|t| t > MAX_ASSET_BYTES) {
        return Err(too_big());
    }
    let Some(body) = response.body() else {
        progress(0, total);
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| err("the response body has no default reader".into()))?;
    let mut data = Vec::with_capacity(total.unwrap_or(0) as usize);
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| err(crate::engine::js_text(&e)))?;
        if Reflect::get(&chunk, &"done".into()).is_ok_and(|d| d.is_truthy()) {
            break;
        }
        let value = Reflect::get(&chunk, &"value".into()).unwrap_or(JsValue::UNDEFINED);
        let bytes: Uint8Array = value
            .dyn_into()
            .map_err(|_| err("the response body gave a chunk that is not bytes".into()))?;
        if data.len() as u64 + u64::from(bytes.length()) > MAX_ASSET_BYTES {
            let _ = reader.cancel();
            return Err(too_big());
        }
        let at = data.len();
        data.resize(at + bytes.length() as usize, 0);
        bytes.copy_to(&mut data[at..]);
        progress(data.len() as u64, total);
    }
    Ok(data)
}

/// The `files` object beside a start command: name -> Blob.
fn files_of(value: &JsValue) -> FileMap {
    let mut map = FileMap::new();
    if let Some(obj) = value.dyn_ref::<Object>() {
        for entry in Object::entries(obj).iter() {
            let pair: js_sys::Array = entry.unchecked_into();
            if let (Some(name), Ok(blob)) = (
                pair.get(0).as_string(),
                pair.get(1).dyn_into::<web_sys::Blob>(),
            ) {
                map.insert(name, blob);
            }
        }
    }
    map
}

/// Starts the runtime in this dedicated worker: installs the message handler and sends
/// `ready`. Called by `web/worker.js` after the wasm module is initialised.
#[wasm_bindgen(js_name = workerMain)]
pub fn worker_main() -> std::result::Result<(), JsError> {
    let scope: DedicatedWorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| JsError::new("workerMain must run in a dedicated worker"))?;
    let worker = Rc::new(Worker {
        host: Rc::new(Poster {
            scope: scope.clone(),
        }),
        session: RefCell::new(Session::new()),
        vm: RefCell::new(None),
        pending_stop: RefCell::new(None),
    });
    let handler =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            worker.on_message(e.data());
        });
    scope.set_onmessage(Some(handler.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    handler.forget();
    post(
        &scope,
        &Event::Ready {
            version: PROTOCOL_VERSION,
            engines: AVAILABLE_ENGINES.to_vec(),
        },
    );
    Ok(())
}
