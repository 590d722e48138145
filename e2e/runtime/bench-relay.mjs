// A benchmark, not a test: the way out of the page's network against native QEMU's user
// networking, with the same guest (scripts/linux-guest's Debian i386 kernel and busybox
// initrd-net, NE2000 NIC) in one run.
//   - guest to host: busybox wget of an 8 MiB file from a server on 127.0.0.1, through the
//     gateway's address (10.0.2.2);
//   - host to guest: a host fetch of a 4 MiB file from the guest's busybox httpd through a
//     forward, and the round trip of 20 small requests (median).
// In the page: v86 in headless Chromium, `qemuweb network --allow-loopback --forward`.
// Natively: qemu-system-i386 (TCG) with `-netdev user,hostfwd=...`.
// Run: scripts/e2e-linux.sh's builds, then `node runtime/bench-relay.mjs` in e2e/.
//
// `node runtime/bench-relay.mjs vm-to-vm`: instead, two such VMs on one page network (the
// page's switch only, no relay): vm1 fetches a 4 MiB file from vm2's busybox httpd by name
// (busybox wget) and pings it 20 times (busybox ping: the round trip's min/avg/max).
import { copyFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { startGroup } from '../lib/proc.mjs';
import { freePort, TARGET } from '../lib/server.mjs';
import { browserWithPage, converse, dropProfile, linuxGuest, setUp } from './common.mjs';

const BIG = 8 << 20;
const file = randomBytes(BIG);
const server = createServer((req, res) => {
  res.writeHead(200, { 'Content-Length': file.length });
  res.end(file);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = server.address().port;

const GUEST_SETUP = 'mkdir -p /www && echo hi > /www/index.html && dd if=/dev/zero of=/www/big bs=1024 count=4096 2>/dev/null && httpd -p 8080 -h /www; echo SETUP-$((6*7))';
const WGET = `time wget -q -O /dev/null http://10.0.2.2:${port}/big.bin; echo WGET-$((6*7))`;

function seconds(out) {
  const m = out.match(/real\s+(\d+)m\s*([\d.]+)s/);
  return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
}

async function hostSide(forwardPort) {
  const t = performance.now();
  const big = await (await fetch(`http://127.0.0.1:${forwardPort}/big`)).arrayBuffer();
  const bigS = (performance.now() - t) / 1000;
  const rtts = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    await (await fetch(`http://127.0.0.1:${forwardPort}/index.html`)).text();
    rtts.push(performance.now() - t0);
  }
  rtts.sort((a, b) => a - b);
  return { inMBs: big.byteLength / bigS / 1e6, rttMs: rtts[10] };
}

const [kernel, , , netInitrd] = linuxGuest();
const results = {};

if (process.argv[2] === 'vm-to-vm') {
  await vmToVm();
  server.close();
  process.exit(0);
}

/** Two VMs on one page network: throughput and round trip between them. */
async function vmToVm() {
  const env = await setUp();
  copyFileSync(kernel, join(env.imageRoot, 'bzImage'));
  copyFileSync(netInitrd, join(env.imageRoot, 'initrd-net.img'));
  const profile = newProfile();
  try {
    const { context, page } = await browserWithPage(profile, env.web, 'bench-vm-to-vm');
    const t0 = Date.now();
    await page.evaluate(async (inputs) => {
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: ASSETS });
      await client.init();
      await Promise.all(['vm1', 'vm2'].map((vm) => client.startVm(vm, profiles['linux-i386-pc-nographic'], inputs, {
        overrides: { memoryMiB: 96, networks: [{ network: 'default', model: 'ne2k-pci' }] },
      })));
      await Promise.all(['vm1', 'vm2'].map((vm) => waitSerial(vm, 'qemuweb# ', 0, 240000)));
    }, {
      kernel: { kind: 'url', url: `${env.images.url}/bzImage` },
      initrd: { kind: 'url', url: `${env.images.url}/initrd-net.img` },
      kernelCmdline: 'console=ttyS0 quiet',
    });
    console.log(`two VMs at their prompt in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    for (const vm of ['vm1', 'vm2']) {
      await converse(page, vm, 'udhcpc -i eth0 -n -q -t 10 -T 1 >/dev/null 2>&1; echo DHCP-$((6*7))', 'DHCP-42', 60000);
    }
    await converse(page, 'vm2', GUEST_SETUP, 'SETUP-42', 30000);
    const out = await converse(page, 'vm1', 'time wget -q -O /dev/null http://vm2:8080/big; echo WGET-$((6*7))', 'WGET-42', 240000);
    const ping = await converse(page, 'vm1', 'ping -c 20 -i 0.2 vm2; echo PING-$((6*7))', 'PING-42', 60000);
    const rtt = ping.match(/min\/avg\/max = ([\d.]+)\/([\d.]+)\/([\d.]+)/);
    if (!rtt) throw new Error(`no round trip in: ${ping}`);
    const loss = ping.match(/(\d+)% packet loss/)?.[1];
    // Why the throughput is what it is: the sender's TCP segments and retransmissions, and
    // the frames the page's switch dropped.
    const snmp = (await converse(page, 'vm2', 'grep Tcp: /proc/net/snmp; echo SNMP-$((6*7))', 'SNMP-42', 20000))
      .split('\n').filter((l) => l.startsWith('Tcp:')).map((l) => l.trim().split(/\s+/));
    const tcp = snmp.length >= 2 ? Object.fromEntries(snmp[0].map((k, i) => [k, snmp[1][i]])) : {};
    const counters = await page.evaluate(() => ['vm1', 'vm2'].map((vm) => client.networkStats(vm)));
    console.log(`vm2's TCP: ${tcp.OutSegs} segments sent, ${tcp.RetransSegs} retransmitted; switch counters: ${JSON.stringify(counters)}`);
    console.log(`page (v86, two VMs on the page's switch): vm2 -> vm1 ${((4 << 20) / seconds(out) / 1e6).toFixed(2)} MB/s `
      + `(busybox wget of 4 MiB by name), ping round trip min/avg/max ${rtt[1]}/${rtt[2]}/${rtt[3]} ms (20 pings, ${loss}% loss)`);
    await context.close();
  } finally {
    dropProfile(profile);
    await env.tearDown();
  }
}

// In the page, through the relay.
{
  const env = await setUp();
  copyFileSync(kernel, join(env.imageRoot, 'bzImage'));
  copyFileSync(netInitrd, join(env.imageRoot, 'initrd-net.img'));
  const forwardPort = await freePort();
  const relay = startGroup(join(TARGET, 'debug', 'qemuweb'), ['network', '--listen', '127.0.0.1:0', '--allow-loopback',
    '--forward', `${forwardPort}:vm1:8080`], { name: 'qemuweb network', limitMs: 300000, stdin: 'ignore' });
  const profile = newProfile();
  try {
    await relay.waitFor(' token ', 20000);
    const [, url, token] = relay.output().out.match(/relayed at (\S+) token (\S+)/);
    const { context, page } = await browserWithPage(profile, env.web, 'bench-relay');
    await page.evaluate(async ([inputs, url, token]) => {
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: ASSETS });
      await client.init();
      await client.connectNetwork('default', url, token);
      await client.startVm('vm1', profiles['linux-i386-pc-nographic'], inputs, {
        overrides: { memoryMiB: 96, networks: [{ network: 'default', model: 'ne2k-pci' }] },
      });
      await waitSerial('vm1', 'qemuweb# ', 0, 120000);
    }, [{
      kernel: { kind: 'url', url: `${env.images.url}/bzImage` },
      initrd: { kind: 'url', url: `${env.images.url}/initrd-net.img` },
      kernelCmdline: 'console=ttyS0 quiet',
    }, url, token]);
    await converse(page, 'vm1', 'udhcpc -i eth0 -n -q -t 10 -T 1 >/dev/null 2>&1; echo DHCP-$((6*7))', 'DHCP-42', 60000);
    await converse(page, 'vm1', GUEST_SETUP, 'SETUP-42', 30000);
    const out = await converse(page, 'vm1', WGET, 'WGET-42', 240000);
    results.page = { outMBs: BIG / seconds(out) / 1e6, ...(await hostSide(forwardPort)) };
    console.log('page done');
    await context.close();
  } finally {
    await relay.stop();
    dropProfile(profile);
    await env.tearDown();
  }
}

// Native QEMU, user networking.
{
  const forwardPort = await freePort();
  const qemu = startGroup('qemu-system-i386', ['-M', 'pc', '-m', '96', '-nographic', '-no-reboot',
    '-kernel', kernel, '-initrd', netInitrd, '-append', 'console=ttyS0 quiet',
    '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${forwardPort}-:8080`, '-device', 'ne2k_pci,netdev=n0'],
  { name: 'qemu-system-i386', limitMs: 300000 });
  const say = async (line, expect, ms) => {
    const from = qemu.output().out.length;
    qemu.child.stdin.write(line + '\r');
    const deadline = Date.now() + ms;
    while (!qemu.output().out.slice(from).includes(expect)) {
      if (Date.now() > deadline) throw new Error(`no ${expect}: ${qemu.output().out.slice(-500)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return qemu.output().out.slice(from);
  };
  try {
    await qemu.waitFor('qemuweb# ', 120000);
    await say('udhcpc -i eth0 -n -q -t 10 -T 1 >/dev/null 2>&1; echo DHCP-$((6*7))', 'DHCP-42', 60000);
    await say(GUEST_SETUP, 'SETUP-42', 30000);
    const out = await say(WGET, 'WGET-42', 240000);
    results.native = { outMBs: BIG / seconds(out) / 1e6, ...(await hostSide(forwardPort)) };
    console.log('native done');
  } finally {
    await qemu.stop();
  }
}

server.close();
const f = (r) => `guest->host ${r.outMBs.toFixed(2)} MB/s, host->guest ${r.inMBs.toFixed(2)} MB/s, request round trip ${r.rttMs.toFixed(1)} ms`;
console.log(`page (v86 + qemuweb network): ${f(results.page)}`);
console.log(`native QEMU (TCG, -netdev user): ${f(results.native)}`);
