// Launches Debian's Chromium through playwright-core, headless, as root on a closed network.
// Every test of a file that imports this module fails when a page it logs (`logPage`)
// threw an uncaught exception (`pageerror`), and a profile is removed only once no
// Chromium process uses it any more.
import { afterEach } from 'node:test';
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

export const CHROMIUM = process.env.QEMUWEB_CHROMIUM || '/usr/bin/chromium';

/** Flags every run needs here: no sandbox as root, nothing that reaches the network. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** A fresh profile directory; remove it with `removeProfile`. */
export function newProfile() {
  return mkdtempSync(join(tmpdir(), 'qemuweb-chromium-'));
}

/** Stops any Chromium still using `dir` (helpers can outlive a closed context), waits until none runs, and removes it. */
export function removeProfile(dir) {
  killBrowser(dir);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Starts Chromium on `profile` (a user-data-dir kept across launches, so a relaunch on the
 * same directory is the same browser profile, as after a page reload or a restart).
 * Returns a Playwright BrowserContext.
 */
export async function launch(profile, { args = [] } = {}) {
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
  });
}

/** The pids of the running processes whose command line names `profile` (zombies have none). */
function profileUsers(profile) {
  try {
    return execFileSync('pgrep', ['-f', '--', profile], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch (e) {
    if (e.status === 1) return []; // nothing matched
    throw e;
  }
}

/**
 * Waits until no process uses `profile` (Chromium's helpers end a moment after the
 * browser, and may write into the profile until then); throws after `ms`.
 */
export function waitProfileFree(profile, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const pids = profileUsers(profile);
    if (pids.length === 0) return;
    if (Date.now() > deadline) throw new Error(`processes ${pids.join(', ')} still use ${profile} after ${ms} ms`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
}

/**
 * Kills every Chromium process of `profile` at once, as a crash or power loss would, and
 * waits until none runs.
 */
export function killBrowser(profile) {
  try {
    execFileSync('pkill', ['-KILL', '-f', '--', profile]);
  } catch (e) {
    if (e.status !== 1) throw e; // 1: nothing matched
  }
  waitProfileFree(profile);
}

/** Uncaught exceptions of logged pages since the last test ended. */
const pageErrors = [];

// A page's uncaught exception fails the test that was running.
afterEach(() => {
  if (pageErrors.length === 0) return;
  const errors = pageErrors.splice(0);
  throw new Error(`uncaught exception(s) in the page:\n${errors.join('\n')}`);
});

/**
 * Forwards a page's console and errors to the test log, prefixed with `tag`; an uncaught
 * exception in the page (`pageerror`) also fails the running test.
 */
export function logPage(page, tag) {
  page.on('console', (m) => console.log(`[${tag}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => {
    console.log(`[${tag}] pageerror: ${e.stack || e}`);
    pageErrors.push(`[${tag}] ${e.stack || e}`);
  });
}

/**
 * Runs `run(page, context)` in a new page of Chromium on a fresh profile (its console logged
 * with `tag`), then closes the browser and removes the profile, whatever happened.
 */
export async function withFreshPage(tag, run) {
  const profile = newProfile();
  let context;
  try {
    context = await launch(profile);
    const page = await context.newPage();
    logPage(page, tag);
    return await run(page, context);
  } finally {
    await context?.close();
    removeProfile(profile);
  }
}
