import { defineConfig } from "vite";

// The dev server and `vite preview` send the same cross-origin isolation headers as
// public/_headers (static hosts) and nginx.conf. The @qemuweb packages are not pre-bundled:
// their worker and wasm are `new URL(..., import.meta.url)` assets Vite must see as such.
const headers = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
};

export default defineConfig({
  base: "./",
  server: { headers },
  preview: { headers },
  optimizeDeps: { exclude: ["@qemuweb/runtime", "@qemuweb/storage"] },
});
