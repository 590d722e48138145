// Copies SeaBIOS (bios-256k.bin, vgabios-stdvga.bin) into public/bios/, from Debian's
// `seabios` package (`apt install seabios`) or the directory in $SEABIOS_DIR. The BIOS is
// not bundled with QemuWeb: the deployer provides it (SeaBIOS is LGPL-3.0).
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const from = process.env.SEABIOS_DIR || "/usr/share/seabios";
const to = new URL("../public/bios/", import.meta.url).pathname;
const files = ["bios-256k.bin", "vgabios-stdvga.bin"];
const missing = files.filter((f) => !existsSync(join(from, f)));
if (missing.length) {
  console.error(`copy-bios: ${missing.join(", ")} not in ${from}: install Debian's seabios package or set SEABIOS_DIR`);
  process.exit(1);
}
mkdirSync(to, { recursive: true });
for (const f of files) copyFileSync(join(from, f), join(to, f));
console.log(`copy-bios: ${files.join(", ")} -> public/bios/`);
