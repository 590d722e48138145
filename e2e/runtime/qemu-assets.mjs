// The QEMU build of the runtime's browser tests and benchmark: a qemuweb-wasm-build output
// directory named by QEMUWEB_QEMU_DIR (scripts/test exports it), copied whole to /qemu/ of
// the web root and given to the runtime as assets.qemuDir.
import { cpSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The build's manifest, or null when it cannot be read. */
export function qemuBuild(dir = process.env.QEMUWEB_QEMU_DIR) {
  try {
    return JSON.parse(readFileSync(join(dir, 'qemu-build.json'), 'utf8'));
  } catch {
    return null;
  }
}

/** Why the QEMU build cannot be used, or null. */
export function qemuMissing(dir = process.env.QEMUWEB_QEMU_DIR) {
  if (!dir) return 'QEMUWEB_QEMU_DIR is not set (build the module with scripts/build-qemu)';
  const build = qemuBuild(dir);
  if (!build) return `${dir} has no readable qemu-build.json`;
  if (!build.modules?.length) return `${dir}/qemu-build.json lists no modules (rebuild it with scripts/build-qemu)`;
  const gone = build.files.map((f) => f.name).filter((f) => !existsSync(join(dir, f)));
  return gone.length ? `${dir} lacks ${gone.join(', ')}` : null;
}

/** The guest arch of a default profile's id. */
export const archOf = (profileId) => ['aarch64', 'x86_64', 'i386'].find((a) => profileId.includes(a));

/**
 * Whether the build runs `profileId`'s guests: a module of its arch (i386 guests also run on
 * qemu-system-x86_64), as the engine's `module_for` picks it. A wasm32 build
 * (`scripts/build-qemu`) has i386; a wasm64 one (`--plan wasm64`) x86_64 and aarch64.
 */
export function runsProfile(profileId, build = qemuBuild()) {
  const arch = archOf(profileId);
  const archs = arch === 'i386' ? ['i386', 'x86_64'] : [arch];
  return (build?.modules ?? []).some((m) => archs.includes(m.arch));
}

/**
 * Says loudly on stderr that `what` (e.g. "The QEMU engine tests are") is SKIPPED, not
 * passed, when `missing` (a reason from qemuMissing) is set.
 */
export function warnQemuSkipped(missing, what) {
  if (missing) {
    console.error(`\n${'!'.repeat(78)}\n!! QEMU build missing: ${missing}\n!! ${what} SKIPPED (not passed).\n${'!'.repeat(78)}\n`);
  }
}

/** Copies the build into `root`/qemu/. */
export function installQemu(root, dir = process.env.QEMUWEB_QEMU_DIR) {
  cpSync(dir, join(root, 'qemu'), { recursive: true });
}

/** Engine assets for the build under /qemu/ of the web root. */
export const QEMU_ASSETS = { qemuDir: './qemu/' };
