// QemuWeb's VM launcher: one page, one VM at a time.
//
// - @qemuweb/runtime's QemuClient boots the VM in a worker (v86 engine for i386 profiles);
// - the guest's first serial port is an xterm.js terminal, its screen a canvas (graphics
//   profiles, cross-origin isolated pages only);
// - the runtime keeps the disk's writes in IndexedDB by VM id and disk id; this page derives
//   the VM id from the disk (its URL, or a file's name and size), so a reload, or picking
//   the same disk again, finds the changes; QemuClient's `overlays` shows how much is stored
//   and `deleteOverlays` forgets it ("Reset disk");
// - a disk published with `qemuweb prepare --boot-state` comes with its VM's saved state
//   (`?bootState=boot-state/boot-state.json`): Start resumes it at the prompt instead of
//   booting (each start goes back to it), unless "resume the published boot state" is off;
// - `?engine=qemu&qemuDir=qemu/` runs the VM on the QEMU engine, its build (qemu-build.json,
//   the modules, their firmware) served from that directory (`qemuweb prepare --app
//   --engine qemu` copies it in): a boot state resumes only on the engine that saved it.
import initRuntime, {
  QemuClient,
  QemuError,
  defaultProfiles,
  type ImageSource,
  type QemuEventOf,
  type RuntimeCapabilities,
  type VmInputs,
  type VmProfile,
} from "@qemuweb/runtime";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import "./style.css";
// v86 is an npm dependency of this app; Vite emits its module and wasm as assets.
import v86Module from "v86/build/libv86.mjs?url";
import v86Wasm from "v86/build/v86.wasm?url";

/** SeaBIOS, copied into public/bios/ by `npm run bios` (Debian's seabios package). */
const BIOS = "./bios/bios-256k.bin";
const VGA_BIOS = "./bios/vgabios-stdvga.bin";
const SAVED = "qemuweb-vm-launcher";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  form: $<HTMLFormElement>("setup"),
  profile: $<HTMLSelectElement>("profile"),
  profileHelp: $("profile-help"),
  cmdline: $<HTMLInputElement>("cmdline"),
  start: $<HTMLButtonElement>("start"),
  stop: $<HTMLButtonElement>("stop"),
  reset: $<HTMLButtonElement>("reset"),
  exportOverlay: $<HTMLButtonElement>("export"),
  resetDisk: $<HTMLButtonElement>("reset-disk"),
  localEcho: $<HTMLInputElement>("local-echo"),
  resumeLabel: $("resume-label"),
  resumeState: $<HTMLInputElement>("resume-state"),
  state: $("state"),
  warnings: $("warnings"),
  progress: $<HTMLProgressElement>("progress"),
  progressText: $("progress-text"),
  persistence: $("persistence"),
  error: $("error"),
  screen: $<HTMLCanvasElement>("screen"),
  display: $("display"),
  fullscreen: $<HTMLButtonElement>("fullscreen"),
  screenshot: $<HTMLButtonElement>("screenshot"),
  ctrlAltDel: $<HTMLButtonElement>("ctrl-alt-del"),
  pointerLock: $<HTMLInputElement>("pointer-lock"),
};

/** A file-or-URL input (a fieldset with a URL field, a file input, and drag-and-drop). */
class SourcePicker {
  file: File | null = null;
  private readonly url: HTMLInputElement;

  constructor(readonly id: string, onChange: () => void) {
    const box = $<HTMLFieldSetElement>(id);
    this.url = $<HTMLInputElement>(`${id}-url`);
    const input = $<HTMLInputElement>(`${id}-file`);
    this.url.addEventListener("change", () => {
      this.file = null;
      input.value = "";
      onChange();
    });
    const take = (f: File | undefined) => {
      if (!f) return;
      this.file = f;
      this.url.value = "";
      onChange();
    };
    input.addEventListener("change", () => take(input.files?.[0]));
    box.addEventListener("dragover", (e) => {
      e.preventDefault();
      box.classList.add("dragover");
    });
    box.addEventListener("dragleave", () => box.classList.remove("dragover"));
    box.addEventListener("drop", (e) => {
      e.preventDefault();
      box.classList.remove("dragover");
      input.value = "";
      take(e.dataTransfer?.files[0]);
    });
  }

  get urlValue(): string {
    return this.url.value.trim();
  }

  set urlValue(v: string) {
    this.url.value = v;
  }

  /** The source for `VmInputs`, with the `files` entry a local file needs; null if empty. */
  source(files: Record<string, Blob>): ImageSource | null {
    if (this.file) {
      // The name is also what an exported qcow2 overlay names as its backing file.
      const path = this.file.name;
      files[path] = this.file;
      return { kind: "file", path };
    }
    return this.urlValue ? { kind: "url", url: new URL(this.urlValue, location.href).href } : null;
  }

  /** What identifies the image for its overlay: the URL, or a file's name and size. */
  identity(): string | null {
    if (this.file) return `file:${this.file.name}:${this.file.size}`;
    return this.urlValue ? `url:${new URL(this.urlValue, location.href).href}` : null;
  }
}

const term = new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000 });
const fit = new FitAddon();
term.loadAddon(fit);
term.open($("terminal"));
fit.fit();
addEventListener("resize", () => fit.fit());

let client: QemuClient;
let caps: RuntimeCapabilities;
let profiles: VmProfile[] = [];
/** The VM that runs (or last ran) and its disk's identity. */
let vmId: string | null = null;
let running = false;
const disk = new SourcePicker("disk", () => void diskChanged());
const kernel = new SourcePicker("kernel", () => {});
/** The published boot state of the preset disk (`?bootState=`), and the memory it was saved with (`?memory=`). */
let bootState: { url: string; disk: string; memoryMiB?: number } | null = null;
/** The engine the page asks for (`?engine=`); by default the runtime's choice for the profile. */
let engine: "v86" | "qemu" | undefined;
const initrd = new SourcePicker("initrd", () => {});

/** While a VM runs, the persistence line follows the runtime's syncs (every second). */
let persistenceTimer: ReturnType<typeof setInterval> | undefined;

function setState(state: string): void {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  running = state === "running" || state === "starting";
  clearInterval(persistenceTimer);
  if (state === "running") persistenceTimer = setInterval(() => void refreshPersistence(), 3000);
  ui.start.disabled = running;
  ui.stop.disabled = !running;
  ui.reset.disabled = state !== "running";
  ui.exportOverlay.disabled = state !== "running";
  ui.screenshot.disabled = ui.ctrlAltDel.disabled = state !== "running";
  ui.profile.disabled = running;
}

function showError(e: unknown): void {
  if (e instanceof QemuError) ui.error.textContent = `${e.code}: ${e.message}`;
  else if (e instanceof Error) ui.error.textContent = `${e.name}: ${e.message}`;
  else ui.error.textContent = String(e);
}

function warn(code: string, message: string, fatal = false): void {
  const li = document.createElement("li");
  li.dataset.code = code;
  li.className = fatal ? "fatal" : "";
  li.textContent = message;
  ui.warnings.append(li);
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** The VM id of a disk: `vm-` and 16 hex digits of the SHA-256 of its identity. */
async function vmIdOf(identity: string): Promise<string> {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(identity)));
  return `vm-${Array.from(hash.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Shows how much of the disk's changes IndexedDB holds, and whether storage is persistent. */
async function showPersistence(): Promise<void> {
  const identity = disk.identity();
  if (!identity) {
    ui.persistence.textContent = "Pick a disk: its changes will be kept in this browser.";
    delete ui.persistence.dataset.blocks;
    return;
  }
  const id = await vmIdOf(identity);
  // What IndexedDB holds for the boot disk (also while the VM runs and writes to it).
  const stored = (await client.overlays(id)).find((o) => o.diskId === "disk0");
  const blocks = stored?.blocks ?? 0;
  const persisted = (await navigator.storage?.persisted?.()) ?? false;
  ui.persistence.dataset.blocks = String(blocks);
  ui.persistence.dataset.vmId = id;
  ui.persistence.textContent =
    (stored && blocks
      ? `Persisted: ${bytes(stored.bytes)} of changes to this disk (${blocks} blocks) are kept in IndexedDB as VM ${id}.`
      : `No changes to this disk are stored yet; they will be kept in IndexedDB as VM ${id}.`) +
    (persisted ? " Browser storage is persistent." : " The browser may evict them under storage pressure.");
}

let persistenceCheck: Promise<void> = Promise.resolve();
/** Refreshes the persistence line; calls are serialised so none overlaps a start. */
function refreshPersistence(): Promise<void> {
  persistenceCheck = persistenceCheck.then(showPersistence).catch(showError);
  return persistenceCheck;
}

function saveForm(): void {
  localStorage.setItem(SAVED, JSON.stringify({ profile: ui.profile.value, disk: disk.urlValue, file: disk.file?.name }));
}

async function diskChanged(): Promise<void> {
  ui.error.textContent = "";
  saveForm();
  await refreshPersistence();
}

function profileChanged(): void {
  const p = profiles.find((p) => p.id === ui.profile.value);
  if (!p) return;
  if (p.requiresKernel) $<HTMLDetailsElement>("kernel-boot").open = true;
  ui.profileHelp.textContent = [p.description, p.kernelHelpText ?? ""].filter(Boolean).join(" ");
  saveForm();
}

async function start(): Promise<void> {
  ui.error.textContent = "";
  const profile = profiles.find((p) => p.id === ui.profile.value)!;
  const files: Record<string, Blob> = {};
  const inputs: VmInputs = {};
  const diskSource = disk.source(files);
  if (diskSource) inputs.disk = { source: diskSource };
  const kernelSource = kernel.source(files);
  if (kernelSource) {
    inputs.kernel = kernelSource;
    const initrdSource = initrd.source(files);
    if (initrdSource) inputs.initrd = initrdSource;
    if (ui.cmdline.value.trim()) inputs.kernelCmdline = ui.cmdline.value.trim();
  }
  if (!diskSource && !kernelSource) throw new Error("pick a disk image (or a kernel)");
  await persistenceCheck;
  vmId = await vmIdOf(disk.identity() ?? `kernel:${kernel.identity()}`);
  // Ask the browser not to evict the overlay (Chromium decides without a prompt).
  void navigator.storage?.persist?.();
  term.reset();
  ui.display.hidden = !(caps.crossOriginIsolated && profile.supportsGraphics);
  // The canvas takes the keyboard while it has the focus (a click gives it), and the
  // pointer over it; "lock the pointer" suits guests with a mouse but no tablet.
  if (!ui.display.hidden) client.attachDisplay(vmId, ui.screen, { input: { pointerLock: ui.pointerLock.checked } });
  // The published state belongs to the preset disk, with the memory it was saved with.
  const resume = bootState && ui.resumeState.checked && !disk.file && disk.urlValue === bootState.disk;
  const overrides = bootState?.memoryMiB ? { memoryMiB: bootState.memoryMiB } : undefined;
  setState("starting");
  const options = { files, progress: showProgress, overrides, engine };
  try {
    try {
      await client.startVm(vmId, profile, inputs, {
        ...options,
        resume: resume ? { kind: "published", url: bootState!.url } : undefined,
      });
    } catch (e) {
      // A published state that is damaged, of another image or machine, or not fetched
      // (snapshot-corrupt, snapshot-mismatch, fetch, ...) changes nothing: boot cold.
      if (!resume) throw e;
      const code = e instanceof QemuError ? e.code : "page";
      const message = `The published boot state cannot be resumed (${code}: ${e instanceof Error ? e.message : String(e)}); booting cold.`;
      console.warn(message);
      warn("boot-state", message);
      await client.startVm(vmId, profile, inputs, options);
    }
  } catch (e) {
    setState("failed");
    throw e;
  }
  setState("running");
  if (ui.display.hidden) term.focus();
  else ui.screen.focus();
}

/** Saves what the VM's screen shows as a PNG file. */
async function screenshot(): Promise<void> {
  if (!vmId) return;
  const png = await client.screenshot(vmId);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(png);
  a.download = `${vmId}-${new Date().toISOString().replace(/[:.]/g, "-")}.png`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/** In fullscreen the canvas is scaled to fit the screen, keeping the guest's aspect. */
function fitScreen(): void {
  if (document.fullscreenElement !== ui.display) {
    ui.screen.style.width = ui.screen.style.height = "";
    return;
  }
  const scale = Math.min(innerWidth / ui.screen.width, innerHeight / ui.screen.height);
  ui.screen.style.width = `${Math.floor(ui.screen.width * scale)}px`;
  ui.screen.style.height = `${Math.floor(ui.screen.height * scale)}px`;
}
document.addEventListener("fullscreenchange", () => {
  fitScreen();
  if (document.fullscreenElement) ui.screen.focus();
});
addEventListener("resize", fitScreen);
// The guest changes its screen's size (the canvas's width and height) when it switches modes.
new MutationObserver(fitScreen).observe(ui.screen, { attributes: true, attributeFilter: ["width", "height"] });

async function stop(): Promise<void> {
  if (!vmId) return;
  setState("stopping");
  await client.stopVm(vmId);
  setState("stopped");
  await refreshPersistence();
}

async function resetDisk(): Promise<void> {
  const identity = disk.identity();
  if (!identity) return;
  if (running) await stop();
  await client.deleteOverlays(await vmIdOf(identity));
  await refreshPersistence();
}

async function exportOverlay(): Promise<void> {
  if (!vmId) return;
  const data = await client.exportOverlay(vmId, "disk0", "qcow2");
  // The qcow2 names the image as its backing file: keep both in one directory.
  const name = (disk.file?.name ?? new URL(disk.urlValue, location.href).pathname.split("/").pop()) || "disk";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([data as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }));
  a.download = `${name.replace(/\.(qcow2?|img|raw)$/, "")}.overlay.qcow2`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/** Shows a start's steps and how much of a file was read. */
function showProgress(e: QemuEventOf<"phase"> | QemuEventOf<"progress">): void {
  if (e.type === "phase") {
    ui.progress.max = e.steps;
    ui.progress.value = e.step - 1;
    ui.progressText.textContent = `starting: ${e.phase} (step ${e.step} of ${e.steps})`;
    return;
  }
  // `total` is the file's size (for a qcow2 image not its disk size), when known.
  ui.progress.max = e.total ?? (e.loaded || 1);
  ui.progress.value = e.loaded;
  ui.progressText.textContent = `${e.what}: ${bytes(e.loaded)}${e.total !== undefined ? ` of ${bytes(e.total)}` : ""} read`;
}

/** Runs a button's action, showing its error. */
function action(button: HTMLElement, f: () => Promise<void>): void {
  button.addEventListener("click", (e) => {
    e.preventDefault();
    f().catch(showError);
  });
}

async function checkBios(): Promise<void> {
  const r = await fetch(BIOS, { method: "HEAD" }).catch(() => null);
  if (!r?.ok) {
    warn("missing-bios", `SeaBIOS is not at ${BIOS}: run \`npm run bios\` (it copies Debian's seabios package) before building, or put bios-256k.bin and vgabios-stdvga.bin in public/bios/.`, true);
  }
}

async function main(): Promise<void> {
  await initRuntime();
  // Query parameters (?profile=ID&disk=URL&echo=1...) win over what the last visit chose.
  const params = new URLSearchParams(location.search);
  const engineParam = params.get("engine");
  engine = engineParam === "qemu" || engineParam === "v86" ? engineParam : undefined;
  const qemuDir = params.get("qemuDir");
  client = new QemuClient({
    assets: {
      v86Module: new URL(v86Module, location.href).href,
      v86Wasm: new URL(v86Wasm, location.href).href,
      bios: { kind: "url", url: new URL(BIOS, location.href).href },
      vgaBios: { kind: "url", url: new URL(VGA_BIOS, location.href).href },
      ...(qemuDir ? { qemuDir: new URL(qemuDir, location.href).href } : {}),
    },
  });
  caps = await client.init();
  for (const issue of caps.issues) {
    const fix = issue.code === "cross-origin-isolation"
      ? " This app ships public/_headers (Netlify, Cloudflare Pages) and nginx.conf that do it; `npm run dev` and `npm run preview` do too."
      : "";
    warn(issue.code, issue.message + fix, issue.fatal);
  }
  if (!caps.crossOriginIsolated) warn("no-display", "The VM's screen needs cross-origin isolation: only the serial console works.");
  await checkBios();

  const decoder = new TextDecoder();
  client.on("serialOut", (e) => term.write(decoder.decode(e.data, { stream: true })));
  // A disk is read as the guest needs it: its progress goes on after the start.
  // Fetching and restoring a boot state.
  client.on("snapshotProgress", (e) => {
    ui.progress.max = e.total ?? (e.loaded || 1);
    ui.progress.value = e.loaded;
    ui.progressText.textContent = `boot state (${e.operation}): ${bytes(e.loaded)}${e.total !== undefined ? ` of ${bytes(e.total)}` : ""}`;
  });
  client.on("progress", (e) => {
    if (e.what.startsWith("disk")) showProgress(e);
  });
  client.on("error", (e) => showError(new Error(`${e.code}: ${e.message}`)));
  client.on("stopped", (e) => {
    setState(e.reason === "error" ? "failed" : "stopped");
    void refreshPersistence();
  });
  term.onData((data) => {
    if (!vmId || !running) return;
    client.sendSerialIn(vmId, data);
    if (ui.localEcho.checked) term.write(data.replace(/\r/g, "\r\n"));
  });

  profiles = defaultProfiles();
  for (const p of profiles) ui.profile.append(new Option(`${p.name} (${p.arch}, ${p.machine})`, p.id));
  const saved = JSON.parse(localStorage.getItem(SAVED) ?? "{}") as { profile?: string; disk?: string; file?: string };
  ui.profile.value = params.get("profile") ?? saved.profile ?? "linux-i386-pc-nographic";
  disk.urlValue = params.get("disk") ?? saved.disk ?? "";
  ui.localEcho.checked = params.get("echo") === "1";
  const stateParam = params.get("bootState");
  if (stateParam && disk.urlValue) {
    const memory = Number(params.get("memory"));
    bootState = {
      url: new URL(stateParam, location.href).href,
      disk: disk.urlValue,
      memoryMiB: Number.isInteger(memory) && memory > 0 ? memory : undefined,
    };
    ui.resumeLabel.hidden = false;
  }
  if (!disk.urlValue && saved.file) ui.persistence.textContent = `Pick ${saved.file} again to boot it with its saved changes.`;
  ui.profile.addEventListener("change", profileChanged);
  profileChanged();
  ui.form.addEventListener("submit", (e) => {
    e.preventDefault();
    start().catch(showError);
  });
  action(ui.stop, stop);
  action(ui.reset, () => client.resetVm(vmId!));
  action(ui.resetDisk, resetDisk);
  action(ui.exportOverlay, exportOverlay);
  action(ui.screenshot, screenshot);
  action(ui.fullscreen, () => ui.display.requestFullscreen());
  action(ui.ctrlAltDel, () => client.sendCtrlAltDel(vmId!));
  setState("idle");
  if (disk.urlValue) await refreshPersistence();
  document.body.dataset.ready = "true";
}

main().catch((e) => {
  showError(e);
  document.body.dataset.ready = "failed";
});
