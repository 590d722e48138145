//! Where the guests' connections may go on the host.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Why the relay refused a guest's connection or datagram flow (it answers a TCP SYN with
/// a reset, a UDP datagram with "port unreachable", and leaves an echo request
/// unanswered), counted in [`RelayStats`](crate::RelayStats) and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// To the host's loopback (`127.0.0.0/8`, or the gateway's address, which maps to
    /// `127.0.0.1`) without `--allow-loopback`.
    Loopback,
    /// To a private, shared or link-local range (`10/8`, `172.16/12`, `192.168/16`,
    /// `100.64/10`, `169.254/16`) without `--allow-private`.
    Private,
    /// To an address no connection goes to (`0/8`, multicast, reserved, broadcast, the
    /// network's DNS server).
    Reserved,
    /// The relay has its largest number of connections (or of UDP and ICMP echo flows)
    /// open.
    TooManyFlows,
    /// Not carried: an IP protocol other than TCP, UDP and ICMP echo, or an echo request
    /// when the host allows the relay no ICMP datagram sockets.
    Unsupported,
}

impl Refusal {
    /// Every reason, in a fixed order.
    pub const ALL: [Refusal; 5] = [
        Refusal::Loopback,
        Refusal::Private,
        Refusal::Reserved,
        Refusal::TooManyFlows,
        Refusal::Unsupported,
    ];

    /// A short stable name (`loopback`, `private`, ...), for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Loopback => "loopback",
            Refusal::Private => "private",
            Refusal::Reserved => "reserved",
            Refusal::TooManyFlows => "too-many-flows",
            Refusal::Unsupported => "unsupported",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which host destinations the guests may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// The host's loopback: `127.0.0.0/8`, and the gateway's address as `127.0.0.1` (as
    /// QEMU's user networking maps `10.0.2.2`).
    pub allow_loopback: bool,
    /// Private, shared and link-local ranges.
    pub allow_private: bool,
}

impl Policy {
    /// Where a guest's connection to `dst:port` goes on the host, given the network's
    /// gateway and DNS server addresses.
    ///
    /// ```
    /// use qemuweb_relay::{Policy, Refusal};
    /// use std::net::Ipv4Addr;
    /// let gw = Ipv4Addr::new(10, 0, 2, 2);
    /// let strict = Policy::default();
    /// assert_eq!(strict.target(Ipv4Addr::new(10, 0, 2, 2), 80, gw, None), Err(Refusal::Loopback));
    /// assert_eq!(strict.target(Ipv4Addr::new(192, 168, 1, 1), 80, gw, None), Err(Refusal::Private));
    /// assert!(strict.target(Ipv4Addr::new(93, 184, 215, 14), 80, gw, None).is_ok());
    /// let open = Policy { allow_loopback: true, allow_private: false };
    /// assert_eq!(open.target(gw, 8000, gw, None).unwrap().to_string(), "127.0.0.1:8000");
    /// ```
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn target(
        &self,
        dst: Ipv4Addr,
        port: u16,
        gateway: Ipv4Addr,
        dns: Option<Ipv4Addr>,
    ) -> Result<SocketAddr, Refusal> {
        let to = |ip: Ipv4Addr| Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)));
        if dst == gateway {
            return if self.allow_loopback {
                to(Ipv4Addr::LOCALHOST)
            } else {
                Err(Refusal::Loopback)
            };
        }
        let [a, b, ..] = dst.octets();
        if Some(dst) == dns
            || a == 0
            || dst.is_multicast()
            || dst.is_broadcast()
            || a >= 240
            || port == 0
        {
            return Err(Refusal::Reserved);
        }
        if dst.is_loopback() {
            return if self.allow_loopback {
                to(dst)
            } else {
                Err(Refusal::Loopback)
            };
        }
        let shared = a == 100 && (64..128).contains(&b);
        if (dst.is_private() || dst.is_link_local() || shared) && !self.allow_private {
            return Err(Refusal::Private);
        }
        to(dst)
    }
}
