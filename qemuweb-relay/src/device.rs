//! The smoltcp device between a user-mode stack and a virtual network: two queues of
//! Ethernet frames, one the stack receives from and one it sends into. The relay's stack
//! uses it behind the page's switch; so can a test's guest.
//!
//! ```
//! use qemuweb_relay::device::FrameQueues;
//! use smoltcp::phy::{Device, TxToken};
//! use smoltcp::time::Instant;
//! let mut q = FrameQueues::default();
//! q.transmit(Instant::ZERO).unwrap().consume(60, |f| f.fill(0xff));
//! assert_eq!(q.tx.pop_front().unwrap().len(), 60);
//! ```

use std::collections::VecDeque;

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use crate::stack::MAX_FRAME;

/// Two queues of frames behind a smoltcp [`Device`].
#[derive(Debug, Default)]
pub struct FrameQueues {
    /// Frames for the stack, taken by its next poll.
    pub rx: VecDeque<Vec<u8>>,
    /// Frames the stack sent, for the caller to deliver.
    pub tx: VecDeque<Vec<u8>>,
}

/// A received frame.
pub struct Rx(Vec<u8>);
/// Room for a frame to send.
pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.push_back(frame);
        r
    }
}

impl Device for FrameQueues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }
}
