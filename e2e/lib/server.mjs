// Starts QemuWeb's Rust test server (qemuweb-testkit's qemuweb-test-server) on a directory:
// Range/ETag, COOP/COEP/CORP (pages are cross-origin isolated), and a request log.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TARGET = process.env.CARGO_TARGET_DIR || join(REPO, 'target');

/** Serves `root` on 127.0.0.1. Returns { url, log(), stop() }. */
export async function serve(root) {
  const bin = join(TARGET, 'debug', 'qemuweb-test-server');
  if (!existsSync(bin)) {
    throw new Error(`${bin} is missing: run scripts/e2e-tests.sh (it builds it)`);
  }
  const work = mkdtempSync(join(tmpdir(), 'qemuweb-server-'));
  const portFile = join(work, 'url');
  const child = spawn(bin, ['--root', root, '--port-file', portFile], { stdio: ['ignore', 'ignore', 'inherit'] });
  let exited = false;
  child.on('exit', () => { exited = true; });
  for (let i = 0; i < 200 && !exited; i++) {
    if (existsSync(portFile) && readFileSync(portFile, 'utf8').trim()) break;
    await sleep(25);
  }
  if (exited || !existsSync(portFile)) throw new Error('qemuweb-test-server did not start');
  const url = readFileSync(portFile, 'utf8').split('\n')[0].trim().replace(/\/$/, '');
  return {
    url,
    /** The server's request log, one line per request. */
    async log() {
      const r = await fetch(`${url}/__log`);
      return (await r.text()).split('\n').filter(Boolean);
    },
    async stop() {
      child.kill();
      rmSync(work, { recursive: true, force: true });
    },
  };
}

/** A free TCP port on 127.0.0.1 (for servers that need one given). */
export async function freePort() {
  const { createServer } = await import('node:net');
  const srv = createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Writes QemuWeb's test guests (x86-bios.qcow2, x86-bios.raw, ...) into `dir`. */
export async function writeGuests(dir) {
  const { execFileSync } = await import('node:child_process');
  const bin = join(TARGET, 'debug', 'qemuweb-guests');
  const [cmd, args, cwd] = existsSync(bin) ? [bin, [dir]] : ['cargo', ['run', '-q', '-p', 'qemuweb-guests', '--', dir], REPO];
  execFileSync(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'inherit'] });
}
