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

/**
 * The JIT's statistics (patch 0012: `qemuweb_jit_stats()` returns the address of a struct of
 * u64 counters in the module's memory) read from the outside, without the runtime's help: every
 * worker of `page` gets a hook on WebAssembly.instantiate/instantiateStreaming that keeps an
 * instance exporting `qemuweb_jit_stats` and the memory it imports. A benchmark's aid, not a
 * test: the hook races the worker's own start (playwright reports a worker once it runs), so
 * `read()` answers null when it missed the instantiation or the module has no JIT.
 */
export function watchJit(page) {
  const hook = () => {
    if (self.__qemuwebJit) return;
    self.__qemuwebJit = [];
    self.__qemuwebJitSeen = 0;
    const keep = (result, imports) => {
      self.__qemuwebJitSeen += 1;
      const instance = result.instance ?? result;
      const exports = instance?.exports ?? {};
      const stats = exports.qemuweb_jit_stats ?? exports._qemuweb_jit_stats;
      let memory = exports.memory;
      for (const ns of Object.values(imports ?? {})) {
        for (const v of Object.values(ns ?? {})) if (v instanceof WebAssembly.Memory) memory = v;
      }
      if (typeof stats === 'function' && memory) self.__qemuwebJit.push({ stats, memory });
      return result;
    };
    const instantiate = WebAssembly.instantiate;
    const streaming = WebAssembly.instantiateStreaming;
    WebAssembly.instantiate = function (source, imports, ...rest) {
      return instantiate.call(this, source, imports, ...rest).then((r) => keep(r, imports));
    };
    if (streaming) {
      WebAssembly.instantiateStreaming = function (source, imports, ...rest) {
        return streaming.call(this, source, imports, ...rest).then((r) => keep(r, imports));
      };
    }
  };
  const read = () => {
    const found = self.__qemuwebJit?.at(-1);
    if (!found) return self.__qemuwebJitSeen ? { missing: `${self.__qemuwebJitSeen} instantiations seen, none exporting qemuweb_jit_stats` } : null;
    const names = ['version', 'enabled', 'blocks', 'modules', 'failed', 'wasmBytes', 'translateUs',
      'compileUs', 'instantiateUs', 'flushes', 'hotThreshold', 'batch'];
    const at = Number(found.stats());
    const words = new BigUint64Array(found.memory.buffer, at, names.length);
    return Object.fromEntries(names.map((n, i) => [n, Number(words[i])]));
  };
  const install = (w) => w.evaluate(hook).catch(() => {});
  page.on('worker', install);
  for (const w of page.workers()) install(w);
  return {
    /**
     * The last module's counters ({ blocks, compileUs, ... }); { missing: why } when the hook
     * saw instantiations but none with the JIT's export; null when it saw none.
     */
    async read() {
      let missing = null;
      for (const w of page.workers()) {
        const s = await w.evaluate(read).catch(() => null);
        if (s && !s.missing) return s;
        missing ??= s;
      }
      return missing;
    },
  };
}
