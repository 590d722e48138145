// Shared by the Debian disk tests and benchmark: the disks scripts/debian-disk builds (cached
// outside the repository), native QEMU on them under an external watchdog, and the steps of
// both ways to boot them (the full boot to the root shell, QemuWeb's short init).
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { REPO } from '../lib/server.mjs';

/** The architectures the tests boot: QEMUWEB_DEBIAN_ARCHS (comma-separated), else amd64 and arm64. */
export const ARCHS = (process.env.QEMUWEB_DEBIAN_ARCHS || 'amd64,arm64').split(',').filter(Boolean);

/**
 * Builds (or finds in the cache) the Debian disks of `archs` with scripts/debian-disk, in
 * parallel. Returns { arch: { dir, disk, kernel, initrd, boot } } where `boot` is boot.json.
 * QEMUWEB_DEBIAN_DIRS (`arch=DIR,...`, output directories of scripts/debian-disk) names disks
 * built before, e.g. on another machine.
 */
export function debianDisks(archs = ARCHS) {
  const given = Object.fromEntries((process.env.QEMUWEB_DEBIAN_DIRS || '').split(',').filter(Boolean).map((kv) => kv.split('=')));
  const build = archs.filter((a) => !given[a]);
  const out = build.length ? execFileSync(join(REPO, 'scripts', 'debian-disk'), build, {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
  }).trim().split('\n') : [];
  if (out.length !== build.length) throw new Error(`scripts/debian-disk printed ${JSON.stringify(out)}`);
  const dirs = archs.map((a) => given[a] ?? out[build.indexOf(a)]);
  return Object.fromEntries(archs.map((arch, i) => {
    const dir = dirs[i];
    return [arch, {
      dir,
      disk: join(dir, 'disk.qcow2'),
      kernel: join(dir, 'vmlinuz'),
      initrd: join(dir, 'initrd.img'),
      boot: JSON.parse(readFileSync(join(dir, 'boot.json'), 'utf8')),
    }];
  }));
}

/**
 * Native QEMU (TCG) with the devices of the disk's QemuWeb profile as the browser build runs
 * it (no network there): q35/qemu64 or virt (no DTB randomness, as the aarch64 profiles)/cortex-a57 with 512 MiB, virtio-blk and virtio-rng;
 * i386: pc/qemu32 with 256 MiB and IDE; one vCPU, the serial console on stdio. arm64 boots with -kernel (the disk's own kernel and
 * initramfs); `check` selects the short init there (on x86 it is typed at SYSLINUX's prompt).
 */
export function nativeArgs(d, image, { check = false } = {}) {
  const drive = ['-drive', `file=${image},format=qcow2,if=none,id=disk0`, '-device', 'virtio-blk-pci,drive=disk0,bootindex=0'];
  const memory = d.boot.arch === 'i386' ? '256' : '512';
  const common = ['-nodefaults', '-no-user-config', '-accel', 'tcg', '-m', memory, '-smp', '1',
    '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot'];
  if (d.boot.arch === 'arm64') {
    return ['qemu-system-aarch64', [...common, '-machine', 'virt,dtb-randomness=off', '-cpu', 'cortex-a57',
      '-kernel', d.kernel, '-initrd', d.initrd, '-append', check ? d.boot.cmdlineCheck : d.boot.cmdline,
      ...drive, '-device', 'virtio-rng-pci']];
  }
  const binary = d.boot.arch === 'i386' ? 'qemu-system-i386' : 'qemu-system-x86_64';
  const machine = d.boot.arch === 'i386' ? ['-machine', 'pc', '-cpu', 'qemu32'] : ['-machine', 'q35', '-cpu', 'qemu64'];
  const disk = d.boot.arch === 'i386' ? ['-drive', `file=${image},format=qcow2,if=ide,index=0,media=disk`] : [...drive, '-device', 'virtio-rng-pci'];
  return [binary, [...common, ...machine, ...disk]];
}

/**
 * A guest on native QEMU, bounded from outside by `timeout -k` (the whole run, `limitS`
 * seconds): its serial output, typed input, and waits that fail with the output's tail.
 */
export class NativeGuest {
  constructor(d, image, { check = false, limitS = 300 } = {}) {
    const [binary, args] = nativeArgs(d, image, { check });
    this.t0 = performance.now();
    // Its own process group, killed whole when this process exits; `timeout` bounds it even
    // when this process is killed outright.
    this.child = spawn('timeout', ['-k', '5', String(limitS), binary, ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const killGroup = () => { try { process.kill(-this.child.pid, 'SIGKILL'); } catch { /* gone */ } };
    process.on('exit', killGroup);
    this.out = '';
    this.err = '';
    this.exit = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve(code ?? signal)));
    this.exited = false;
    this.exit.then(() => { this.exited = true; process.off('exit', killGroup); });
    this.child.stdout.on('data', (b) => { this.out += b.toString('latin1'); });
    this.child.stderr.on('data', (b) => { this.err += b; });
  }

  /** Waits for `text` in the serial output after offset `from`; returns ms since the start. */
  async waitFor(text, ms, from = 0) {
    const until = performance.now() + ms;
    for (;;) {
      if (this.out.indexOf(text, from) >= 0) return performance.now() - this.t0;
      if (this.exited || performance.now() > until) {
        throw new Error(`no ${JSON.stringify(text)} ${this.exited ? 'before QEMU exited' : `in ${ms} ms`}; ` +
          `serial tail: ${JSON.stringify(this.out.slice(-1500))}; stderr: ${this.err.slice(-500)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  send(text) {
    this.child.stdin.write(text);
  }

  /** Waits for QEMU to exit by itself; returns its exit code. */
  async waitExit(ms) {
    const timer = new Promise((_, reject) => setTimeout(() => reject(new Error(`QEMU did not exit in ${ms} ms; serial tail: ${JSON.stringify(this.out.slice(-800))}`)), ms));
    return Promise.race([this.exit, timer]);
  }

  /** Stops QEMU (SIGTERM: it closes its images cleanly) and waits for it. */
  async kill() {
    if (!this.exited) {
      try { process.kill(-this.child.pid, 'SIGTERM'); } catch { /* gone */ }
    }
    await this.exit;
  }
}

/**
 * The steps of both boots, for any console `io` (all async): text() -> all serial output so
 * far, waitFor(text, ms, from) -> ms from the start until `text` appeared after offset `from`,
 * send(text).
 */
export const steps = {
  /** SYSLINUX's prompt (x86 disks): Enter starts the full boot, `check` the short init. */
  async bootPrompt(io, boot, choice, ms) {
    if (boot.bootloader !== 'syslinux') return;
    await io.waitFor(boot.bootPrompt, ms, 0);
    await io.send(choice + '\r');
  },

  /** Short init: waits for its marker and prompt; returns ms from the start to the prompt. */
  async checkShell(io, boot, ms) {
    await io.waitFor(boot.checkMarker, ms, 0);
    return io.waitFor(boot.checkPrompt, ms, 0);
  },

  /** Full boot: waits for the root shell's prompt; returns ms from the start to it. */
  async rootShell(io, boot, ms) {
    return io.waitFor(boot.shellPrompt, ms, 0);
  },

  /**
   * Types `line`, waits for `marker` (a line of output the typed line cannot contain) and then
   * for `prompt`; returns the output from the line's echo to the prompt.
   */
  async say(io, prompt, line, marker, ms) {
    const from = (await io.text()).length;
    await io.send(line + '\r');
    await io.waitFor(marker, ms, from);
    const at = (await io.text()).indexOf(marker, from) + marker.length;
    await io.waitFor(prompt, ms, at);
    return (await io.text()).slice(from);
  },

  /** A command whose answer is checked: the machine and some shell arithmetic. */
  async answer(io, boot, prompt, ms) {
    const reply = await steps.say(io, prompt, 'echo "machine=$(uname -m) sum=$((6*7))"', 'sum=42\r\n', ms);
    if (!reply.includes(`machine=${boot.uname} sum=42\r\n`)) throw new Error(`unexpected answer ${JSON.stringify(reply)}`);
  },

  /** Writes `token` to a file on the root file system and syncs it. */
  async write(io, prompt, token, ms) {
    await steps.say(io, prompt, `echo ${token} > /root/qemuweb-proof && sync && echo written-$((1+1))`, 'written-2\r\n', ms);
  },

  /** Reads the file back: it holds the token of an earlier boot. */
  async read(io, prompt, token, ms) {
    const reply = await steps.say(io, prompt, 'cat /root/qemuweb-proof; echo read-$((2+2))', 'read-4\r\n', ms);
    if (!new RegExp(`[\r\n]${token}\r\n`).test(reply)) throw new Error(`the file holds ${JSON.stringify(reply)}, not ${token}`);
  },
};

/** The console interface of `steps` over a NativeGuest. */
export function nativeIo(g) {
  return {
    text: async () => g.out,
    waitFor: (text, ms, from) => g.waitFor(text, ms, from),
    send: async (text) => g.send(text),
  };
}
