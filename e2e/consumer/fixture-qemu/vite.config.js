import { defineConfig } from 'vite';

// Cross-origin isolation (SharedArrayBuffer, QEMU's threads) for the dev server and
// `vite preview`; the production host sets the same headers. The dev server must not
// pre-bundle the wasm-bindgen package: its workers and wasm are `new URL(..., import.meta.url)`
// assets. public/qemu/ is @qemuweb/qemu-wasm's dist/, copied as it is.
const headers = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};
export default defineConfig({
  server: { headers },
  preview: { headers },
  optimizeDeps: { exclude: ['@qemuweb/runtime'] },
});
