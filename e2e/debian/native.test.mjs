// Real Debian disks (scripts/debian-disk) on native QEMU with TCG, the oracle for the page:
// each disk boots through QemuWeb's short init and to the root shell of the full boot; a
// command's answer is checked; a file written in one boot is read back in the next.
//
// Runs in scripts/e2e-debian.sh (QEMUWEB_E2E_DEBIAN=1); each QEMU is bounded by `timeout -k`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ARCHS, debianDisks, NativeGuest, nativeIo, steps } from './common.mjs';

const enabled = process.env.QEMUWEB_E2E_DEBIAN === '1';
const skip = !enabled && 'set QEMUWEB_E2E_DEBIAN=1 (scripts/e2e-debian.sh)';
const BOOT_MS = 240000;
const STEP_MS = 60000;
let disks;
let work;

before(() => {
  if (!enabled) return;
  disks = debianDisks(ARCHS);
  work = mkdtempSync(join(tmpdir(), 'qemuweb-debian-native-'));
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

for (const arch of ARCHS) {
  test(`Debian ${arch} on native QEMU: short init, full boot to the root shell, a file kept across boots`, { skip }, async () => {
    const d = disks[arch];
    // The cached image is never written: every boot runs on one overlay of it.
    const overlay = join(work, `${arch}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', d.disk, '-F', 'qcow2', overlay]);
    const { boot } = d;

    // 1. Short init: the answer, a file written, then `exit` syncs and powers off.
    let g = new NativeGuest(d, overlay, { check: true });
    try {
      let io = nativeIo(g);
      await steps.bootPrompt(io, boot, boot.checkLabel, BOOT_MS);
      const shortMs = await steps.checkShell(io, boot, BOOT_MS);
      await steps.answer(io, boot, boot.checkPrompt, STEP_MS);
      await steps.write(io, boot.checkPrompt, `short-${arch}-1`, STEP_MS);
      await io.send('exit\r');
      assert.equal(await g.waitExit(STEP_MS), 0, 'QEMU exits when the short init powers off');
      console.log(`${arch}: short init prompt after ${Math.round(shortMs)} ms`);

      // 2. Full boot: sysvinit to the autologin root shell; the file is there; a new one.
      g = new NativeGuest(d, overlay);
      io = nativeIo(g);
      await steps.bootPrompt(io, boot, '', BOOT_MS);
      const fullMs = await steps.rootShell(io, boot, BOOT_MS);
      console.log(`${arch}: full boot root shell after ${Math.round(fullMs)} ms`);
      await steps.answer(io, boot, boot.shellPrompt, STEP_MS);
      await steps.read(io, boot.shellPrompt, `short-${arch}-1`, STEP_MS);
      await steps.write(io, boot.shellPrompt, `full-${arch}-2`, STEP_MS);
      await g.kill();

      // 3. Short init again: the full boot's file survived QEMU being stopped after sync.
      g = new NativeGuest(d, overlay, { check: true });
      io = nativeIo(g);
      await steps.bootPrompt(io, boot, boot.checkLabel, BOOT_MS);
      await steps.checkShell(io, boot, BOOT_MS);
      await steps.read(io, boot.checkPrompt, `full-${arch}-2`, STEP_MS);
    } finally {
      await g.kill();
    }
  });
}
