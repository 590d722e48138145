// Linux through QemuClient on v86: Debian's i386 kernel and a busybox initramfs (assembled
// by scripts/linux-guest from Debian packages) boot to a shell prompt, and a command typed
// over serial returns its output.
//
// Heavier than the other tests (a 50 MB package download on the first run, a 15-40 s boot),
// so it runs as its own step: scripts/e2e-linux.sh (which sets QEMUWEB_E2E_LINUX=1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { browserWithPage, converse, dropProfile, linuxGuest, setUp } from './common.mjs';

const enabled = process.env.QEMUWEB_E2E_LINUX === '1';
let env;

before(async () => {
  if (!enabled) return;
  const [kernel, initrd] = linuxGuest();
  env = await setUp();
  copyFileSync(kernel, join(env.imageRoot, 'bzImage'));
  copyFileSync(initrd, join(env.imageRoot, 'initrd.img'));
});

after(async () => {
  await env?.tearDown();
});

test('Debian i386 Linux boots to a busybox shell through QemuClient; a command over serial answers', { skip: !enabled && 'set QEMUWEB_E2E_LINUX=1 (scripts/e2e-linux.sh)' }, async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'linux');
    const inputs = {
      kernel: { kind: 'url', url: `${env.images.url}/bzImage` },
      initrd: { kind: 'url', url: `${env.images.url}/initrd.img` },
      kernelCmdline: 'console=ttyS0 quiet',
    };
    const started = await page.evaluate(async (inputs) => {
      window.client = makeClient();
      await client.init();
      return attempt(() => client.startVm('linux', profiles['linux-i386-pc-nographic'], inputs));
    }, inputs);
    assert.deepEqual(started, { ok: undefined });
    const promptAt = await page.evaluate(() => waitSerial('linux', 'qemuweb# ', 0, 180000));
    console.log(`shell prompt ${Math.round(promptAt)} ms after page start`);
    const progress = await page.evaluate(() => events.filter((e) => e.type === 'progress').map((e) => e.args[0].what));
    assert.ok(progress.includes('kernel') && progress.includes('initrd'), progress.join());
    const reply = await converse(page, 'linux', 'uname -m; echo sum=$((6*7))', 'sum=42', 30000);
    assert.match(reply, /i686/);
    await page.evaluate(() => client.stopVm('linux', true));
    await context.close();
  } finally {
    dropProfile(profile);
  }
});
