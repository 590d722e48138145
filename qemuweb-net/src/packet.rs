//! Building the frames the services send (and tests and fuzz targets that speak to the
//! network), with smoltcp's `wire` representations: valid headers and checksums.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, UDP_HEADER_LEN,
};

use crate::Mac;

/// An Ethernet frame of `payload_len` bytes of `ethertype`, its payload written by `fill`.
pub fn ethernet(
    src: Mac,
    dst: Mac,
    ethertype: EthernetProtocol,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + payload_len];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(src),
        dst_addr: EthernetAddress(dst),
        ethertype,
    }
    .emit(&mut frame);
    fill(frame.payload_mut());
    buf
}

/// An IPv4 packet in an Ethernet frame, its payload written by `fill`.
pub fn ipv4(
    (src_mac, src_ip): (Mac, Ipv4Addr),
    (dst_mac, dst_ip): (Mac, Ipv4Addr),
    protocol: IpProtocol,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src_ip,
        dst_addr: dst_ip,
        next_header: protocol,
        payload_len,
        hop_limit: 64,
    };
    ethernet(
        src_mac,
        dst_mac,
        EthernetProtocol::Ipv4,
        IPV4_HEADER_LEN + payload_len,
        |buf| {
            let mut packet = Ipv4Packet::new_unchecked(buf);
            repr.emit(&mut packet, &ChecksumCapabilities::default());
            fill(packet.payload_mut());
        },
    )
}

/// A UDP datagram in IPv4 in Ethernet, its payload written by `fill`.
pub fn udp(
    src: (Mac, Ipv4Addr, u16),
    dst: (Mac, Ipv4Addr, u16),
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: src.2,
        dst_port: dst.2,
    };
    ipv4(
        (src.0, src.1),
        (dst.0, dst.1),
        IpProtocol::Udp,
        UDP_HEADER_LEN + payload_len,
        |buf| {
            let mut packet = UdpPacket::new_unchecked(buf);
            repr.emit(
                &mut packet,
                &IpAddress::Ipv4(src.1),
                &IpAddress::Ipv4(dst.1),
                payload_len,
                fill,
                &ChecksumCapabilities::default(),
            );
        },
    )
}
