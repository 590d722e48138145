// The Debian disks in the test page (e2e/runtime/page.html): where the wasm64 QEMU module is,
// serving the disks, starting them through QemuClient and the console interface of `steps`.
import { copyFileSync, existsSync, linkSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The QEMU binary of each Debian arch. */
export const QEMU_BINARY = { amd64: 'qemu-system-x86_64', arm64: 'qemu-system-aarch64', i386: 'qemu-system-i386' };

/** The module directory: QEMUWEB_QEMU64_DIR, else QEMUWEB_QEMU_DIR (a qemuweb-wasm-build output). */
export const qemu64Dir = () => process.env.QEMUWEB_QEMU64_DIR || process.env.QEMUWEB_QEMU_DIR;

/** The files the QEMU engine is given for `arch`. */
export function qemuFiles(arch) {
  const bin = QEMU_BINARY[arch];
  const firmware = arch === 'arm64' ? [] : ['bios-256k.bin', 'vgabios-stdvga.bin', 'kvmvapic.bin', 'linuxboot_dma.bin'];
  return [`${bin}.js`, `${bin}.wasm`, ...firmware];
}

/** Why the wasm64 module for `arch` cannot be used, or null. */
export function qemu64Missing(arch, dir = qemu64Dir()) {
  if (!dir) return 'neither QEMUWEB_QEMU64_DIR nor QEMUWEB_QEMU_DIR is set (scripts/build-qemu builds it)';
  const gone = qemuFiles(arch).filter((f) => !existsSync(join(dir, f)));
  if (gone.length) return `${dir} lacks ${gone.join(', ')}`;
  const info = join(dir, 'qemu-build.json');
  if (existsSync(info) && arch !== 'i386') {
    const text = readFileSync(info, 'utf8');
    if (!/wasm64|memory64/i.test(text)) return `${info} does not describe a wasm64 (Memory64) build`;
  }
  return null;
}

/** Engine assets for the module files under /qemu64/ of the web root. */
export function qemuAssets(arch) {
  const assets = { qemuModule: `./qemu64/${QEMU_BINARY[arch]}.js` };
  if (arch !== 'arm64') {
    Object.assign(assets, {
      bios: { kind: 'url', url: './qemu64/bios-256k.bin' },
      vgaBios: { kind: 'url', url: './qemu64/vgabios-stdvga.bin' },
      kvmvapic: { kind: 'url', url: './qemu64/kvmvapic.bin' },
      linuxbootDma: { kind: 'url', url: './qemu64/linuxboot_dma.bin' },
    });
  }
  return assets;
}

/**
 * Puts the disk of `arch` (and its kernel and initramfs) under /ARCH/ of the image server
 * (hard links into the cache where possible; the image is only read), and the module's files
 * under /qemu64/ of the web root when the module is there.
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
  if (!qemu64Missing(arch)) {
    mkdirSync(join(env.webRoot, 'qemu64'), { recursive: true });
    for (const f of qemuFiles(arch)) {
      if (!existsSync(join(env.webRoot, 'qemu64', f))) copyFileSync(join(qemu64Dir(), f), join(env.webRoot, 'qemu64', f));
    }
  }
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

/** Starts the disk of `arch` as `vm` on the QEMU engine in the page's client. */
export function startDebian(page, env, arch, d, vm, { check = false, engine = 'qemu' } = {}) {
  const inputs = debianInputs(env.images.url, arch, d.boot, { check });
  return page.evaluate(async ([vm, profile, inputs, assets, engine]) => {
    window.client = engine === 'qemu' ? makeClient({ workerUrl: './pkg/worker.js', assets }) : makeClient();
    await window.client.init();
    return attempt(() => window.client.startVm(vm, profiles[profile], inputs, { engine }));
  }, [vm, d.boot.profile, inputs, qemuAssets(arch), engine]);
}

/** The console interface of `steps` over `vm` in the page (serial as the page records it). */
export function pageIo(page, vm) {
  return {
    text: () => page.evaluate((vm) => window.serial[vm] ?? '', vm),
    waitFor: (text, ms, from) => page.evaluate(([vm, text, from, ms]) => waitSerial(vm, text, from, ms), [vm, text, from, ms]),
    send: (text) => page.evaluate(([vm, text]) => window.client.sendSerialIn(vm, text), [vm, text]),
  };
}
