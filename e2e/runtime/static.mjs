// A static file server for the runtime's test pages: the page, the wasm bundle, v86 and the
// BIOS, with the JavaScript/wasm MIME types module scripts need and COOP/COEP/CORP so the
// page is cross-origin isolated, and single byte ranges. The tests' disk images are served by
// qemuweb-test-server on another port (Range, CORS, request log), as an image host would be;
// the benchmark serves them from here, the same origin for both contenders.
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, sep } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
};

/** Serves `root` on 127.0.0.1; resolves to { url, stop() }. */
export async function serveStatic(root) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = normalize(join(root, path));
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'cross-origin',
      'Cache-Control': 'no-store',
    };
    // `?noisolation` serves a page as a misconfigured host would: no COOP/COEP.
    if (new URL(req.url, 'http://x').searchParams.has('noisolation')) {
      delete headers['Cross-Origin-Opener-Policy'];
      delete headers['Cross-Origin-Embedder-Policy'];
    }
    let size = -1;
    try {
      if (file.startsWith(root + sep) || file === root) size = statSync(file).isFile() ? statSync(file).size : -1;
    } catch { size = -1; }
    if (size < 0) {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' });
      return res.end('not found\n');
    }
    const type = TYPES[extname(file)] ?? 'application/octet-stream';
    // One `bytes=a-b` range (what v86's own image loader and ours send); anything else: 200.
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m && Number(m[1]) < size) {
      const start = Number(m[1]);
      const end = Math.min(m[2] === '' ? size - 1 : Number(m[2]), size - 1);
      res.writeHead(206, { ...headers, 'Content-Type': type, 'Accept-Ranges': 'bytes', 'Content-Length': end - start + 1, 'Content-Range': `bytes ${start}-${end}/${size}` });
      if (req.method === 'HEAD') return res.end();
      return createReadStream(file, { start, end }).pipe(res);
    }
    res.writeHead(200, { ...headers, 'Content-Type': type, 'Accept-Ranges': 'bytes', 'Content-Length': size });
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).pipe(res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stop: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}
