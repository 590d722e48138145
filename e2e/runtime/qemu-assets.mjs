// The QEMU module of the runtime's browser tests and benchmark: a qemuweb-wasm-build output
// directory named by QEMUWEB_QEMU_DIR (scripts/test exports it), copied to /qemu/ of the web root.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** The files the QEMU engine is given from the build's output directory. */
export const QEMU_FILES = ['qemu-system-i386.js', 'qemu-system-i386.wasm', 'bios-256k.bin', 'vgabios-stdvga.bin', 'kvmvapic.bin', 'linuxboot_dma.bin'];

/** Why the QEMU module cannot be used, or null. */
export function qemuMissing(dir = process.env.QEMUWEB_QEMU_DIR) {
  if (!dir) return 'QEMUWEB_QEMU_DIR is not set (build the module with scripts/build-qemu)';
  const gone = QEMU_FILES.filter((f) => !existsSync(join(dir, f)));
  return gone.length ? `${dir} lacks ${gone.join(', ')}` : null;
}

/** Engine assets for the files under /qemu/ of the web root. */
export const QEMU_ASSETS = {
  qemuModule: './qemu/qemu-system-i386.js',
  bios: { kind: 'url', url: './qemu/bios-256k.bin' },
  vgaBios: { kind: 'url', url: './qemu/vgabios-stdvga.bin' },
  kvmvapic: { kind: 'url', url: './qemu/kvmvapic.bin' },
  linuxbootDma: { kind: 'url', url: './qemu/linuxboot_dma.bin' },
};
