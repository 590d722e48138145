// The page's virtual network on the v86 engine: Debian's i386 Linux (scripts/linux-guest's
// initramfs with the kernel's ne2k-pci driver) in three VMs of one page. Two are on network
// `lan`: each gets a DHCP lease from the page's switch, and one pings the other by address
// and by name (the switch's DNS). The third is on `lan2`, a network with the same addresses
// that is only separated by the switch: it gets its own lease, and the first VM's pings to
// its (reserved) address are never answered.
//
// On the QEMU engine (the build QEMUWEB_QEMU_DIR names, with patch 0030's `-netdev qemuweb`):
// two QEMU guests with e1000 NICs and a v86 guest on one network of a page get leases; a
// QEMU guest pings the other and fetches a file from its busybox httpd (throughput and
// round trips are printed), and the v86 guest reaches both.
//
// Needs the Linux guest (a 50 MB package download on the first run), so it runs in the
// Linux step: scripts/e2e-linux.sh (which sets QEMUWEB_E2E_LINUX=1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { browserWithPage, converse, dropProfile, linuxGuest, setUp } from './common.mjs';
import { installQemu, QEMU_ASSETS, qemuMissing, runsProfile } from './qemu-assets.mjs';

const enabled = process.env.QEMUWEB_E2E_LINUX === '1';
const PROFILE = 'linux-i386-pc-nographic';
// Why the QEMU test cannot run, or null.
const qemuGone = qemuMissing() ?? (runsProfile(PROFILE) ? null : `the build has no module for ${PROFILE}`);
if (enabled && qemuGone) {
  console.error(`\n${'!'.repeat(78)}\n!! QEMU build missing: ${qemuGone}\n!! The QEMU network test ${process.env.QEMUWEB_QEMU_DIR ? 'FAILS' : 'is SKIPPED (not passed)'}.\n${'!'.repeat(78)}\n`);
}
let env;

before(async () => {
  if (!enabled) return;
  const [kernel, , , netInitrd] = linuxGuest();
  env = await setUp();
  if (!qemuGone) installQemu(env.webRoot);
  copyFileSync(kernel, join(env.imageRoot, 'bzImage'));
  copyFileSync(netInitrd, join(env.imageRoot, 'initrd-net.img'));
});

after(async () => {
  await env?.tearDown();
});

/** The Linux guest with its NIC drivers, booted directly. */
const linuxInputs = () => ({
  kernel: { kind: 'url', url: `${env.images.url}/bzImage` },
  initrd: { kind: 'url', url: `${env.images.url}/initrd-net.img` },
  kernelCmdline: 'console=ttyS0 quiet',
});

const NETWORKS = [
  { id: 'lan', cidr: '10.0.2.0/24' },
  { id: 'lan2', cidr: '10.0.2.0/24' },
];
const ISOLATED_IP = '10.0.2.99';

/**
 * `vm` asks the page's DHCP server for a lease (busybox udhcpc, within `ms`); returns the
 * address its script reports ("QEMUWEB-LEASE eth0 A.B.C.D").
 */
async function lease(page, vm, ms) {
  const reply = await converse(page, vm, 'udhcpc -i eth0 -n -q -t 10 -T 1 2>&1; echo DHCP-$((6*7))', 'DHCP-42', ms);
  const m = reply.match(/QEMUWEB-LEASE eth0 (\d+\.\d+\.\d+\.\d+)/);
  assert.ok(m, `${vm} got no lease: ${reply}`);
  return m[1];
}

test('two Linux VMs on one page network get DHCP leases and ping each other; a VM on another network is unreachable', { skip: !enabled && 'set QEMUWEB_E2E_LINUX=1 (scripts/e2e-linux.sh)', timeout: 420000 }, async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'network');
    const inputs = linuxInputs();
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

    const [ip1, ip2, ip3] = await Promise.all(['vm1', 'vm2', 'vm3'].map((vm) => lease(page, vm, 60000)));
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

const qemuSkip = !enabled ? 'set QEMUWEB_E2E_LINUX=1 (scripts/e2e-linux.sh)'
  : qemuGone && !process.env.QEMUWEB_QEMU_DIR ? `QEMU build missing: ${qemuGone}` : false;

test('two QEMU guests on a page network get leases, ping each other and fetch a file over HTTP; a v86 guest on it reaches them', { skip: qemuSkip, timeout: 600000 }, async () => {
  // QEMUWEB_QEMU_DIR names a build that cannot run this: a failure, not a skip.
  assert.ok(!qemuGone, qemuGone);
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'network-qemu');
    const inputs = linuxInputs();
    const t0 = Date.now();
    const started = await page.evaluate(async ([inputs, networks, qemuAssets, profile]) => {
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: { ...ASSETS, ...qemuAssets }, networks });
      await client.init();
      const on = (model) => [{ network: 'lan', ...(model ? { model } : {}) }];
      // QEMU's NIC for the i386 PC: e1000 (the profile's default on that engine).
      return Promise.all([['q1', 'qemu', on()], ['q2', 'qemu', on()], ['v1', 'v86', on('ne2k-pci')]]
        .map(([vm, engine, networks]) => attempt(() => client.startVm(vm, profiles[profile], inputs, {
          engine, overrides: { memoryMiB: 96, networks },
        }))));
    }, [inputs, NETWORKS, QEMU_ASSETS, PROFILE]);
    assert.deepEqual(started, [{ ok: undefined }, { ok: undefined }, { ok: undefined }]);
    await page.evaluate(() => Promise.all(['q1', 'q2', 'v1'].map((vm) => waitSerial(vm, 'qemuweb# ', 0, 300000))));
    const booted = Date.now();
    console.log(`two QEMU VMs and a v86 VM at their shell prompt ${((booted - t0) / 1000).toFixed(1)} s after startVm`);

    const [ip1, ip2, ip3] = await Promise.all(['q1', 'q2', 'v1'].map((vm) => lease(page, vm, 90000)));
    console.log(`leases: q1 ${ip1}, q2 ${ip2}, v1 ${ip3} (${((Date.now() - booted) / 1000).toFixed(1)} s)`);
    assert.equal(new Set([ip1, ip2, ip3]).size, 3);

    // QEMU to QEMU: ping (the round trips are printed) and HTTP from q2's busybox httpd.
    const ping = await converse(page, 'q1', `ping -c 5 -i 0.2 -W 3 ${ip2}; echo PING-$((6*7))`, 'PING-42', 60000);
    assert.match(ping, /5 packets transmitted, 5 packets received, 0% packet loss/, ping);
    const rtt = ping.match(/round-trip min\/avg\/max = ([\d.\/]+) ms/)?.[1];
    const MIB = 2;
    await converse(page, 'q2', `mkdir -p /www && echo hello-from-q2 > /www/index.html && dd if=/dev/urandom of=/www/blob bs=64k count=${MIB * 16} 2>/dev/null && md5sum /www/blob && httpd -p 80 -h /www && echo HTTPD-$((6*7))`, 'HTTPD-42', 120000);
    const sum2 = (await converse(page, 'q2', 'md5sum /www/blob; echo SUM-$((6*7))', 'SUM-42')).match(/([0-9a-f]{32})  \/www\/blob/)[1];
    const fetched = await converse(page, 'q1', `wget -q -O - http://${ip2}/index.html; S=$(cut -d" " -f1 /proc/uptime); wget -q -O /tmp/blob http://${ip2}/blob; E=$(cut -d" " -f1 /proc/uptime); md5sum /tmp/blob; echo "FETCH $S $E END"`, ' END\r\n', 240000);
    assert.match(fetched, /hello-from-q2/, fetched);
    assert.ok(fetched.includes(`${sum2}  /tmp/blob`), `q1's copy differs from q2's file (${sum2}): ${fetched}`);
    const [, s, e] = fetched.match(/FETCH ([\d.]+) ([\d.]+) END/);
    const seconds = Number(e) - Number(s);
    console.log(`QEMU to QEMU: ping min/avg/max ${rtt} ms; wget of ${MIB} MiB in ${seconds.toFixed(2)} s of q1's uptime (${(MIB * 8 / seconds).toFixed(1)} Mbit/s)`);

    // The v86 guest and the QEMU guests on one network.
    const mixed = await converse(page, 'v1', `ping -c 2 -W 3 ${ip1}; wget -q -O - http://${ip2}/index.html; echo MIXED-$((6*7))`, 'MIXED-42', 60000);
    assert.match(mixed, /2 packets transmitted, 2 packets received/, mixed);
    assert.match(mixed, /hello-from-q2/, mixed);
    const stats = await page.evaluate(() => ['q1', 'q2', 'v1'].map((vm) => client.networkStats(vm)));
    assert.ok(stats[1].sentBytes > MIB << 20, JSON.stringify(stats[1]));
    console.log(`network stats: ${JSON.stringify(stats)}; all done ${((Date.now() - t0) / 1000).toFixed(1)} s after startVm`);

    await page.evaluate(() => Promise.all(['q1', 'q2', 'v1'].map((vm) => client.stopVm(vm, true))));
    const nicLogs = await page.evaluate(() => events.filter((e) => e.type === 'log' && String(e.args[1] ?? e.args[0]).includes("QEMU's NIC")).map((e) => `${e.vmId}: ${JSON.stringify(e.args)}`));
    console.log(nicLogs.join('\n'));
    await context.close();
  } finally {
    dropProfile(profile);
  }
});

test('a NIC model the engine lacks, and a network the page does not define, are refused before anything starts', { skip: !enabled && 'set QEMUWEB_E2E_LINUX=1 (scripts/e2e-linux.sh)', timeout: 60000 }, async () => {
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'network-refused');
    const [ne2k, unknown] = await page.evaluate(async (networks) => {
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: ASSETS, networks });
      const inputs = { disk: { source: { kind: 'url', url: './nowhere.qcow2' } } };
      return [
        await attempt(() => client.startVm('q', profiles['linux-x86_64-pc-nographic'], inputs, { overrides: { networks: [{ network: 'lan', model: 'ne2k-pci' }] } })),
        await attempt(() => client.startVm('u', profiles['linux-i386-pc-nographic'], inputs, { overrides: { networks: [{ network: 'elsewhere' }] } })),
      ];
    }, NETWORKS);
    assert.equal(ne2k.error, 'unsupported', JSON.stringify(ne2k));
    assert.match(ne2k.message, /ne2k_pci: the qemu engine has e1000 and virtio-net/);
    assert.equal(unknown.error, 'invalid-inputs', JSON.stringify(unknown));
    assert.match(unknown.message, /no network 'elsewhere'.*lan, lan2/);
    assert.deepEqual(await page.evaluate(() => client.vmIds()), []);
    await context.close();
  } finally {
    dropProfile(profile);
  }
});
