//! Frame transports: how frames get from the emulator to a display.
//!
//! [`FrameTransport`] is the interface every transport offers: `connect`, then `send`
//! on the emulator's end or `receive` on the display's end. The receiving end keeps the
//! whole current screen ([`FrameTransport::screen`]) and `receive` reports what changed,
//! so a display redraws only the dirty rectangles.
//!
//! [`LocalTransport`] runs over the shared-memory frame [`ring`](crate::ring): the
//! sending end in the emulator's worker, the receiving end in the page, both over the
//! same `SharedArrayBuffer` (natively, [`SharedMemory`](crate::SharedMemory) between
//! threads). Its `send` never blocks the emulator; stale frames are dropped.
//!
//! ```
//! use qemuweb_sidecar::*;
//! # futures::executor::block_on(async {
//! let memory = LocalTransport::create_ring(3, 64, 48, PixelFormat::Rgba)?;
//! let mut display = LocalTransport::receiver(memory.clone());
//! let mut emulator = LocalTransport::sender(memory);
//! display.connect().await?;
//! emulator.connect().await?;
//!
//! let screen = vec![9u8; 64 * 48 * 4];
//! emulator.send(&Frame {
//!     metadata: FrameMetadata::keyframe(1, 0.0, 64, 48, PixelFormat::Rgba),
//!     data: screen.clone(),
//! }).await?;
//! let got = display.receive().await?;
//! assert!(got.keyframe);
//! assert_eq!(display.screen(), &screen[..]);
//! # Ok::<(), SidecarError>(())
//! # }).unwrap();
//! ```

use async_trait::async_trait;

use crate::frame::{Frame, FrameMetadata, PixelFormat};
use crate::ring::{RingConsumer, RingLayout, RingProducer, RingStats, NOTIFY_WORD};
use crate::SidecarError;

#[cfg(target_arch = "wasm32")]
pub use crate::memory::SabMemory as RingMemory;
#[cfg(not(target_arch = "wasm32"))]
pub use crate::memory::SharedMemory as RingMemory;

/// A way to move frames from an emulator to a display. One value is one end: the
/// sending end calls [`send`](Self::send), the receiving end
/// [`receive`](Self::receive); the other operation fails with
/// [`ErrorKind::WrongSide`](crate::ErrorKind::WrongSide).
///
/// The futures are not `Send`: transports live on one thread (a worker or the page).
#[async_trait(?Send)]
pub trait FrameTransport {
    /// Joins the transport. Frames can be sent or received only after this succeeds.
    async fn connect(&mut self) -> Result<(), SidecarError>;

    /// Sends a frame (its data is the whole screen; `metadata.dirty` says what changed
    /// since the previous frame sent). Never waits for the receiver.
    async fn send(&mut self, frame: &Frame) -> Result<(), SidecarError>;

    /// Waits for the next frame, applies it to [`screen`](Self::screen) and returns
    /// metadata describing the change since the previously received frame: a keyframe
    /// (redraw everything) or the dirty rectangles to redraw. Frames that arrived
    /// meanwhile may have been skipped as stale; their changes are included.
    async fn receive(&mut self) -> Result<FrameMetadata, SidecarError>;

    /// The receiving end's screen as of the last received frame (empty before the
    /// first), laid out as that frame's format says.
    fn screen(&self) -> &[u8];
}

/// Which end of a [`LocalTransport`].
#[derive(Debug)]
enum End {
    /// The emulator's end, attached after `connect`.
    Sender(Option<RingProducer<RingMemory>>),
    /// The display's end, attached after `connect`.
    Receiver(Option<RingConsumer<RingMemory>>),
}

/// A [`FrameTransport`] over a shared-memory frame ring between a worker and the page
/// (see [`ring`](crate::ring) for the back-pressure and resize policy).
///
/// Create the ring once ([`create_ring`](Self::create_ring), on the page), hand its
/// memory to the worker (post `SabMemory::buffer()`), then make a
/// [`sender`](Self::sender) there and a [`receiver`](Self::receiver) on the page.
///
/// On the page's main thread `receive` waits with `Atomics.waitAsync` (it never blocks
/// the page); natively it blocks the calling thread until a frame arrives.
#[derive(Debug)]
pub struct LocalTransport {
    memory: RingMemory,
    end: End,
}

impl LocalTransport {
    /// New memory holding an empty ring of `slot_count` slots sized for a
    /// `width x height` screen of `format` (frames up to that many bytes fit, so a
    /// smaller screen, e.g. after a resize, fits too).
    pub fn create_ring(
        slot_count: u32,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<RingMemory, SidecarError> {
        let layout = RingLayout::for_screen(slot_count, width, height, format)?;
        let memory = RingMemory::new(layout.len_words());
        layout.init(&memory)?;
        Ok(memory)
    }

    /// The sending (emulator's) end over an initialised ring in `memory`.
    pub fn sender(memory: RingMemory) -> LocalTransport {
        LocalTransport {
            memory,
            end: End::Sender(None),
        }
    }

    /// The receiving (display's) end over an initialised ring in `memory`.
    pub fn receiver(memory: RingMemory) -> LocalTransport {
        LocalTransport {
            memory,
            end: End::Receiver(None),
        }
    }

    /// The ring's memory (e.g. to post its buffer to a worker).
    pub fn memory(&self) -> &RingMemory {
        &self.memory
    }

    /// Whether [`connect`](FrameTransport::connect) succeeded.
    pub fn is_connected(&self) -> bool {
        matches!(self.end, End::Sender(Some(_)) | End::Receiver(Some(_)))
    }

    /// The ring's counters (published and dropped frames, resizes), once connected.
    pub fn stats(&self) -> Option<RingStats> {
        match &self.end {
            End::Sender(Some(p)) => Some(p.stats()),
            End::Receiver(Some(c)) => Some(c.stats()),
            _ => None,
        }
    }

    /// Connects even if the ring records this end as attached: for a replacement
    /// worker or page after the previous one was terminated without detaching (see
    /// [`RingProducer::force_attach`]). Never use it while the previous one may run.
    pub fn force_connect(&mut self) -> Result<(), SidecarError> {
        match &mut self.end {
            End::Sender(p) => *p = Some(RingProducer::force_attach(self.memory.clone())?),
            End::Receiver(c) => *c = Some(RingConsumer::force_attach(self.memory.clone())?),
        }
        Ok(())
    }

    /// Connects now ([`connect`](FrameTransport::connect) without the future: attaching
    /// to a ring never waits).
    pub fn attach(&mut self) -> Result<(), SidecarError> {
        match &mut self.end {
            End::Sender(Some(_)) | End::Receiver(Some(_)) => {}
            End::Sender(p) => *p = Some(RingProducer::attach(self.memory.clone())?),
            End::Receiver(c) => *c = Some(RingConsumer::attach(self.memory.clone())?),
        }
        Ok(())
    }

    /// Sends now ([`send`](FrameTransport::send) without the future: the ring's
    /// producer never waits).
    pub fn send_now(&mut self, frame: &Frame) -> Result<(), SidecarError> {
        match &mut self.end {
            End::Sender(Some(p)) => p.send(frame).map(|_| ()),
            End::Sender(None) => Err(SidecarError::NotConnected),
            End::Receiver(_) => Err(SidecarError::WrongSide {
                operation: "send",
                side: "receiving",
            }),
        }
    }

    /// The receiving end's current screen (see [`FrameTransport::screen`]).
    pub fn screen_data(&self) -> &[u8] {
        match &self.end {
            End::Receiver(Some(c)) => c.data(),
            _ => &[],
        }
    }

    /// The receiving end: takes the newest frame if one is ready, without waiting
    /// (`None`: nothing new). For a display that polls, e.g. once an animation frame.
    pub fn try_receive(&mut self) -> Result<Option<FrameMetadata>, SidecarError> {
        self.consumer("receive")?.try_receive()
    }

    /// The receiving end's whole current screen as a [`Frame`] (a copy).
    pub fn frame(&self) -> Option<Frame> {
        match &self.end {
            End::Receiver(Some(c)) => c.frame(),
            _ => None,
        }
    }

    fn consumer(
        &mut self,
        operation: &'static str,
    ) -> Result<&mut RingConsumer<RingMemory>, SidecarError> {
        match &mut self.end {
            End::Receiver(Some(c)) => Ok(c),
            End::Receiver(None) => Err(SidecarError::NotConnected),
            End::Sender(_) => Err(SidecarError::WrongSide {
                operation,
                side: "sending",
            }),
        }
    }

    /// Waits (without blocking the page) until the ring's notify word moves from
    /// `seen` or `timeout` passes.
    #[cfg(target_arch = "wasm32")]
    async fn wait_for_publish(&self, seen: u32) {
        self.memory
            .wait_async(NOTIFY_WORD, seen, std::time::Duration::from_millis(500))
            .await;
    }

    /// Blocks the thread until the ring's notify word moves from `seen` or a timeout.
    #[cfg(not(target_arch = "wasm32"))]
    async fn wait_for_publish(&self, seen: u32) {
        use crate::SharedWords;
        self.memory
            .wait(NOTIFY_WORD, seen, std::time::Duration::from_millis(500));
    }
}

#[async_trait(?Send)]
impl FrameTransport for LocalTransport {
    async fn connect(&mut self) -> Result<(), SidecarError> {
        self.attach()
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), SidecarError> {
        self.send_now(frame)
    }

    async fn receive(&mut self) -> Result<FrameMetadata, SidecarError> {
        loop {
            let consumer = self.consumer("receive")?;
            let seen = consumer.notify_value();
            if let Some(meta) = consumer.try_receive()? {
                return Ok(meta);
            }
            self.wait_for_publish(seen).await;
        }
    }

    fn screen(&self) -> &[u8] {
        self.screen_data()
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::{DirtyRect, ErrorKind};
    use futures::executor::block_on;

    fn keyframe(seq: u64, value: u8) -> Frame {
        Frame {
            metadata: FrameMetadata::keyframe(seq, 0.0, 4, 4, PixelFormat::Rgba),
            data: vec![value; 64],
        }
    }

    #[test]
    fn ends_refuse_the_other_sides_job_and_use_before_connect() {
        block_on(async {
            let memory = LocalTransport::create_ring(2, 4, 4, PixelFormat::Rgba).unwrap();
            let mut tx = LocalTransport::sender(memory.clone());
            let mut rx = LocalTransport::receiver(memory);
            let err = tx.send(&keyframe(1, 1)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotConnected);
            assert_eq!(
                rx.try_receive().unwrap_err().kind(),
                ErrorKind::NotConnected
            );
            tx.connect().await.unwrap();
            rx.connect().await.unwrap();
            assert_eq!(tx.receive().await.unwrap_err().kind(), ErrorKind::WrongSide);
            let err = rx.send(&keyframe(1, 1)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WrongSide);
            // A second sender on the same ring is refused while the first is attached.
            let mut second = LocalTransport::sender(tx.memory().clone());
            assert_eq!(
                second.connect().await.unwrap_err().kind(),
                ErrorKind::AlreadyAttached
            );
        });
    }

    #[test]
    fn receive_waits_for_a_frame_from_another_thread_and_reports_dirty_rects() {
        let memory = LocalTransport::create_ring(3, 4, 4, PixelFormat::Rgba).unwrap();
        let mut rx = LocalTransport::receiver(memory.clone());
        block_on(rx.connect()).unwrap();
        let (first_seen, wait_first) = std::sync::mpsc::channel::<()>();
        let producer = std::thread::spawn(move || {
            block_on(async {
                let mut tx = LocalTransport::sender(memory);
                tx.connect().await.unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
                tx.send(&keyframe(1, 3)).await.unwrap();
                wait_first.recv().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
                let mut data = vec![3u8; 64];
                data[(4 + 2) * 4..(4 + 2) * 4 + 4].copy_from_slice(&[1, 2, 3, 4]);
                let meta = FrameMetadata::delta(
                    2,
                    1.0,
                    4,
                    4,
                    PixelFormat::Rgba,
                    vec![DirtyRect::new(2, 1, 1, 1)],
                );
                tx.send(&Frame {
                    metadata: meta,
                    data,
                })
                .await
                .unwrap();
            })
        });
        let first = block_on(rx.receive()).unwrap();
        assert!(first.keyframe);
        assert_eq!(rx.screen(), &[3u8; 64][..]);
        first_seen.send(()).unwrap();
        let second = block_on(rx.receive()).unwrap();
        assert!(!second.keyframe);
        assert_eq!(second.dirty, vec![DirtyRect::new(2, 1, 1, 1)]);
        assert_eq!(&rx.screen()[24..28], &[1, 2, 3, 4]);
        producer.join().unwrap();
        assert_eq!(rx.stats().unwrap().published, 2);
    }
}
