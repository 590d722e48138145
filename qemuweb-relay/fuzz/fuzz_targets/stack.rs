//! Feeds arbitrary frames from the page into the relay's stack, as the WebSocket's binary
//! messages bring them (`Stack::input`: one message, one frame), and arbitrary answers from
//! the host sockets back (the channels of the connections and datagram flows it asks for).
//!
//! The input is a sequence of messages `[op, len_hi, len_lo, bytes...]`. The low three
//! bits of `op` say what `bytes` are:
//! - 0: a raw frame (a WebSocket message as the page sent it);
//! - 1, 2, 3: a TCP segment, a UDP payload or an ICMP message from the guest 10.0.2.15 to
//!   an address beyond the network (`op`'s bits 3-4 pick 10.0.2.2, 127.0.0.1, 192.168.1.1
//!   or 93.184.215.14), in a valid frame (checksums filled) so the fuzzer reaches the
//!   stack's parsers; for TCP the first two bytes are the ports and the third the flags,
//!   for UDP the first two the ports;
//! - 4: a UDP payload from the page's DNS server (10.0.2.3:53) to the gateway, from the
//!   gateway's MAC address, as the page's services answer the stack's questions;
//! - 5: bytes from the host for one of the connections or flows asked for so far (the
//!   first byte picks which; an empty message is its end, a single byte its failure);
//! - 6: a forward's host connection to the VM named by `bytes` (port 80);
//! - 7: the host side drops one of its channels (the first byte picks which).
//!
//! Bit 0x80 of `op` moves the clock on by a second (and polls); bit 0x40 by 30 s.
//!
//! Nothing may panic; every frame for the page is an Ethernet frame of at most
//! `MAX_FRAME` bytes; the connections and datagram flows stay within their limits; and
//! what the stack queues for the page in one round stays bounded.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use qemuweb_config::network_by_id;
use qemuweb_net::packet;
use qemuweb_relay::stack::{HostChannels, HostEvent};
use qemuweb_relay::{Policy, Stack, StackLimits, MAX_FRAME};
use smoltcp::wire::{IpAddress, IpProtocol, TcpPacket};

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const TARGETS: [Ipv4Addr; 4] = [
    GATEWAY,
    Ipv4Addr::LOCALHOST,
    Ipv4Addr::new(192, 168, 1, 1),
    Ipv4Addr::new(93, 184, 215, 14),
];

/// An IPv4 packet of `protocol` from the guest to `to`, in a valid frame for the gateway.
fn from_guest(gateway: [u8; 6], to: Ipv4Addr, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
    packet::ipv4(
        (GUEST_MAC, GUEST),
        (gateway, to),
        protocol,
        payload.len(),
        |b| b.copy_from_slice(payload),
    )
}

/// A TCP segment: ports from the first two bytes, flags from the third, the rest data.
fn tcp(dst: Ipv4Addr, bytes: &[u8]) -> Vec<u8> {
    let b = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let data = bytes.get(3..).unwrap_or(&[]);
    let mut buf = vec![0u8; 20 + data.len()];
    let mut p = TcpPacket::new_unchecked(&mut buf[..]);
    p.set_src_port(40000 + u16::from(b(0)));
    p.set_dst_port(u16::from(b(1)) + 1);
    p.set_seq_number(smoltcp::wire::TcpSeqNumber(1000));
    p.set_ack_number(smoltcp::wire::TcpSeqNumber(0));
    p.set_header_len(20);
    p.clear_flags();
    let flags = b(2);
    p.set_fin(flags & 1 != 0);
    p.set_syn(flags & 2 != 0);
    p.set_rst(flags & 4 != 0);
    p.set_psh(flags & 8 != 0);
    p.set_ack(flags & 16 != 0);
    p.set_window_len(8192);
    p.payload_mut().copy_from_slice(data);
    p.fill_checksum(&IpAddress::Ipv4(GUEST), &IpAddress::Ipv4(dst));
    buf
}

/// The input's messages: `[op, len_hi, len_lo, bytes...]`, the last one cut short.
fn messages(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&[op, hi, lo], rest) = data.split_first_chunk::<3>()?;
        let (bytes, rest) =
            rest.split_at(usize::from(u16::from_be_bytes([hi, lo])).min(rest.len()));
        data = rest;
        Some((op, bytes))
    })
}

fuzz_target!(|data: &[u8]| {
    let plan = network_by_id("default").unwrap().plan().unwrap();
    let limits = StackLimits {
        max_flows: 4,
        max_datagram_flows: 4,
        datagram_idle_ms: 10_000,
        ..StackLimits::default()
    };
    let policy = Policy {
        allow_loopback: true,
        allow_private: false,
    };
    let mut stack = Stack::new(plan, policy, limits, 0);
    stack.set_ping(true);
    let gw = qemuweb_net::services::gateway_mac(GATEWAY);
    let mut hosts: Vec<Option<HostChannels>> = Vec::new();
    let mut now = 0u64;
    let mut forwards = 0u64;
    for (op, bytes) in messages(data) {
        let to = TARGETS[usize::from(op >> 3 & 3)];
        let pick = |hosts: &mut Vec<Option<HostChannels>>| {
            let n = hosts.len();
            let i = usize::from(bytes.first().copied().unwrap_or(0));
            (n > 0).then(|| i % n)
        };
        match op & 7 {
            0 => stack.input(bytes, now),
            1 => stack.input(&from_guest(gw, to, IpProtocol::Tcp, &tcp(to, bytes)), now),
            2 => {
                let b = |i: usize| bytes.get(i).copied().unwrap_or(0);
                let payload = bytes.get(2..).unwrap_or(&[]);
                let src = (GUEST_MAC, GUEST, 5000 + u16::from(b(0)));
                let dst = (gw, to, u16::from(b(1)) + 1);
                let f = packet::udp(src, dst, payload.len(), |p| p.copy_from_slice(payload));
                stack.input(&f, now)
            }
            3 => stack.input(&from_guest(gw, to, IpProtocol::Icmp, bytes), now),
            4 => {
                let (src, dst) = ((gw, DNS, 53), (gw, GATEWAY, 49152));
                let f = packet::udp(src, dst, bytes.len(), |p| p.copy_from_slice(bytes));
                stack.input(&f, now)
            }
            5 => {
                if let Some(i) = pick(&mut hosts) {
                    if let Some(h) = &hosts[i] {
                        let event = match bytes.len() {
                            0 => HostEvent::Eof,
                            1 => HostEvent::Failed,
                            _ => HostEvent::Data(bytes[1..].to_vec()),
                        };
                        let _ = h.from_host.try_send(event);
                    }
                }
            }
            6 => {
                forwards += 1;
                let name = String::from_utf8_lossy(bytes);
                stack.forward(forwards, &name, 80, now);
            }
            _ => {
                if let Some(i) = pick(&mut hosts) {
                    hosts[i] = None;
                }
            }
        }
        if op & 0x80 != 0 {
            now += 1000;
        }
        if op & 0x40 != 0 {
            now += 30_000;
        }
        stack.poll(now);
        // The host side: what the stack sent is taken (and thrown away), as the host
        // sockets' tasks would.
        for c in stack.take_connects() {
            hosts.push(Some(c.channels));
        }
        for h in hosts.iter_mut().flatten() {
            while h.to_host.try_recv().is_ok() {}
        }
        let _ = stack.take_failed_forwards();
        let _ = stack.take_log();
        assert!(stack.flows() <= limits.max_flows);
        assert!(stack.datagram_flows() <= limits.max_datagram_flows);
        let mut queued = 0;
        while let Some(f) = stack.transmit() {
            assert!((14..=MAX_FRAME).contains(&f.len()), "{}", f.len());
            queued += 1;
        }
        // At most a channel's worth of datagrams per flow, each up to 45 fragments, and
        // the TCP sockets' windows.
        assert!(queued <= 4 * 16 * 45 + 4 * 64, "{queued}");
    }
});
