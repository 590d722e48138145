// Launches Debian's Chromium through playwright-core, headless, as root on a closed network.
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

/** Stops any Chromium still using `dir` (helpers can outlive a closed context) and removes it. */
export function removeProfile(dir) {
  killBrowser(dir);
  rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
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

/** Kills every Chromium process of `profile` at once, as a crash or power loss would. */
export function killBrowser(profile) {
  try {
    execFileSync('pkill', ['-KILL', '-f', '--', `--user-data-dir=${profile}`]);
  } catch (e) {
    if (e.status !== 1) throw e; // 1: nothing matched
  }
}

/** Forwards a page's console and errors to the test log, prefixed with `tag`. */
export function logPage(page, tag) {
  page.on('console', (m) => console.log(`[${tag}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.log(`[${tag}] pageerror: ${e.stack || e}`));
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
