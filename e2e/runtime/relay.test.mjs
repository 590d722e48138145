// The way out of the page's virtual network: `qemuweb network` (the relay) on 127.0.0.1,
// connected as the `default` network's uplink with QemuClient.connectNetwork. One Debian
// i386 Linux VM on v86 (scripts/linux-guest's initrd-net: the NE2000 driver and busybox)
// gets its lease from the page's switch, fetches a file with busybox wget from an HTTP
// server this test runs on 127.0.0.1 through the gateway's address (10.0.2.2, the host's
// 127.0.0.1 with --allow-loopback) and checks its bytes; a host request reaches the guest's
// busybox httpd through the relay's --forward; UDP: busybox tftp gets a file from a TFTP
// server this test runs on 127.0.0.1, through the gateway's address. A connection with a wrong token is refused,
// an isolated network cannot have a way out, and the end of the relay settles the uplink's
// `closed`.
//
// Needs the Linux guest, so it runs in the Linux step: scripts/e2e-linux.sh (which sets
// QEMUWEB_E2E_LINUX=1 and builds the qemuweb command).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { createSocket } from 'node:dgram';
import { join } from 'node:path';
import { newProfile } from '../lib/browser.mjs';
import { startGroup } from '../lib/proc.mjs';
import { freePort, TARGET } from '../lib/server.mjs';
import { browserWithPage, converse, dropProfile, linuxGuest, setUp } from './common.mjs';

const enabled = process.env.QEMUWEB_E2E_LINUX === '1';
const QEMUWEB = join(TARGET, 'debug', 'qemuweb');
let env;

before(async () => {
  if (!enabled) return;
  if (!existsSync(QEMUWEB)) throw new Error(`${QEMUWEB} is missing: cargo build -p qemuweb-cli`);
  const [kernel, , , netInitrd] = linuxGuest();
  env = await setUp();
  copyFileSync(kernel, join(env.imageRoot, 'bzImage'));
  copyFileSync(netInitrd, join(env.imageRoot, 'initrd-net.img'));
});

after(async () => {
  await env?.tearDown();
});

/** An HTTP server on 127.0.0.1 with one file, `/file.bin`. */
async function fileServer(bytes) {
  const server = createServer((req, res) => {
    if (req.url !== '/file.bin') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': bytes.length });
    res.end(bytes);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/**
 * A TFTP server on 127.0.0.1 (UDP) that serves `bytes` for any read request, in 512-byte
 * blocks, answering from its own port (busybox's client takes the first answer's port as
 * the server's). Options are ignored (no OACK): the client falls back to the defaults.
 */
async function tftpServer(bytes) {
  const socket = createSocket('udp4');
  const last = Math.floor(bytes.length / 512) + 1;
  const block = (n, to) => {
    const data = bytes.subarray((n - 1) * 512, n * 512);
    const head = Buffer.from([0, 3, n >> 8, n & 255]);
    socket.send(Buffer.concat([head, data]), to.port, to.address);
  };
  socket.on('message', (msg, from) => {
    const op = msg.readUInt16BE(0);
    if (op === 1) block(1, from);
    else if (op === 4 && msg.readUInt16BE(2) < last) block(msg.readUInt16BE(2) + 1, from);
  });
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return socket;
}

test('through qemuweb network, a Linux VM fetches a file from a server on 127.0.0.1 and a host request reaches its httpd', { skip: !enabled && 'set QEMUWEB_E2E_LINUX=1 (scripts/e2e-linux.sh)', timeout: 240000 }, async () => {
  const file = randomBytes(512 << 10);
  const sha = createHash('sha256').update(file).digest('hex');
  const server = await fileServer(file);
  const small = randomBytes(3000);
  const tftp = await tftpServer(small);
  const forwardPort = await freePort();
  const relay = startGroup(QEMUWEB, ['network', '--listen', '127.0.0.1:0', '--allow-loopback', '--verbose',
    '--forward', `${forwardPort}:vm1:8080`], { name: 'qemuweb network', limitMs: 200000, stdin: 'ignore' });
  const profile = newProfile();
  let page;
  try {
    await relay.waitFor(' token ', 20000);
    const m = relay.output().out.match(/relayed at (ws:\/\/127\.0\.0\.1:\d+\/network) token ([0-9a-f]{64})/);
    assert.ok(m, relay.output().out);
    const [, url, token] = m;
    const opened = await browserWithPage(profile, env.web, 'relay');
    const context = opened.context;
    page = opened.page;
    const inputs = {
      kernel: { kind: 'url', url: `${env.images.url}/bzImage` },
      initrd: { kind: 'url', url: `${env.images.url}/initrd-net.img` },
      kernelCmdline: 'console=ttyS0 quiet',
    };
    const t0 = Date.now();
    const [wrong, connected, started] = await page.evaluate(async ([inputs, url, token]) => {
      window.client = makeClient({ workerUrl: './pkg/worker.js', assets: ASSETS });
      await client.init();
      const wrong = await attempt(() => client.connectNetwork('default', url, '0'.repeat(64)));
      const isolated = await attempt(() => client.connectNetwork('isolated', url, token));
      if (isolated.error !== 'invalid-inputs') throw new Error(`isolated: ${JSON.stringify(isolated)}`);
      const connected = await attempt(async () => {
        window.uplink = await client.connectNetwork('default', url, token);
        window.uplinkClosed = uplink.closed.then((how) => { window.uplinkClosedWith = how; });
        return uplink.network;
      });
      const started = await attempt(() => client.startVm('vm1', profiles['linux-i386-pc-nographic'], inputs, {
        overrides: { memoryMiB: 96, networks: [{ network: 'default', model: 'ne2k-pci' }] },
      }));
      return [wrong, connected, started];
    }, [inputs, url, token]);
    assert.equal(wrong.error, 'browser', JSON.stringify(wrong));
    assert.match(wrong.message, /refused|cannot be reached/);
    assert.deepEqual(connected, { ok: 'default' });
    assert.deepEqual(started, { ok: undefined });
    await page.evaluate(() => waitSerial('vm1', 'qemuweb# ', 0, 120000));
    const lease = await converse(page, 'vm1', 'udhcpc -i eth0 -n -q -t 10 -T 1 2>&1; echo DHCP-$((6*7))', 'DHCP-42', 60000);
    assert.match(lease, /QEMUWEB-LEASE eth0 10\.0\.2\.\d+/, lease);
    const booted = Date.now();

    // Out: the gateway's address is the host's 127.0.0.1 (--allow-loopback).
    const port = server.address().port;
    const fetched = await converse(page, 'vm1',
      `wget -q -O /tmp/f http://10.0.2.2:${port}/file.bin && sha256sum /tmp/f; echo GET-$((6*7))`, 'GET-42', 60000);
    assert.ok(fetched.includes(`${sha}  /tmp/f`), fetched);
    // UDP out and back: a TFTP get from 127.0.0.1 (six blocks, each acknowledged).
    const got = await converse(page, 'vm1',
      `tftp -g -r small.bin -l /tmp/u 10.0.2.2 ${tftp.address().port} && sha256sum /tmp/u; echo TFTP-$((6*7))`, 'TFTP-42', 30000);
    assert.ok(got.includes(`${createHash('sha256').update(small).digest('hex')}  /tmp/u`), got);
    const fetchedAt = Date.now();

    // In: the relay's forward reaches the guest's httpd (found by name through the page's DNS).
    await converse(page, 'vm1',
      'mkdir -p /www && echo hello-from-the-guest > /www/index.html && httpd -p 8080 -h /www; echo HTTPD-$((6*7))', 'HTTPD-42', 20000);
    const answer = await fetch(`http://127.0.0.1:${forwardPort}/index.html`, { signal: AbortSignal.timeout(30000) });
    assert.equal(answer.status, 200);
    assert.equal(await answer.text(), 'hello-from-the-guest\n');
    console.log(`boot and lease ${((booted - t0) / 1000).toFixed(1)} s, wget of 512 KiB and tftp of 3000 bytes ${((fetchedAt - booted) / 1000).toFixed(1)} s, forward ${((Date.now() - fetchedAt) / 1000).toFixed(1)} s`);

    const stats = await page.evaluate(() => uplink.stats());
    assert.equal(stats.network, 'default');
    assert.ok(stats.receivedFrames > 100 && stats.sentFrames > 300, JSON.stringify(stats));

    // The relay goes: the uplink's `closed` settles, and the network has no way out.
    await relay.stop();
    const closed = await page.evaluate(async () => {
      await Promise.race([uplinkClosed, new Promise((_, reject) => setTimeout(() => reject(new Error('not closed')), 10000))]);
      return [uplinkClosedWith, uplink.stats()];
    });
    assert.equal(closed[0].network, 'default');
    assert.equal(typeof closed[0].code, 'number');
    assert.equal(closed[1], undefined);
    await page.evaluate(() => client.stopVm('vm1', true));
    await context.close();
  } catch (e) {
    const counters = await page?.evaluate(() => [window.uplink?.stats(), client.networkStats('vm1')]).catch(() => null);
    console.log(`uplink and vm1 counters: ${JSON.stringify(counters)}`);
    console.log(`--- qemuweb network's stderr ---\n${relay.output().err.slice(-4000)}`);
    throw e;
  } finally {
    await relay.stop();
    server.close();
    tftp.close();
    dropProfile(profile);
  }
});
