// The headless runner (cargo run -p qemuweb-runtime --example headless): boots the x86 test
// guest in headless Chromium, bridges serial to its stdin/stdout, and exits cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitProfileFree } from '../lib/browser.mjs';
import { startGroup } from '../lib/proc.mjs';
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

/**
 * Runs the runner in a process group of its own, killed by a watchdog after 180 s (see
 * ../lib/proc.mjs); `runs` collects it for the test's `finally`, which stops them all.
 */
function run(args, runs) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: cargo build -p qemuweb-runtime --example headless`);
  const r = startGroup(BIN, args, { name: 'headless runner', limitMs: 180000, env: { ...process.env, CARGO_TARGET_DIR: TARGET } });
  runs.push(r);
  return r;
}

async function stopAll(runs) {
  for (const r of runs) await r.stop();
}

const leftovers = (pid) => readdirSync(tmpdir()).filter((n) => n.startsWith(`qemuweb-headless-${pid}-`));

test('headless: serial over stdin/stdout; exits 0 when stdin closes, cleaning up', async () => {
  const dir = guestImage();
  const runs = [];
  try {
    const r = run(['--profile', 'linux-i386-pc-nographic', '--disk', join(dir, 'x86-bios.qcow2')], runs);
    await r.waitFor('QEMUWEB-GUEST x86 v1\r\n> ');
    r.child.stdin.write('echo through the runner\n');
    await r.waitFor('through the runner\r\n> ');
    r.child.stdin.write('read 77\n');
    await r.waitFor(readReply(77, initialSector(77)));
    r.child.stdin.end();
    const { code } = await r.exit;
    assert.equal(code, 0, r.output().err);
    assert.deepEqual(leftovers(r.child.pid), []);
    // The runner waits for every Chromium process before it exits: none is left at once.
    const chromium = execFileSync('ps', ['-eo', 'stat=,args='], { encoding: 'utf8' }).split('\n')
      .filter((l) => l.includes(`qemuweb-headless-${r.child.pid}-`) && !l.trim().startsWith('Z'));
    assert.deepEqual(chromium, [], 'no Chromium left running');
  } finally {
    await stopAll(runs);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('headless: --timeout exits 124; errors are clear and exit non-zero', async () => {
  const dir = guestImage();
  const runs = [];
  try {
    const disk = join(dir, 'x86-bios.qcow2');
    // The limit counts from the start, whatever stage the page reached (under load it may
    // not have booted the guest yet): exit 124 and say so.
    const t = run(['--profile', 'linux-i386-pc-nographic', '--disk', disk, '--timeout', '3'], runs);
    assert.equal((await t.exit).code, 124, t.output().err);
    assert.match(t.output().err, /timeout/);
    assert.deepEqual(leftovers(t.child.pid), []);

    const x64 = run(['--profile', 'linux-x86_64-pc-nographic', '--disk', disk], runs);
    x64.child.stdin.end();
    assert.equal((await x64.exit).code, 1);
    assert.match(x64.output().err, /QEMU engine/);

    const noBios = run(['--profile', 'linux-i386-pc-nographic', '--disk', disk, '--bios', join(dir, 'none.bin')], runs);
    noBios.child.stdin.end();
    assert.equal((await noBios.exit).code, 2);
    assert.match(noBios.output().err, /--bios .*no such file/);

    const url = run(['--profile', 'linux-i386-pc-nographic', '--disk', 'http://127.0.0.1:9/x.qcow2'], runs);
    assert.equal((await url.exit).code, 1);
    assert.match(url.output().err, /storage: disk disk0: .*127\.0\.0\.1:9/);
    url.child.stdin.end();
  } finally {
    await stopAll(runs);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('headless: with --user-data-dir the guest finds its writes on the next run', async () => {
  const dir = guestImage();
  const profile = mkdtempSync(join(tmpdir(), 'qemuweb-e2e-headless-profile-'));
  const runs = [];
  try {
    const args = ['--profile', 'linux-i386-pc-nographic', '--disk', join(dir, 'x86-bios.qcow2'), '--user-data-dir', profile];
    const first = run(args, runs);
    await first.waitFor('QEMUWEB-GUEST x86 v1\r\n> ');
    first.child.stdin.write('write 123 5A\n');
    await first.waitFor('WROTE SECTOR 123 FILL 5A');
    first.child.stdin.end();
    assert.equal((await first.exit).code, 0, first.output().err);

    const second = run(args, runs);
    await second.waitFor('QEMUWEB-GUEST x86 v1\r\n> ');
    second.child.stdin.write('read 123\n');
    await second.waitFor(readReply(123, Buffer.alloc(512, 0x5a)));
    second.child.stdin.end();
    assert.equal((await second.exit).code, 0, second.output().err);
    // The runner left no Chromium on the kept profile: it can be removed at once.
    assert.deepEqual(execFileSync('ps', ['-eo', 'stat=,args='], { encoding: 'utf8' }).split('\n')
      .filter((l) => l.includes(profile) && !l.trim().startsWith('Z')), []);
  } finally {
    await stopAll(runs);
    rmSync(dir, { recursive: true, force: true });
    // Should a run have failed half-way, its Chromium may still write into the profile.
    waitProfileFree(profile);
    rmSync(profile, { recursive: true, force: true });
  }
});
