// The Debian disks in the test page (e2e/runtime/page.html): where the wasm64 QEMU module is,
// serving the disks, starting them through QemuClient and the console interface of `steps`.
import { copyFileSync, cpSync, existsSync, linkSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The QEMU binaries that can run each Debian arch, preferred first. */
export const QEMU_BINARIES = {
  amd64: ['qemu-system-x86_64'],
  arm64: ['qemu-system-aarch64'],
  // An i386 guest runs on qemu-system-x86_64 too (-M pc -cpu qemu32).
  i386: ['qemu-system-i386', 'qemu-system-x86_64'],
};

/** The module directories, searched in order: QEMUWEB_QEMU64_DIR, QEMUWEB_QEMU_DIR. */
export const qemuDirs = () => [process.env.QEMUWEB_QEMU64_DIR, process.env.QEMUWEB_QEMU_DIR].filter(Boolean);

/** The files the QEMU engine is given for `binary`. */
export function qemuFiles(binary) {
  const firmware = binary === 'qemu-system-aarch64' ? [] : ['bios-256k.bin', 'vgabios-stdvga.bin', 'kvmvapic.bin', 'linuxboot_dma.bin'];
  return [`${binary}.js`, `${binary}.wasm`, ...firmware];
}

/** Whether `dir` holds a module for 64-bit guests (its qemu-build.json says wasm64/Memory64). */
function is64(dir) {
  const info = join(dir, 'qemu-build.json');
  return existsSync(info) && /wasm64|memory64/i.test(readFileSync(info, 'utf8'));
}

/** The module for `arch`: { dir, binary }, or { missing: why }. */
export function qemuModule(arch) {
  const dirs = qemuDirs();
  if (!dirs.length) return { missing: 'neither QEMUWEB_QEMU64_DIR nor QEMUWEB_QEMU_DIR is set (scripts/build-qemu builds it)' };
  const tried = [];
  for (const dir of dirs) {
    for (const binary of QEMU_BINARIES[arch]) {
      const gone = qemuFiles(binary).filter((f) => !existsSync(join(dir, f)));
      if (!gone.length && (arch === 'i386' || is64(dir))) return { dir, binary };
      tried.push(gone.length ? `${dir} lacks ${gone.join(', ')}` : `${dir}/qemu-build.json does not describe a wasm64 (Memory64) build`);
    }
  }
  return { missing: tried.join('; ') };
}

/** The TCG of the module for `arch` as its qemu-build.json says ("jit", "interpreter"), or "unknown". */
export function qemuTcg(arch) {
  const { dir } = qemuModule(arch);
  if (!dir || !existsSync(join(dir, 'qemu-build.json'))) return 'unknown';
  return JSON.parse(readFileSync(join(dir, 'qemu-build.json'), 'utf8')).tcg ?? 'interpreter';
}

/** Why no module can run `arch`, or null. */
export const qemuMissing = (arch) => qemuModule(arch).missing ?? null;

/** Engine assets: the build of the module for `arch`, copied whole under /qemu-ARCH/ of the web root. */
export function qemuAssets(arch) {
  return qemuModule(arch).binary ? { qemuDir: `./qemu-${arch}/` } : undefined;
}

/**
 * Puts the disk of `arch` (and its kernel and initramfs) under /ARCH/ of the image server
 * (hard links into the cache where possible; the image is only read), and the QEMU build with
 * a module for it under /qemu-ARCH/ of the web root when there is one (the runtime reads its
 * qemu-build.json and picks the module for the guest's arch).
 */
export function publish(env, arch, d) {
  const dir = join(env.imageRoot, arch);
  mkdirSync(dir, { recursive: true });
  for (const [from, name] of [[d.disk, 'disk.qcow2'], [d.kernel, 'vmlinuz'], [d.initrd, 'initrd.img']]) {
    try {
      linkSync(from, join(dir, name));
    } catch {
      copyFileSync(from, join(dir, name));
    }
  }
  const module = qemuModule(arch);
  if (module.binary) cpSync(module.dir, join(env.webRoot, `qemu-${arch}`), { recursive: true });
}

/** The VM inputs of a published disk: the qcow2 by URL; arm64 boots its kernel with -kernel. */
export function debianInputs(baseUrl, arch, boot, { check }) {
  const inputs = { disk: { source: { kind: 'url', url: `${baseUrl}/${arch}/disk.qcow2` }, format: 'qcow2' } };
  if (boot.bootloader === 'none') {
    Object.assign(inputs, {
      kernel: { kind: 'url', url: `${baseUrl}/${arch}/vmlinuz` },
      initrd: { kind: 'url', url: `${baseUrl}/${arch}/initrd.img` },
      kernelCmdline: check ? boot.cmdlineCheck : boot.cmdline,
    });
  }
  return inputs;
}

/**
 * Starts the disk of `arch` as `vm` on the QEMU engine (or `engine`) in the page's client;
 * `qemu` is startVm's QEMU options (`{jit: false}`: the interpreter of a JIT build).
 */
export function startDebian(page, env, arch, d, vm, { check = false, engine = 'qemu', qemu } = {}) {
  const inputs = debianInputs(env.images.url, arch, d.boot, { check });
  return page.evaluate(async ([vm, profile, inputs, assets, engine, qemu]) => {
    window.client = engine === 'qemu' ? makeClient({ workerUrl: './pkg/worker.js', assets }) : makeClient();
    await window.client.init();
    return attempt(() => window.client.startVm(vm, profiles[profile], inputs, { engine, qemu }));
  }, [vm, d.boot.profile, inputs, qemuAssets(arch), engine, qemu]);
}

/** The console interface of `steps` over `vm` in the page (serial as the page records it). */
export function pageIo(page, vm) {
  return {
    text: () => page.evaluate((vm) => window.serial[vm] ?? '', vm),
    waitFor: (text, ms, from) => page.evaluate(([vm, text, from, ms]) => waitSerial(vm, text, from, ms), [vm, text, from, ms]),
    send: (text) => page.evaluate(([vm, text]) => window.client.sendSerialIn(vm, text), [vm, text]),
  };
}

/**
 * The QEMU engine's last `execution` event for `vm` (its mode and what the JIT compiled), as
 * e2e/runtime/page.html records them; null before the first.
 */
export function executionStats(page, vm) {
  return page.evaluate((vm) => events.filter((e) => e.type === 'execution' && e.vmId === vm).at(-1)?.args[0] ?? null, vm);
}
