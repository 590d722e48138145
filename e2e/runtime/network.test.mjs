// The page's virtual network on the v86 engine: Debian's i386 Linux (scripts/linux-guest's
// initramfs with the kernel's ne2k-pci driver) in three VMs of one page. Two are on network
// `lan`: each gets a DHCP lease from the page's switch, and one pings the other by address
// and by name (the switch's DNS). The third is on `lan2`, a network with the same addresses
// that is only separated by the switch: it gets its own lease, and the first VM's pings to
// its (reserved) address are never answered.
//
// Needs the Linux guest (a 50 MB package download on the first run), so it runs in the
// Linux step: scripts/e2e-linux.sh (which sets QEMUWEB_E2E_LINUX=1).
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
  const [kernel, , , netInitrd] = linuxGuest();
  env = await setUp();
  copyFileSync(kernel, join(env.imageRoot, 'bzImage'));
  copyFileSync(netInitrd, join(env.imageRoot, 'initrd-net.img'));
});

after(async () => {
  await env?.tearDown();
});

const NETWORKS = [
  { id: 'lan', cidr: '10.0.2.0/24' },
  { id: 'lan2', cidr: '10.0.2.0/24' },
];
const ISOLATED_IP = '10.0.2.99';

test('two Linux VMs on one page network get DHCP leases and ping each other; a VM on another network is unreachable', { skip: !enabled && 'set QEMUWEB_E2E_LINUX=1 (scripts/e2e-linux.sh)', timeout: 420000 }, async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'network');
    const inputs = {
      kernel: { kind: 'url', url: `${env.images.url}/bzImage` },
      initrd: { kind: 'url', url: `${env.images.url}/initrd-net.img` },
      kernelCmdline: 'console=ttyS0 quiet',
    };
    const t0 = Date.now();
    const started = await page.evaluate(async ([inputs, networks, isolatedIp]) => {
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: ASSETS, networks });
      await client.init();
      const vms = [['vm1', 'lan', undefined], ['vm2', 'lan', undefined], ['vm3', 'lan2', isolatedIp]];
      return Promise.all(vms.map(([vm, network, ip]) => attempt(() => client.startVm(vm, profiles['linux-i386-pc-nographic'], inputs, {
        overrides: { memoryMiB: 96, networks: [{ network, model: 'ne2k-pci', ...(ip ? { ip } : {}) }] },
      }))));
    }, [inputs, NETWORKS, ISOLATED_IP]);
    assert.deepEqual(started, [{ ok: undefined }, { ok: undefined }, { ok: undefined }]);
    await page.evaluate(() => Promise.all(['vm1', 'vm2', 'vm3'].map((vm) => waitSerial(vm, 'qemuweb# ', 0, 240000))));
    const booted = Date.now();
    console.log(`three VMs at their shell prompt ${((booted - t0) / 1000).toFixed(1)} s after startVm`);

    const lease = async (vm) => {
      const reply = await converse(page, vm, 'udhcpc -i eth0 -n -q -t 10 -T 1 2>&1; echo DHCP-$((6*7))', 'DHCP-42', 60000);
      const m = reply.match(/QEMUWEB-LEASE eth0 (\d+\.\d+\.\d+\.\d+)/);
      assert.ok(m, `${vm} got no lease: ${reply}`);
      return m[1];
    };
    const [ip1, ip2, ip3] = await Promise.all(['vm1', 'vm2', 'vm3'].map(lease));
    console.log(`leases: vm1 ${ip1}, vm2 ${ip2}, vm3 ${ip3} (${((Date.now() - booted) / 1000).toFixed(1)} s)`);
    assert.match(ip1, /^10\.0\.2\.\d+$/);
    assert.match(ip2, /^10\.0\.2\.\d+$/);
    assert.notEqual(ip1, ip2);
    assert.equal(ip3, ISOLATED_IP);

    const ping = await converse(page, 'vm1', `ping -c 3 -W 3 ${ip2}; echo PING-$((6*7))`, 'PING-42', 60000);
    assert.match(ping, /3 packets transmitted, 3 packets received, 0% packet loss/, ping);
    const stats2 = await page.evaluate(() => client.networkStats('vm2'));
    assert.equal(stats2.network, 'lan');
    assert.ok(stats2.receivedFrames >= 3 && stats2.sentFrames >= 3, JSON.stringify(stats2));

    // By name: the switch's DNS answers for the VMs of the network.
    const byName = await converse(page, 'vm1', 'nslookup vm2 2>&1; ping -c 1 -W 3 vm2; echo NAME-$((6*7))', 'NAME-42', 60000);
    assert.ok(byName.includes(ip2), byName);
    assert.match(byName, /1 packets transmitted, 1 packets received/, byName);

    // lan2 has the same addresses, but its frames never cross into lan.
    const cross = await converse(page, 'vm1', `ping -c 2 -W 2 ${ISOLATED_IP}; echo CROSS-$((6*7))`, 'CROSS-42', 60000);
    assert.match(cross, /2 packets transmitted, 0 packets received, 100% packet loss/, cross);
    const back = await converse(page, 'vm3', `ping -c 2 -W 2 ${ip1}; echo BACK-$((6*7))`, 'BACK-42', 60000);
    assert.match(back, /0 packets received, 100% packet loss/, back);
    const stats3 = await page.evaluate(() => client.networkStats('vm3'));
    assert.equal(stats3.network, 'lan2');
    console.log(`network checks done ${((Date.now() - t0) / 1000).toFixed(1)} s after startVm`);

    await page.evaluate(() => Promise.all(['vm1', 'vm2', 'vm3'].map((vm) => client.stopVm(vm, true))));
    assert.equal(await page.evaluate(() => client.networkStats('vm1')), undefined);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('a VM attached to a network is refused on the QEMU engine, and one on an unknown network anywhere, before anything starts', { skip: !enabled && 'set QEMUWEB_E2E_LINUX=1 (scripts/e2e-linux.sh)', timeout: 60000 }, async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'network-refused');
    const [qemu, unknown] = await page.evaluate(async (networks) => {
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: ASSETS, networks });
      const inputs = { disk: { source: { kind: 'url', url: './nowhere.qcow2' } } };
      return [
        await attempt(() => client.startVm('q', profiles['linux-x86_64-pc-nographic'], inputs, { overrides: { networks: [{ network: 'lan' }] } })),
        await attempt(() => client.startVm('u', profiles['linux-i386-pc-nographic'], inputs, { overrides: { networks: [{ network: 'elsewhere' }] } })),
      ];
    }, NETWORKS);
    assert.equal(qemu.error, 'unsupported', JSON.stringify(qemu));
    assert.match(qemu.message, /networking on the qemu engine is not yet available.*'lan'/);
    assert.equal(unknown.error, 'invalid-inputs', JSON.stringify(unknown));
    assert.match(unknown.message, /no network 'elsewhere'.*lan, lan2/);
    assert.deepEqual(await page.evaluate(() => client.vmIds()), []);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});
