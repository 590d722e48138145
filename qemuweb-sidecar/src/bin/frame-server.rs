//! `frame-server`: a native peer of `RemoteTransport` serving synthetic frames over
//! WebSocket on 127.0.0.1 (for tests, benchmarks and demos).
//!
//! ```text
//! frame-server [--port N] [--bind ADDR] [--dump-dir DIR]
//! ```
//!
//! Prints `frame-server listening on ws://ADDR:PORT` once it listens. Paths:
//!
//! - `/stream/NAME?frames=N&fps=F&width=W&height=H&seed=S&resize=AT:WxH` — a shared
//!   stream of `SyntheticScreen` frames (default 600 frames at 120 fps, 320x200, seed 1,
//!   no resize), produced from the first connection on; every connection gets the
//!   current screen as a keyframe, then the stream (the newest frame wins when a
//!   connection is slow). Other connections to the same name join the same stream.
//! - `/bench?frames=N&width=W&height=H&rect=S` — lock step: a frame stamped with the
//!   wall clock (milliseconds since the Unix epoch), then the next once the receiver
//!   acknowledged it. Whole-screen keyframes, or with `rect=S` a keyframe and then
//!   deltas of one `S x S` square each (at `x = 61 i mod (W - S + 1)`,
//!   `y = 37 i mod (H - S + 1)`, every byte set to `i mod 256`).
//! - `/sink?name=NAME` — the server receives: it asks for checksums, checks every frame
//!   against them and acknowledges each with its own screen's checksum. It logs one line
//!   per frame on stderr (`frame-server: sink NAME frame SEQ WxH key|delta RECTS crc
//!   XXXXXXXX`, RECTS as `x,y,w,h;...` or `-`) and, with `--dump-dir`, writes the final
//!   screen to `DIR/NAME.pam` (a PAM image, `TUPLTYPE RGB_ALPHA`) when the sender closes.
#[cfg(not(target_arch = "wasm32"))]
fn main() {
    if let Err(err) = native::main() {
        eprintln!("frame-server: {err}");
        std::process::exit(1);
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::collections::HashMap;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use futures::executor::block_on;
    use qemuweb_sidecar::synthetic::SyntheticScreen;
    use qemuweb_sidecar::*;

    type Streams = Arc<Mutex<HashMap<String, Sender<RemoteTransport>>>>;

    /// Serves synthetic frames over WebSocket (see the qemuweb-sidecar README).
    #[derive(Debug, clap::Parser)]
    #[command(name = "frame-server", version)]
    struct Args {
        /// The TCP port (0: a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Where `/sink` connections write their final screen (NAME.pam).
        #[arg(long)]
        dump_dir: Option<PathBuf>,
    }

    pub fn main() -> Result<(), String> {
        let Args {
            port,
            bind,
            dump_dir: dump,
        } = clap::Parser::parse();
        let listener = TcpListener::bind((bind.as_str(), port)).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("frame-server listening on ws://{addr}");
        let _ = std::io::stdout().flush();
        let streams = Streams::default();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let streams = streams.clone();
            let dump = dump.clone();
            std::thread::spawn(move || {
                if let Err(err) = serve(stream, &streams, dump.as_deref()) {
                    eprintln!("frame-server: connection: {err}");
                }
            });
        }
        Ok(())
    }

    /// `key=value` pairs of a query string.
    fn query(path: &str) -> HashMap<String, String> {
        let q = path.split_once('?').map_or("", |(_, q)| q);
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn num<T: std::str::FromStr>(q: &HashMap<String, String>, key: &str, default: T) -> T {
        q.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    fn serve(
        stream: TcpStream,
        streams: &Streams,
        dump: Option<&Path>,
    ) -> Result<(), SidecarError> {
        let (ws, path) = RemoteTransport::accept(stream)?;
        let route = path.split('?').next().unwrap_or_default().to_string();
        let q = query(&path);
        if route == "/sink" {
            let name = q.get("name").map_or("sink", String::as_str);
            let options = RemoteOptions {
                checksums: true,
                ..RemoteOptions::default()
            };
            return sink(RemoteTransport::accepted_receiver(ws, options), name, dump);
        }
        let mut tx = RemoteTransport::accepted_sender(ws, RemoteOptions::default());
        block_on(tx.connect())?;
        if route == "/bench" {
            return bench(tx, &q);
        }
        let Some(name) = route.strip_prefix("/stream/") else {
            return Err(SidecarError::Protocol {
                reason: format!("no such path {route}"),
            });
        };
        let mut map = streams.lock().unwrap_or_else(|e| e.into_inner());
        let tx = match map.get(name) {
            Some(joins) => match joins.send(tx) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(tx)) => tx, // its producer ended: start a new one
            },
            None => tx,
        };
        // The first connection to this name: its thread produces the stream.
        let (joins, joined) = mpsc::channel();
        let _ = joins.send(tx);
        map.insert(name.to_string(), joins);
        drop(map);
        produce(joined, &q)
    }

    fn epoch_ms() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    /// Produces a stream's frames at its rate and sends each to every connection.
    fn produce(
        joined: Receiver<RemoteTransport>,
        q: &HashMap<String, String>,
    ) -> Result<(), SidecarError> {
        let frames = num(q, "frames", 600u64);
        let fps = num(q, "fps", 120.0f64).max(1.0);
        let mut screen = SyntheticScreen::new(
            num(q, "seed", 1),
            num(q, "width", 320),
            num(q, "height", 200),
        );
        if let Some((at, size)) = q.get("resize").and_then(|r| r.split_once(':')) {
            if let (Ok(at), Some((w, h))) = (at.parse(), size.split_once('x')) {
                screen = screen.with_resize(at, w.parse().unwrap_or(1), h.parse().unwrap_or(1));
            }
        }
        let period = Duration::from_secs_f64(1.0 / fps);
        let mut next = Instant::now();
        let mut sinks: Vec<RemoteTransport> = Vec::new();
        loop {
            let got = if screen.sequence() >= frames {
                joined.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                joined.recv_timeout(next.saturating_duration_since(Instant::now()))
            };
            match got {
                Ok(mut tx) => {
                    // A new connection starts with the current screen (as a keyframe).
                    if block_on(tx.send(&screen.frame())).is_ok() {
                        sinks.push(tx);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {}
            }
            next += period;
            let frame = screen.step();
            sinks.retain_mut(|tx| block_on(tx.send(&frame)).is_ok());
        }
    }

    /// The square frame `i` of a `rect=side` benchmark changes (the page computes the same).
    pub fn bench_rect(i: u64, side: u32, w: u32, h: u32) -> DirtyRect {
        let x = (i as u32).wrapping_mul(61) % (w - side + 1);
        let y = (i as u32).wrapping_mul(37) % (h - side + 1);
        DirtyRect::new(x, y, side, side)
    }

    /// Lock step: one whole-screen keyframe at a time, the next once acknowledged.
    fn bench(mut tx: RemoteTransport, q: &HashMap<String, String>) -> Result<(), SidecarError> {
        let frames = num(q, "frames", 200u64);
        let (w, h) = (num(q, "width", 1024u32), num(q, "height", 768u32));
        let mut frame = Frame {
            metadata: FrameMetadata::keyframe(1, 0.0, w, h, PixelFormat::Rgba),
            data: vec![0; w as usize * h as usize * 4],
        };
        for i in (0..frame.data.len()).step_by(4096) {
            frame.data[i] = (i & 255) as u8;
        }
        let side = num(q, "rect", 0u32).min(w).min(h);
        for i in 1..=frames {
            frame.metadata.sequence = i;
            if side == 0 || i == 1 {
                frame.data[0] = i as u8;
            } else {
                // A delta: one side x side square, every byte set to the sequence number.
                let rect = bench_rect(i, side, w, h);
                for row in rect.y..rect.y + rect.height {
                    let at = (row as usize * w as usize + rect.x as usize) * 4;
                    frame.data[at..at + side as usize * 4].fill(i as u8);
                }
                frame.metadata.keyframe = false;
                frame.metadata.dirty = vec![rect];
            }
            frame.metadata.timestamp = epoch_ms();
            block_on(tx.send(&frame))?;
            if !tx.wait_acked(Duration::from_secs(10))? {
                return Err(SidecarError::Connection {
                    reason: format!("frame {i} was not acknowledged within 10 s"),
                });
            }
        }
        // The receiver may close first once it has the last frame: not an error here.
        let _ = tx.close(Duration::from_secs(5));
        Ok(())
    }

    /// Receives and checks frames until the peer closes, logging each; then writes the
    /// last screen to `dump/NAME.pam`.
    fn sink(mut rx: RemoteTransport, name: &str, dump: Option<&Path>) -> Result<(), SidecarError> {
        block_on(rx.connect())?;
        let mut last: Option<FrameMetadata> = None;
        loop {
            match block_on(rx.receive()) {
                Ok(meta) => {
                    let rects: Vec<String> = meta
                        .dirty
                        .iter()
                        .map(|r| format!("{},{},{},{}", r.x, r.y, r.width, r.height))
                        .collect();
                    eprintln!(
                        "frame-server: sink {name} frame {} {}x{} {} {} crc {:08X}",
                        meta.sequence,
                        meta.width,
                        meta.height,
                        if meta.keyframe { "key" } else { "delta" },
                        if rects.is_empty() {
                            "-".to_string()
                        } else {
                            rects.join(";")
                        },
                        crc32fast::hash(rx.screen())
                    );
                    last = Some(meta);
                }
                Err(err) if err.kind() == ErrorKind::Connection => break,
                Err(err) => return Err(err),
            }
        }
        eprintln!(
            "frame-server: sink {name} received {} frames",
            rx.stats().received
        );
        if let (Some(dir), Some(meta)) = (dump, last) {
            let safe = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !safe {
                return Err(SidecarError::Protocol {
                    reason: format!("sink name {name:?}: letters, digits, - and _ only"),
                });
            }
            let mut pam = format!(
                "P7\nWIDTH {}\nHEIGHT {}\nDEPTH 4\nMAXVAL 255\nTUPLTYPE RGB_ALPHA\nENDHDR\n",
                meta.width, meta.height
            )
            .into_bytes();
            pam.extend_from_slice(rx.screen());
            let (tmp, path) = (
                dir.join(format!(".{name}.pam")),
                dir.join(format!("{name}.pam")),
            );
            std::fs::write(&tmp, pam)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| SidecarError::Connection {
                    reason: format!("writing {}: {e}", path.display()),
                })?;
            eprintln!("frame-server: sink {name} wrote {}", path.display());
        }
        Ok(())
    }
}
