//! The engines' end of the display ring: every engine that shows a screen (v86's text and
//! graphics paths, QEMU's display block) publishes its [`Frame`]s through one
//! [`FrameRing`], which numbers them (text and graphics frames of one VM share the
//! sequence) and never waits: a frame the page has not taken yet is replaced
//! (qemuweb-sidecar's [`LocalTransport`]).

use crate::error::RuntimeError;
use qemuweb_sidecar::{Frame, LocalTransport, RingMemory};

/// The producing end of a display ring, with the sequence number of the last frame.
#[derive(Debug)]
pub struct FrameRing {
    transport: LocalTransport,
    sequence: u64,
}

impl FrameRing {
    /// Takes the producer's place in the ring in `memory` (the page hands a ring to one
    /// run of one VM at a time; a previous run's worker may have been terminated without
    /// detaching).
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Engine`] if `memory` holds no valid ring.
    pub fn connect(memory: RingMemory) -> Result<FrameRing, RuntimeError> {
        let mut transport = LocalTransport::sender(memory);
        transport
            .force_connect()
            .map_err(|e| RuntimeError::Engine(format!("display ring: {e}")))?;
        Ok(FrameRing {
            transport,
            sequence: 0,
        })
    }

    /// The sequence number the next frame gets.
    pub fn next_sequence(&self) -> u64 {
        self.sequence + 1
    }

    /// Publishes `frame` (if any) as the next in sequence; returns whether one went out.
    /// A frame the ring refuses (larger than its slots) is dropped: the ring never blocks
    /// the emulator.
    pub fn publish(&mut self, frame: Option<Frame>) -> bool {
        let Some(mut frame) = frame else {
            return false;
        };
        let sequence = self.next_sequence();
        frame.metadata.sequence = sequence;
        self.sequence = sequence;
        self.transport.send_now(&frame).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::vga_graphics::GraphicsScreen;
    use qemuweb_sidecar::PixelFormat;

    #[test]
    fn frames_are_numbered_and_reach_the_page_end() {
        let memory = LocalTransport::create_ring(3, 64, 32, PixelFormat::Rgba).unwrap();
        let mut page = LocalTransport::receiver(memory.clone());
        page.attach().unwrap();
        let mut ring = FrameRing::connect(memory.clone()).unwrap();
        assert!(!ring.publish(None));
        let mut screen = GraphicsScreen::new(64, 32);
        assert!(ring.publish(screen.take_frame(ring.next_sequence(), 0.0)));
        assert_eq!(page.try_receive().unwrap().unwrap().sequence, 1);
        screen.invalidate();
        // A frame numbered by its maker is renumbered in the ring's sequence.
        assert!(ring.publish(screen.take_frame(99, 0.0)));
        assert_eq!(page.try_receive().unwrap().unwrap().sequence, 2);
        // Too large for the ring's slots: dropped, not an error.
        let mut big = GraphicsScreen::new(640, 480);
        assert!(!ring.publish(big.take_frame(1, 0.0)));
        // A new producer (a restarted worker) takes over the same ring.
        assert!(FrameRing::connect(memory).is_ok());
    }
}
