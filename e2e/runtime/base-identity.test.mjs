// A VM's persistent disk overlay is tied to the base image it was made over: starting the
// same vmId over a different image (here the guest image copied under another name, so
// the server's ETag differs) fails with a storage error naming the change, and leaves the
// stored writes intact for the original image.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import {
  browserWithPage, converse, dropProfile, initialSector, readReply, setUp, startVm,
} from './common.mjs';

const BANNER = 'QEMUWEB-GUEST x86 v1';
let env;

before(async () => {
  env = await setUp();
  copyFileSync(join(env.imageRoot, 'x86-bios.qcow2'), join(env.imageRoot, 'x86-bios-copy.qcow2'));
});

after(async () => {
  await env?.tearDown();
});

test('a vmId started over a different base image is refused; its writes stay for the original', async () => {
  const profile = newProfile();
  const vm = 'base-id';
  const lba = 120;
  const filled = Buffer.alloc(512, 0x5e);
  const a = `${env.images.url}/x86-bios.qcow2`;
  const b = `${env.images.url}/x86-bios-copy.qcow2`;
  const banner = (page) => page.evaluate(([vm, banner]) => waitSerial(vm, banner + '\r\n> ', 0, 30000), [vm, BANNER]);
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'base-id');
    assert.deepEqual(await startVm(page, vm, a), { ok: undefined });
    await banner(page);
    await converse(page, vm, `write ${lba} 5E`, `WROTE SECTOR ${lba} FILL 5E`);
    assert.deepEqual(await page.evaluate((vm) => attempt(() => client.stopVm(vm)), vm), { ok: undefined });

    // Same bytes, other file: another ETag, so another base image.
    const refused = await startVm(page, vm, b);
    assert.equal(refused.error, 'storage', JSON.stringify(refused));
    console.log(`refused: ${refused.message}`);
    assert.match(refused.message, /base image/);
    assert.match(refused.message, /base-id/);
    assert.match(refused.message, /delete_vm|another vmId/);
    const events = await page.evaluate((vm) => events.filter((e) => e.type === 'error' && e.vmId === vm).map((e) => e.args[0]), vm);
    assert.ok(events.some((e) => e.code === 'storage' && /base image/.test(e.message)), JSON.stringify(events));

    // The original image still gets the guest's write; an unwritten sector reads from it.
    await page.evaluate(() => window.serial['base-id'] = '');
    assert.deepEqual(await startVm(page, vm, a), { ok: undefined });
    await banner(page);
    await converse(page, vm, `read ${lba}`, readReply(lba, filled));
    await converse(page, vm, `read ${lba + 1}`, readReply(lba + 1, initialSector(lba + 1)));
    await page.evaluate((vm) => client.stopVm(vm), vm);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});
