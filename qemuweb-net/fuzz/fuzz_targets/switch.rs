//! Feeds arbitrary frames into a switch's ports, as NICs of guests would send them.
//!
//! The input is a sequence of messages `[op, len_hi, len_lo, bytes...]`. The low two bits
//! of `op` say how `bytes` are sent: a raw frame; a UDP payload to the DHCP server (from
//! 0.0.0.0:68 to 255.255.255.255:67); a UDP payload to the DNS server (10.0.2.3:53); an
//! IPv4 payload to the gateway with the protocol in `op`'s middle bits (ICMP, UDP, TCP) or
//! an ARP packet. The wrapping is valid (checksums filled), so the fuzzer reaches the
//! services' parsers. Bit 0x80 of `op` drains the ports, bit 0x40 moves the clock on.
//!
//! Nothing may panic; `send` on an attached port is never an error; what ports receive is
//! a valid frame; queues stay bounded; and the isolated network, where nothing is sent,
//! receives nothing.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use qemuweb_config::network_by_id;
use qemuweb_net::{Nic, Switch, SwitchLimits};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

const VM: [[u8; 6]; 2] = [[0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]];

fn frame(src: [u8; 6], dst: [u8; 6], ethertype: EthernetProtocol, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 14 + payload.len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(src),
        dst_addr: EthernetAddress(dst),
        ethertype,
    }
    .emit(&mut f);
    f.payload_mut().copy_from_slice(payload);
    buf
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 20 + payload.len()];
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p, &ChecksumCapabilities::default());
    p.payload_mut().copy_from_slice(payload);
    buf
}

fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 8 + payload.len()];
    let mut p = UdpPacket::new_unchecked(&mut buf[..]);
    UdpRepr {
        src_port: src.1,
        dst_port: dst.1,
    }
    .emit(
        &mut p,
        &IpAddress::Ipv4(src.0),
        &IpAddress::Ipv4(dst.0),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    ipv4(src.0, dst.0, IpProtocol::Udp, &buf)
}

fuzz_target!(|data: &[u8]| {
    let limits = SwitchLimits {
        queue_bytes: 64 << 10,
        queue_frames_per_sender: 64,
        ..SwitchLimits::default()
    };
    let mut s = Switch::with_limits(limits);
    s.add_network(network_by_id("default").unwrap().plan().unwrap())
        .unwrap();
    s.add_network(network_by_id("isolated").unwrap().plan().unwrap())
        .unwrap();
    let ports = [
        s.attach("default", Nic::new("vm1", VM[0])).unwrap(),
        s.attach("default", Nic::new("vm2", VM[1])).unwrap(),
    ];
    let isolated = s.attach("isolated", Nic::new("vm1", VM[0])).unwrap();
    let gateway = s.gateway_mac("default").unwrap();
    let me = Ipv4Addr::new(10, 0, 2, 15);
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 3 {
        let op = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let port = usize::from(op >> 5 & 1);
        let mac = VM[port];
        let f = match op & 3 {
            0 => bytes.to_vec(),
            1 => frame(
                mac,
                [0xff; 6],
                EthernetProtocol::Ipv4,
                &udp((Ipv4Addr::UNSPECIFIED, 68), (Ipv4Addr::BROADCAST, 67), bytes),
            ),
            2 => frame(
                mac,
                gateway,
                EthernetProtocol::Ipv4,
                &udp((me, 5353), (Ipv4Addr::new(10, 0, 2, 3), 53), bytes),
            ),
            _ => match op >> 2 & 3 {
                0 => frame(mac, [0xff; 6], EthernetProtocol::Arp, bytes),
                p => {
                    let protocol = [IpProtocol::Icmp, IpProtocol::Udp, IpProtocol::Tcp][usize::from(p) - 1];
                    let to = Ipv4Addr::new(10, 0, 2, 2 + (op >> 4 & 1));
                    frame(mac, gateway, EthernetProtocol::Ipv4, &ipv4(me, to, protocol, bytes))
                }
            },
        };
        s.send(ports[port], &f, now).expect("the port is attached");
        if op & 0x40 != 0 {
            now += 1000;
        }
        if op & 0x80 != 0 {
            for p in ports {
                assert!(s.pending(p).unwrap() <= 3 * 64);
                while let Some(got) = s.recv(p) {
                    assert!((14..=1514).contains(&got.len()), "{}", got.len());
                }
            }
        }
    }
    assert_eq!(s.pending(isolated).unwrap(), 0);
});
