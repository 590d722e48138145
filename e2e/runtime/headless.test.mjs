// The headless runner (cargo run -p qemuweb-runtime --example headless): boots the x86 test
// guest in headless Chromium, bridges serial to its stdin/stdout, and exits cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, TARGET } from '../lib/server.mjs';
import { initialSector, readReply } from './common.mjs';

const BIN = join(TARGET, 'debug', 'examples', 'headless');

function guestImage() {
  const dir = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-headless-'));
  const guests = join(TARGET, 'debug', 'qemuweb-guests');
  if (existsSync(guests)) execFileSync(guests, [dir], { stdio: 'ignore' });
  else execFileSync('cargo', ['run', '-q', '-p', 'qemuweb-guests', '--', dir], { cwd: REPO, stdio: 'ignore' });
  return dir;
}

/** Runs the runner; returns { child, output(), waitFor(text), exit }. */
function run(args) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: cargo build -p qemuweb-runtime --example headless`);
  const child = spawn(BIN, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, CARGO_TARGET_DIR: TARGET } });
  let out = '', err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const waitFor = async (text, ms = 30000) => {
    const t0 = Date.now();
    while (!out.includes(text)) {
      if (Date.now() - t0 > ms) throw new Error(`no ${JSON.stringify(text)} in ${ms} ms; stdout ${JSON.stringify(out)} stderr ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { child, output: () => ({ out, err }), waitFor, exit };
}

const leftovers = (pid) => readdirSync(tmpdir()).filter((n) => n.startsWith(`qemuweb-headless-${pid}-`));

test('headless: serial over stdin/stdout; exits 0 when stdin closes, cleaning up', async () => {
  const dir = guestImage();
  try {
    const r = run(['--profile', 'linux-i386-pc-nographic', '--disk', join(dir, 'x86-bios.qcow2')]);
    await r.waitFor('QEMUWEB-GUEST x86 v1\r\n> ');
    r.child.stdin.write('echo through the runner\n');
    await r.waitFor('through the runner\r\n> ');
    r.child.stdin.write('read 77\n');
    await r.waitFor(readReply(77, initialSector(77)));
    r.child.stdin.end();
    const { code } = await r.exit;
    assert.equal(code, 0, r.output().err);
    assert.deepEqual(leftovers(r.child.pid), []);
    const chromium = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(`qemuweb-headless-${r.child.pid}-`));
    assert.deepEqual(chromium, [], 'no Chromium left running');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('headless: --timeout exits 124; errors are clear and exit non-zero', async () => {
  const dir = guestImage();
  try {
    const disk = join(dir, 'x86-bios.qcow2');
    // The limit counts from the start, whatever stage the page reached (under load it may
    // not have booted the guest yet): exit 124 and say so.
    const t = run(['--profile', 'linux-i386-pc-nographic', '--disk', disk, '--timeout', '3']);
    assert.equal((await t.exit).code, 124, t.output().err);
    assert.match(t.output().err, /timeout/);
    assert.deepEqual(leftovers(t.child.pid), []);

    const x64 = run(['--profile', 'linux-x86_64-pc-nographic', '--disk', disk]);
    x64.child.stdin.end();
    assert.equal((await x64.exit).code, 1);
    assert.match(x64.output().err, /QEMU engine/);

    const noBios = run(['--profile', 'linux-i386-pc-nographic', '--disk', disk, '--bios', join(dir, 'none.bin')]);
    noBios.child.stdin.end();
    assert.equal((await noBios.exit).code, 2);
    assert.match(noBios.output().err, /--bios .*no such file/);

    const url = run(['--profile', 'linux-i386-pc-nographic', '--disk', 'http://127.0.0.1:9/x.qcow2']);
    assert.equal((await url.exit).code, 1);
    assert.match(url.output().err, /storage: disk disk0: .*127\.0\.0\.1:9/);
    url.child.stdin.end();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('headless: with --user-data-dir the guest finds its writes on the next run', async () => {
  const dir = guestImage();
  const profile = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-headless-profile-'));
  try {
    const args = ['--profile', 'linux-i386-pc-nographic', '--disk', join(dir, 'x86-bios.qcow2'), '--user-data-dir', profile];
    const first = run(args);
    await first.waitFor('QEMUWEB-GUEST x86 v1\r\n> ');
    first.child.stdin.write('write 123 5A\n');
    await first.waitFor('WROTE SECTOR 123 FILL 5A');
    first.child.stdin.end();
    assert.equal((await first.exit).code, 0, first.output().err);

    const second = run(args);
    await second.waitFor('QEMUWEB-GUEST x86 v1\r\n> ');
    second.child.stdin.write('read 123\n');
    await second.waitFor(readReply(123, Buffer.alloc(512, 0x5a)));
    second.child.stdin.end();
    assert.equal((await second.exit).code, 0, second.output().err);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(profile, { recursive: true, force: true });
  }
});
