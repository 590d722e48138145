// Assembles the npm packages @qemuweb/runtime, @qemuweb/config and @qemuweb/storage from the
// wasm-bindgen output of scripts/build-web, and @qemuweb/firmware from Debian's seabios
// package (run by scripts/build-npm, which documents it):
//
//   node bindings/npm/assemble.mjs WB_DIR OUT_DIR
//
// WB_DIR/{runtime,config,storage} hold the `wasm-bindgen --target web` output of
// qemuweb-runtime, qemuweb-config-js and qemuweb-storage-js; OUT_DIR/{runtime,config,storage,
// firmware} become the package directories. The TypeScript declarations are wasm-bindgen's
// (the tsify types of the crates); the only hand-written declarations are those of
// runtime/index.js. SeaBIOS comes from $QEMUWEB_SEABIOS_DIR (default /usr/share/seabios).
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');
const [wbDir, outDir] = process.argv.slice(2).map((p) => resolve(p));
if (!wbDir || !outDir) {
  console.error('usage: node bindings/npm/assemble.mjs WB_DIR OUT_DIR');
  process.exit(2);
}

/** `key = "value"` of a TOML table (only the flat string keys this script needs). */
function tomlString(text, table, key) {
  const start = text.indexOf(`[${table}]`);
  if (start < 0) throw new Error(`no [${table}] in Cargo.toml`);
  const body = text.slice(start + table.length + 2).split(/^\[/m)[0];
  const m = body.match(new RegExp(`^${key}\\s*=\\s*"([^"]*)"`, 'm'));
  if (!m) throw new Error(`no ${key} in [${table}]`);
  return m[1];
}

const workspace = readFileSync(join(REPO, 'Cargo.toml'), 'utf8');
const version = tomlString(workspace, 'workspace.package', 'version');
const license = tomlString(workspace, 'workspace.package', 'license');
const repository = tomlString(workspace, 'workspace.package', 'repository');
const homepage = tomlString(workspace, 'workspace.package', 'homepage');
const authors = workspace.match(/^authors\s*=\s*\["([^"]+)"/m)?.[1];
if (!authors) throw new Error('no authors in [workspace.package]');
/** The metadata every package shares. */
const common = (dir) => ({
  author: authors,
  repository: { type: 'git', url: `git+${repository}.git`, directory: `bindings/npm/${dir}` },
  homepage,
  bugs: { url: `${repository}/issues` },
});

/** The crate a package comes from must have the workspace version (the packages move in step). */
function crateVersion(manifest) {
  const text = readFileSync(join(REPO, manifest), 'utf8');
  if (/^version\.workspace\s*=\s*true/m.test(text)) return version;
  return tomlString(text, 'package', 'version');
}

const PACKAGES = [
  {
    dir: 'runtime',
    crate: 'qemuweb-runtime/Cargo.toml',
    glue: 'qemuweb_runtime',
    description: 'Run QemuWeb virtual machines in a web page: QemuClient, one module worker per VM, the v86 engine, HTTP Range/local/persistent disks',
    keywords: ['qemu', 'v86', 'emulator', 'virtual-machine', 'wasm', 'web-worker'],
    entry: 'index',
    extraFiles: ['index.js', 'index.d.ts', 'worker.js', 'qemu-worker.js'],
    sideEffects: ['./worker.js', './qemu-worker.js'],
    // The default engine and its firmware: index.js finds them beside this package.
    dependencies: { v86: '>=0.5.462 <0.6', '@qemuweb/firmware': version },
    // The QEMU engine's modules (large): installed by pages that run 64-bit guests.
    peerDependencies: { '@qemuweb/qemu-wasm': version },
    peerDependenciesMeta: { '@qemuweb/qemu-wasm': { optional: true } },
  },
  {
    dir: 'config',
    crate: 'bindings/config/Cargo.toml',
    glue: 'qemuweb_config_js',
    description: 'QemuWeb VM profiles and QEMU command lines (browser and native), with TypeScript types',
    keywords: ['qemu', 'emulator', 'virtual-machine', 'wasm', 'config'],
    sideEffects: false,
  },
  {
    dir: 'storage',
    crate: 'bindings/storage/Cargo.toml',
    glue: 'qemuweb_storage_js',
    description: 'QemuWeb block devices in the browser: raw and qcow2 over HTTP Range or a File/Blob, copy-on-write over IndexedDB, overlay export',
    keywords: ['qcow2', 'block-device', 'indexeddb', 'wasm', 'http-range'],
    sideEffects: false,
  },
];

/**
 * The runtime's module worker as one self-contained file: the wasm-bindgen glue with its
 * inline snippets pasted in, then the bootstrap. Bundlers copy a file referenced as
 * `new URL('./worker.js', import.meta.url)` verbatim (Vite, webpack 5, Parcel), so it must
 * not import siblings; it takes the (bundler-rewritten) URL of the wasm from its `#wasm=`.
 */
function inlineGlue(src, glueName) {
  let glue = readFileSync(join(src, `${glueName}.js`), 'utf8');
  glue = glue.replace(/^import \{[^}]*\} from '(\.\/snippets\/[^']+)';\n/gm, (_, path) => {
    const snippet = readFileSync(join(src, path), 'utf8');
    return `// ${path}\n${snippet.replace(/^export\s+(?=(async\s+)?function|class|const|let)/gm, '')}\n`;
  });
  const left = glue.match(/^\s*import\s.*$/m);
  if (left) throw new Error(`the ${glueName} glue has an import the worker cannot inline: ${left[0]}`);
  return glue;
}

function selfContainedWorker(src, glueName) {
  const glue = inlineGlue(src, glueName);
  if (!/^export function workerMain\(/m.test(glue)) throw new Error(`the ${glueName} glue has no workerMain`);
  return `// The module worker of one QemuWeb VM (generated by bindings/npm/assemble.mjs from the
// wasm-bindgen output of qemuweb-runtime). QemuClient starts it with
// \`new Worker(url, {type: "module"})\`; \`#wasm=URL\` says where qemuweb_runtime_bg.wasm is.
${glue}
// ---- bootstrap
{
  const wasm = new URLSearchParams(self.location.hash.slice(1)).get('wasm');
  await __wbg_init(wasm ? { module_or_path: wasm } : undefined);
  workerMain();
}
`;
}

/**
 * The QEMU engine's worker (qemuweb-runtime/web/qemu-worker.js) as one self-contained file
 * too: the glue pasted in, then the worker with its import of the glue taken out. The VM
 * worker starts it with its own `#wasm=`.
 */
function selfContainedQemuWorker(src, glueName) {
  const glue = inlineGlue(src, glueName);
  if (!/^export class QemuDiskPort\b/m.test(glue)) throw new Error(`the ${glueName} glue has no QemuDiskPort`);
  const worker = readFileSync(join(REPO, 'qemuweb-runtime', 'web', 'qemu-worker.js'), 'utf8');
  const importLine = `import init, { QemuDiskPort } from "./${glueName}.js";\n`;
  if (!worker.includes(importLine)) throw new Error(`qemu-worker.js does not import the glue as expected: ${importLine}`);
  return `${glue}\n// ---- qemu-worker.js\nconst init = __wbg_init;\n${worker.replace(importLine, '')}`;
}

mkdirSync(outDir, { recursive: true });
for (const p of PACKAGES) {
  const src = join(wbDir, p.dir);
  const out = join(outDir, p.dir);
  const crateVer = crateVersion(p.crate);
  if (crateVer !== version) throw new Error(`${p.crate} is ${crateVer}, the workspace ${version}: versions must move in step`);
  for (const ext of ['.js', '.d.ts', '_bg.wasm']) {
    if (!existsSync(join(src, p.glue + ext))) throw new Error(`${join(src, p.glue + ext)} is missing: run scripts/build-web first`);
  }
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const files = [`${p.glue}.js`, `${p.glue}.d.ts`, `${p.glue}_bg.wasm`, `${p.glue}_bg.wasm.d.ts`];
  for (const f of files) cpSync(join(src, f), join(out, f));
  // wasm-bindgen declares `[Symbol.dispose]()` on every class; a project whose `lib` stops
  // before ESNext would fail to type-check the package. The declarations ask for that lib.
  const dts = join(out, `${p.glue}.d.ts`);
  const decl = readFileSync(dts, 'utf8');
  if (decl.includes('Symbol.dispose')) writeFileSync(dts, `/// <reference lib="esnext.disposable" />\n${decl}`);
  if (existsSync(join(src, 'snippets'))) {
    cpSync(join(src, 'snippets'), join(out, 'snippets'), { recursive: true });
    files.push('snippets/');
  }
  if (p.dir === 'runtime') {
    writeFileSync(join(out, 'worker.js'), selfContainedWorker(src, p.glue));
    writeFileSync(join(out, 'qemu-worker.js'), selfContainedQemuWorker(src, p.glue));
    cpSync(join(HERE, p.dir, 'index.d.ts'), join(out, 'index.d.ts'));
    // index.js re-exports QemuError from the snippet the glue imports (one module, one class).
    const glue = readFileSync(join(src, `${p.glue}.js`), 'utf8');
    const errorModule = glue.match(/^import \{[^}]*\bQemuError\b[^}]*\} from '\.\/(snippets\/[^']+)';$/m);
    if (!errorModule) throw new Error(`the ${p.glue} glue does not import QemuError from a snippet`);
    const index = readFileSync(join(HERE, p.dir, 'index.js'), 'utf8');
    if (!index.includes('./QEMU_ERROR_MODULE')) throw new Error('runtime/index.js has no QEMU_ERROR_MODULE to fill in');
    writeFileSync(join(out, 'index.js'), index.replace('./QEMU_ERROR_MODULE', `./${errorModule[1]}`));
  }
  files.push(...(p.extraFiles ?? []).filter((f) => !files.includes(f)));
  cpSync(join(HERE, p.dir, 'README.md'), join(out, 'README.md'));
  for (const f of ['LICENSE-MIT', 'LICENSE-APACHE']) {
    cpSync(join(REPO, f), join(out, f));
    files.push(f);
  }
  const entry = p.entry ?? p.glue;
  const pkg = {
    name: `@qemuweb/${p.dir}`,
    version,
    description: p.description,
    license,
    ...common(p.dir),
    keywords: p.keywords,
    type: 'module',
    main: `./${entry}.js`,
    module: `./${entry}.js`,
    types: `./${entry}.d.ts`,
    exports: {
      '.': { types: `./${entry}.d.ts`, import: `./${entry}.js`, default: `./${entry}.js` },
      ...(p.dir === 'runtime' ? { './worker.js': './worker.js', './qemu-worker.js': './qemu-worker.js' } : {}),
      [`./${p.glue}_bg.wasm`]: `./${p.glue}_bg.wasm`,
      './package.json': './package.json',
    },
    files,
    sideEffects: p.sideEffects,
    ...(p.dependencies ? { dependencies: p.dependencies } : {}),
    ...(p.peerDependencies ? { peerDependencies: p.peerDependencies, peerDependenciesMeta: p.peerDependenciesMeta } : {}),
  };
  writeFileSync(join(out, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
  const listed = readdirSync(out);
  for (const f of files) {
    if (!listed.includes(f.replace(/\/$/, ''))) throw new Error(`${p.dir}: ${f} is in "files" but was not written`);
  }
  console.log(out);
}

// @qemuweb/firmware: SeaBIOS and its VGA BIOS as Debian builds them, for the engines'
// default assets (@qemuweb/runtime's index.js finds them at ../firmware/).
{
  const seabios = process.env.QEMUWEB_SEABIOS_DIR || '/usr/share/seabios';
  const out = join(outDir, 'firmware');
  const blobs = ['bios-256k.bin', 'vgabios-stdvga.bin'];
  for (const f of blobs) {
    if (!existsSync(join(seabios, f))) throw new Error(`${join(seabios, f)} is missing: apt-get install seabios`);
  }
  let debian = 'unknown';
  try {
    debian = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'seabios'], { encoding: 'utf8' }).trim();
  } catch {
    // Not a Debian package (QEMUWEB_SEABIOS_DIR): said so below.
  }
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  for (const f of blobs) cpSync(join(seabios, f), join(out, f));
  const copyright = '/usr/share/doc/seabios/copyright';
  const licenses = existsSync(copyright) ? ['COPYRIGHT', 'LGPL-3', 'LGPL-2'] : [];
  if (licenses.length) {
    cpSync(copyright, join(out, 'COPYRIGHT'));
    for (const l of ['LGPL-3', 'LGPL-2']) cpSync(join('/usr/share/common-licenses', l), join(out, l));
  } else if (process.env.CI) {
    throw new Error(`${copyright} is missing: the firmware package must carry SeaBIOS's licenses`);
  }
  writeFileSync(join(out, 'README.md'), `# @qemuweb/firmware

SeaBIOS (\`bios-256k.bin\`) and its VGA BIOS (\`vgabios-stdvga.bin\`), the firmware of
QemuWeb's engines. \`@qemuweb/runtime\` depends on this package and uses these files by
default (its \`QemuClient\` points \`assets.bios\` and \`assets.vgaBios\` at them).

The files are Debian's build of SeaBIOS, package \`seabios\` version ${debian}; its source is
Debian's source package \`seabios\` of that version. SeaBIOS is free software under the GNU
LGPL (version 3 for most of it): see \`COPYRIGHT\` (Debian's copyright file), \`LGPL-3\` and
\`LGPL-2\`.
`);
  const pkg = {
    name: '@qemuweb/firmware',
    version,
    description: `SeaBIOS and its VGA BIOS (Debian's seabios ${debian}), the default firmware of QemuWeb's engines`,
    license: 'SEE LICENSE IN COPYRIGHT',
    ...common('firmware'),
    keywords: ['seabios', 'bios', 'firmware', 'qemu', 'v86'],
    exports: Object.fromEntries([...blobs, 'package.json'].map((f) => [`./${f}`, `./${f}`])),
    files: [...blobs, ...licenses],
    sideEffects: false,
  };
  writeFileSync(join(out, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
  console.log(out);
}
