//! The frame ring natively: an "emulator" thread draws a moving bar on a 640x400 RGBA
//! screen and sends each frame with the dirty rectangle it touched; a "display" thread,
//! slower than the emulator, keeps its own copy of the screen up to date from the ring.
//! At the end both screens are compared and the ring's counters printed.
//!
//! ```text
//! cargo run -p qemuweb-sidecar --example ring -- [FRAMES] [DISPLAY_DELAY_MS]
//! ```
//!
//! The producer never waits: when the display falls behind, stale frames are dropped
//! and their damage carried into the next one, so the display still ends on the exact
//! screen the emulator drew.

#[cfg(not(target_arch = "wasm32"))]
fn main() -> Result<(), qemuweb_sidecar::SidecarError> {
    native::main()
}

/// The ring's native shared memory and threads; in a browser the same ring sits in a
/// SharedArrayBuffer between a worker and the page (see the crate's Chromium tests).
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use qemuweb_sidecar::{
        DirtyRect, Frame, FrameMetadata, PixelFormat, RingConsumer, RingLayout, RingProducer,
        SharedMemory, SidecarError,
    };
    use std::time::{Duration, Instant};

    const WIDTH: u32 = 640;
    const HEIGHT: u32 = 400;
    const BAR: u32 = 16;

    pub fn main() -> Result<(), SidecarError> {
        let mut args = std::env::args().skip(1);
        let frames: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
        let delay = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(2));

        let layout = RingLayout::for_screen(3, WIDTH, HEIGHT, PixelFormat::Rgba)?;
        let memory = SharedMemory::new(layout.len_words());
        layout.init(&memory)?;
        let mut producer = RingProducer::attach(memory.clone())?;
        let mut consumer = RingConsumer::attach(memory)?;

        let display = std::thread::spawn(move || -> Result<(u64, Vec<u8>), SidecarError> {
            let mut received = 0;
            let mut last = 0;
            while last < frames {
                let Some(meta) = consumer.receive_timeout(Duration::from_secs(5))? else {
                    break;
                };
                received += 1;
                last = meta.sequence;
                std::thread::sleep(delay); // a display slower than the emulator
            }
            Ok((received, consumer.data().to_vec()))
        });

        let start = Instant::now();
        let row_bytes = (WIDTH * 4) as usize;
        let mut screen = vec![0u8; row_bytes * HEIGHT as usize];
        for sequence in 1..=frames {
            // The bar moves down one step per frame and takes the frame's colour.
            let y = (sequence as u32 * 4) % (HEIGHT - BAR);
            let colour = [
                (sequence % 251) as u8,
                0x80,
                (sequence % 13) as u8 * 19,
                0xff,
            ];
            for row in screen
                .chunks_exact_mut(row_bytes)
                .skip(y as usize)
                .take(BAR as usize)
            {
                for pixel in row.chunks_exact_mut(4) {
                    pixel.copy_from_slice(&colour);
                }
            }
            let metadata = if sequence == 1 {
                FrameMetadata::keyframe(sequence, 0.0, WIDTH, HEIGHT, PixelFormat::Rgba)
            } else {
                let at = start.elapsed().as_secs_f64() * 1000.0;
                let bar = DirtyRect::new(0, y, WIDTH, BAR);
                FrameMetadata::delta(sequence, at, WIDTH, HEIGHT, PixelFormat::Rgba, vec![bar])
            };
            producer.send(&Frame {
                metadata,
                data: screen.clone(),
            })?;
        }
        let sent_in = start.elapsed();

        let (received, shown) = display.join().expect("the display thread panicked")?;
        let stats = producer.stats();
        println!(
            "sent {frames} frames in {:.1} ms; the display took {received}, {} were dropped as stale",
            sent_in.as_secs_f64() * 1000.0,
            stats.dropped
        );
        if shown == screen {
            println!("the display's screen equals the emulator's, byte for byte");
            Ok(())
        } else {
            eprintln!("the display's screen differs from the emulator's");
            std::process::exit(1);
        }
    }
}
