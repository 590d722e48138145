//! What the switch accepts from a NIC, and why it drops the rest.

use smoltcp::wire::{EthernetAddress, EthernetFrame, ETHERNET_HEADER_LEN};

use crate::Mac;

/// The shortest frame accepted: an Ethernet header (14 bytes; NICs of virtual machines send
/// frames without the padding to 60 bytes that hardware adds, e.g. 42-byte ARP requests).
pub const MIN_FRAME_BYTES: usize = ETHERNET_HEADER_LEN;

/// The largest frame any network accepts (a 9000-byte jumbo MTU and the header); each
/// network's own limit is its `limits.maxFrameBytes`.
pub const MAX_FRAME_BYTES: usize = 9014;

/// Why the switch did not forward a frame (or one of its copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// Longer than the network's largest frame.
    Oversized,
    /// The source address is a group (multicast/broadcast) or all-zero address.
    BadSource,
    /// An 802.3 length field that is not a valid length or is longer than the payload.
    BadLength,
    /// The source address is the gateway's, which only the network's services use.
    Spoofed,
    /// The port has learned its largest number of source addresses.
    TooManyMacs,
    /// The port sent more than its rate (frames or bytes per second, with its burst).
    RateLimited,
    /// The destination port's queue had no room for this sender's frame.
    QueueFull,
    /// Addressed to the gateway for a destination beyond the network, and the network has
    /// no uplink (or is isolated).
    NoRoute,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 9] = [
        DropReason::Runt,
        DropReason::Oversized,
        DropReason::BadSource,
        DropReason::BadLength,
        DropReason::Spoofed,
        DropReason::TooManyMacs,
        DropReason::RateLimited,
        DropReason::QueueFull,
        DropReason::NoRoute,
    ];

    /// A short stable name (`runt`, `oversized`, ...), for logs and counters.
    ///
    /// ```
    /// assert_eq!(qemuweb_net::DropReason::QueueFull.as_str(), "queue-full");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::Oversized => "oversized",
            DropReason::BadSource => "bad-source",
            DropReason::BadLength => "bad-length",
            DropReason::Spoofed => "spoofed",
            DropReason::TooManyMacs => "too-many-macs",
            DropReason::RateLimited => "rate-limited",
            DropReason::QueueFull => "queue-full",
            DropReason::NoRoute => "no-route",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a frame as a NIC sent it (no frame check sequence) against a largest size, and
/// returns its Ethernet view.
///
/// ```
/// use qemuweb_net::{validate_frame, DropReason};
/// let mut frame = vec![0xff; 6];
/// frame.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
/// frame.extend([0u8; 28]);
/// assert!(validate_frame(&frame, 1514).is_ok());
/// assert_eq!(validate_frame(&frame[..10], 1514).unwrap_err(), DropReason::Runt);
/// assert_eq!(validate_frame(&frame, 40).unwrap_err(), DropReason::Oversized);
/// ```
///
/// # Errors
///
/// The [`DropReason`]: [`Runt`](DropReason::Runt), [`Oversized`](DropReason::Oversized),
/// [`BadSource`](DropReason::BadSource) or [`BadLength`](DropReason::BadLength).
pub fn validate_frame(frame: &[u8], max_bytes: usize) -> Result<EthernetFrame<&[u8]>, DropReason> {
    if frame.len() > max_bytes.min(MAX_FRAME_BYTES) {
        return Err(DropReason::Oversized);
    }
    let view = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Runt)?;
    let src = view.src_addr();
    if !src.is_unicast() || src == EthernetAddress([0; 6]) {
        return Err(DropReason::BadSource);
    }
    let ethertype = u16::from(view.ethertype());
    // Values up to 1500 are an 802.3 length; 1501-1535 mean nothing.
    if ethertype < 0x0600 && (ethertype > 1500 || usize::from(ethertype) > view.payload().len()) {
        return Err(DropReason::BadLength);
    }
    Ok(view)
}

/// Formats a MAC address as `52:54:00:12:34:56`.
///
/// ```
/// assert_eq!(qemuweb_net::frame::format_mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]), "52:54:00:12:34:56");
/// ```
pub fn format_mac(mac: Mac) -> String {
    qemuweb_config::format_mac(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(src: Mac, ethertype: u16, payload: usize) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend(src);
        f.extend(ethertype.to_be_bytes());
        f.resize(14 + payload, 0);
        f
    }

    #[test]
    fn frames_are_checked_with_a_reason() {
        let me = [2, 0, 0, 0, 0, 1];
        assert!(validate_frame(&frame(me, 0x0800, 46), 1514).is_ok());
        assert!(validate_frame(&frame(me, 0x0806, 28), 1514).is_ok()); // unpadded ARP
        assert!(validate_frame(&frame(me, 0x0800, 0), 1514).is_ok()); // header only
        let cases = [
            (vec![0u8; 13], DropReason::Runt),
            (vec![], DropReason::Runt),
            (frame(me, 0x0800, 1501), DropReason::Oversized),
            (frame([1, 0, 0, 0, 0, 1], 0x0800, 46), DropReason::BadSource),
            (frame([0xff; 6], 0x0800, 46), DropReason::BadSource),
            (frame([0; 6], 0x0800, 46), DropReason::BadSource),
            (frame(me, 100, 46), DropReason::BadLength),
            (frame(me, 1510, 100), DropReason::BadLength),
        ];
        for (f, reason) in cases {
            assert_eq!(validate_frame(&f, 1514).unwrap_err(), reason, "{}", f.len());
        }
        // 802.3 frames whose length fits are fine, and so are jumbo frames where allowed.
        assert!(validate_frame(&frame(me, 46, 46), 1514).is_ok());
        assert!(validate_frame(&frame(me, 0x0800, 9000), 9014).is_ok());
        assert_eq!(
            validate_frame(&frame(me, 0x0800, 9001), usize::MAX).unwrap_err(),
            DropReason::Oversized
        );
    }
}
