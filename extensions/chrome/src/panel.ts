// The panel: lists the inspected page's QemuWeb VMs and shows the selected one's serial
// console (xterm.js), disks and events, with stop, reset, export overlay and save state.
// Everything it shows comes from the page, so it is written as text, never as HTML.
import type { DevtoolsDisk, DevtoolsEvent, PageBody, PanelCommand, PanelMessage, DevtoolsVm } from "qemuweb-runtime";
import { PANEL_PORT_PREFIX, SOURCE, VERSION, type ToPage, type ToPanel } from "./relay.js";

declare global {
  interface Window {
    /** xterm.js (its UMD build, loaded by panel.html). */
    Terminal: typeof import("@xterm/xterm").Terminal;
  }
}

const tabId = Number(new URLSearchParams(location.search).get("tabId"));
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

let port: chrome.runtime.Port | null = null;
let nextId = 1;
let vms: DevtoolsVm[] = [];
let selected: string | null = null;
let listedAt = Date.now();
/** Whether the page's hook answered. */
let answered = false;
const pending = new Map<number, string>();

const term = new window.Terminal({ convertEol: false, rows: 16, scrollback: 2000, fontSize: 12 });
term.open($("console"));
term.onData((data) => {
  if (selected) send({ type: "serialIn", vmId: selected, data });
});

function status(text: string, error = false): void {
  const s = $("status");
  s.textContent = text;
  s.className = error ? "error" : "muted";
}

function send(command: PanelCommand, what?: string): number {
  const id = nextId++;
  if (what) pending.set(id, what);
  const message: PanelMessage = { source: SOURCE, direction: "panel", version: VERSION, id, command };
  connect().postMessage({ kind: "toPage", message } satisfies ToPage);
  return id;
}

function connect(): chrome.runtime.Port {
  if (port) return port;
  const p = chrome.runtime.connect({ name: `${PANEL_PORT_PREFIX}${tabId}` });
  p.onMessage.addListener(onMessage);
  p.onDisconnect.addListener(() => {
    if (port === p) port = null;
    setTimeout(() => { connect(); send({ type: "list" }); }, 200);
  });
  port = p;
  return p;
}

function onMessage(m: ToPanel): void {
  if (m.kind === "noPage") {
    setVms([]);
    status("no page with QemuWeb's content script in this tab");
    return;
  }
  if (m.kind === "pageConnected") {
    send({ type: "list" });
    return;
  }
  const message = m.message;
  if (message?.source !== SOURCE || message.version !== VERSION) {
    status(`the page speaks another version of the DevTools messages (${String(message?.version)})`, true);
    return;
  }
  onBody(message.body);
}

function onBody(body: PageBody): void {
  switch (body.type) {
    case "hello":
      send({ type: "list" });
      break;
    case "vms":
      answered = true;
      status("connected to the page's QemuClient");
      setVms(body.vms);
      break;
    case "serial":
      if (body.vmId === selected) {
        if (body.id !== undefined) term.reset();
        term.write(Uint8Array.from(body.data, (c) => c.charCodeAt(0)));
      }
      break;
    case "events":
      if (body.vmId === selected) addEvents(body.events, body.id !== undefined);
      break;
    case "disks":
      if (body.vmId === selected) showDisks(body.disks);
      break;
    case "done": {
      const what = pending.get(body.id);
      pending.delete(body.id);
      if (what) result(`${what}: done${body.detail ? ` (${body.detail})` : ""}`);
      break;
    }
    case "failure": {
      const what = body.id !== undefined ? pending.get(body.id) : undefined;
      if (body.id !== undefined) pending.delete(body.id);
      result(`${what ?? "message"} failed: ${body.code}: ${body.message}`, true);
      break;
    }
  }
}

function result(text: string, error = false): void {
  const r = $("result");
  r.textContent = text;
  r.className = error ? "error" : "muted";
}

function uptime(ms: number | undefined): string {
  if (ms === undefined) return "";
  const s = Math.floor((ms + (Date.now() - listedAt)) / 1000);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m} min ${s % 60} s` : `${s} s`;
}

function setVms(list: DevtoolsVm[]): void {
  vms = list;
  listedAt = Date.now();
  if (selected && !vms.some((v) => v.vmId === selected)) select(null);
  if (!selected && vms.length > 0) select(vms[0].vmId);
  renderVms();
}

function renderVms(): void {
  const body = $("vms").querySelector("tbody")!;
  body.replaceChildren(...vms.map((v) => {
    const tr = document.createElement("tr");
    tr.dataset.vmId = v.vmId;
    if (v.vmId === selected) tr.className = "selected";
    for (const text of [v.vmId, v.engine ?? "", v.profile, v.state, uptime(v.uptimeMs)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    tr.addEventListener("click", () => select(v.vmId));
    return tr;
  }));
  $("empty").hidden = vms.length > 0;
  $("vm").hidden = selected === null;
  const vm = vms.find((v) => v.vmId === selected);
  if (vm) {
    $("vm-title").textContent = `${vm.vmId} (${vm.state})`;
    $("snapshot").hidden = !vm.snapshots;
    const running = vm.state === "running";
    for (const id of ["stop", "reset", "snapshot", "export"]) $<HTMLButtonElement>(id).disabled = !running;
  }
}

function select(vmId: string | null): void {
  if (vmId === selected) return;
  selected = vmId;
  term.reset();
  $("events").replaceChildren();
  $("disks").querySelector("tbody")!.replaceChildren();
  result("");
  if (vmId) {
    send({ type: "serial", vmId });
    send({ type: "events", vmId });
    send({ type: "disks", vmId });
  }
  renderVms();
}

function addEvents(events: DevtoolsEvent[], replace: boolean): void {
  const list = $("events");
  if (replace) list.replaceChildren();
  for (const e of events) {
    const li = document.createElement("li");
    li.textContent = `${new Date(e.at).toLocaleTimeString()} ${e.kind}: ${e.text}`;
    if (e.error) li.className = "error";
    list.append(li);
  }
  while (list.children.length > 200) list.firstElementChild!.remove();
  list.scrollTop = list.scrollHeight;
}

const bytes = (n: number | undefined) =>
  n === undefined ? "?" : n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;

function showDisks(disks: DevtoolsDisk[]): void {
  const rows = disks.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.diskId = d.diskId;
    const read = d.bytesRead === undefined ? "unavailable" : `${bytes(d.bytesRead)} of ${bytes(d.imageSize)}`;
    const overlay = d.overlayBlocks === undefined ? "none stored" : `${d.overlayBlocks} block${d.overlayBlocks === 1 ? "" : "s"}, ${bytes(d.overlayBytes)}`;
    for (const [text, cls] of [[d.diskId, "disk"], [read, "read"], [overlay, "overlay"], [d.base ?? "", "base"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      td.className = cls;
      tr.append(td);
    }
    return tr;
  });
  $("disks").querySelector("tbody")!.replaceChildren(...rows);
  const select = $<HTMLSelectElement>("export-disk");
  const chosen = select.value;
  select.replaceChildren(...disks.map((d) => new Option(d.diskId, d.diskId)));
  if (disks.some((d) => d.diskId === chosen)) select.value = chosen;
}

$("stop").addEventListener("click", () => selected && send({ type: "stop", vmId: selected }, "stop"));
$("reset").addEventListener("click", () => selected && send({ type: "reset", vmId: selected }, "reset"));
$("snapshot").addEventListener("click", () => selected && send({ type: "saveSnapshot", vmId: selected }, "save state"));
$("export").addEventListener("click", () => {
  const diskId = $<HTMLSelectElement>("export-disk").value;
  const format = $<HTMLSelectElement>("export-format").value as "compact" | "qcow2";
  if (selected && diskId) send({ type: "exportOverlay", vmId: selected, diskId, format }, "export overlay");
});

// Disks and uptimes change on their own: look again every 2 s while a VM is shown.
setInterval(() => {
  if (selected && !document.hidden) send({ type: "disks", vmId: selected });
  if (!answered) status("no answer from the page: it has no QemuClient made with { devtools: true }");
  renderVms();
}, 2000);

if (!Number.isInteger(tabId)) {
  status("no tabId: open the panel from DevTools", true);
} else {
  send({ type: "list" });
}
