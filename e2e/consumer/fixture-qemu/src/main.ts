// A consumer of @qemuweb/runtime and @qemuweb/qemu-wasm, written only against the generated
// declarations: it boots the x86 test guest on the x86_64 profile on the QEMU engine (the
// wasm64 qemu-system-x86_64 of @qemuweb/qemu-wasm, served from public/qemu/ as
// assets.qemuDir) from a qcow2 image, and reports through `window.consumer`.
import initRuntime, {
  QemuClient,
  defaultProfiles,
  qemuWorkerUrl,
  type RuntimeCapabilities,
  type VmProfile,
} from "@qemuweb/runtime";

interface Consumer {
  caps?: RuntimeCapabilities;
  serial: string;
  errors: string[];
  engine?: string;
  qemuWorkerUrl: string;
  send(line: string): void;
}

declare global {
  interface Window {
    consumer: Consumer;
  }
}

const consumer: Window["consumer"] = {
  serial: "",
  errors: [],
  qemuWorkerUrl,
  send: (line) => client.sendSerialIn("vm", `${line}\r`),
};
window.consumer = consumer;

await initRuntime();
const client = new QemuClient({ assets: { qemuDir: "/qemu/" } });
const decoder = new TextDecoder();
client.on("serialOut", (e) => {
  consumer.serial += decoder.decode(e.data, { stream: true });
  document.getElementById("serial")!.textContent = consumer.serial;
});
client.on("started", (e) => {
  consumer.engine = e.engine;
});
client.on("error", (e) => consumer.errors.push(`${e.code}: ${e.message}`));
try {
  consumer.caps = await client.init();
  // ?profile= picks another x86 profile (linux-i386-pc-nographic for a wasm32 build).
  const id = new URLSearchParams(location.search).get("profile") ?? "linux-x86_64-pc-nographic";
  const profile = defaultProfiles().find((p: VmProfile) => p.id === id)!;
  await client.startVm("vm", profile, { disk: { source: { kind: "url", url: "/images/x86-bios.qcow2" } } }, { engine: "qemu" });
  document.title = "started";
} catch (e) {
  consumer.errors.push(String(e));
  document.title = "failed";
}
