//! The DNS server: the VMs' names (`vm1`, `vm1.DOMAIN`) as A records.

use std::net::Ipv4Addr;

use smoltcp::wire::{DnsFlags, DnsOpcode, DnsPacket, DnsQueryType, DnsQuestion, DnsRcode};

/// The time to live of the answers, in seconds: short, as leases change.
const TTL_SECONDS: u32 = 60;

/// The longest name looked up (RFC 1035: 255 bytes on the wire).
const MAX_NAME: usize = 253;

/// What a name is on this network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A VM's name, and its address when it has one.
    Vm(Option<Ipv4Addr>),
    /// A name under the network's domain (or a single label) that no VM has.
    Unknown,
    /// A name elsewhere, which this server does not resolve.
    Elsewhere,
}

/// Answers a query (a UDP payload) with the response's bytes; `None` for what is not a
/// query (responses, unparsable bytes), which gets no answer.
pub(crate) fn answer(query: &[u8], lookup: impl Fn(&str) -> Lookup) -> Option<Vec<u8>> {
    let packet = DnsPacket::new_checked(query).ok()?;
    if packet.flags().contains(DnsFlags::RESPONSE) {
        return None;
    }
    let question = DnsQuestion::parse(packet.payload()).ok().map(|(_, q)| q);
    // The question's name (lower case) and type, or the response code without one.
    let parsed = match question {
        _ if packet.opcode() != DnsOpcode::Query => Err(DnsRcode::NotImp),
        Some(q) if packet.question_count() == 1 => name_of(&packet, q.name)
            .map(|name| (name, q.type_))
            .ok_or(DnsRcode::FormErr),
        _ => Err(DnsRcode::FormErr),
    };
    let (rcode, question, address) = match parsed {
        Ok((name, type_)) => {
            let (rcode, address) = match lookup(&name) {
                Lookup::Vm(ip) => (DnsRcode::NoError, ip.filter(|_| type_ == DnsQueryType::A)),
                Lookup::Unknown => (DnsRcode::NXDomain, None),
                Lookup::Elsewhere => (DnsRcode::Refused, None),
            };
            (rcode, Some((encode_name(&name), type_)), address)
        }
        Err(rcode) => (rcode, None, None),
    };
    // The question is copied with its name uncompressed (a pointer would point into the
    // query, not the response).
    let question_len = question.as_ref().map_or(0, |(n, _)| n.len() + 4);
    let answer_len = if address.is_some() { 16 } else { 0 };
    let mut buf = vec![0u8; 12 + question_len + answer_len];
    let mut response = DnsPacket::new_unchecked(&mut buf[..]);
    response.set_transaction_id(packet.transaction_id());
    let mut flags = DnsFlags::RESPONSE;
    if packet.flags().contains(DnsFlags::RECURSION_DESIRED) {
        flags |= DnsFlags::RECURSION_DESIRED;
    }
    if rcode == DnsRcode::NoError || rcode == DnsRcode::NXDomain {
        flags |= DnsFlags::AUTHORITATIVE;
    }
    response.set_flags(flags);
    response.set_opcode(DnsOpcode::Query);
    response.set_question_count(u16::from(question.is_some()));
    response.set_answer_record_count(u16::from(address.is_some()));
    if let Some((name, type_)) = &question {
        DnsQuestion {
            name,
            type_: *type_,
        }
        .emit(&mut response.payload_mut()[..question_len]);
    }
    // smoltcp's DNS module has no setter for the response code (the low 4 bits of the
    // flags) and no record emitter (it is a client); both are written here.
    buf[3] |= u8::from(rcode) & 0x0f;
    if let Some(ip) = address {
        let rr = &mut buf[12 + question_len..];
        rr[0..2].copy_from_slice(&[0xc0, 0x0c]); // the question's name, at offset 12
        rr[2..4].copy_from_slice(&u16::from(DnsQueryType::A).to_be_bytes());
        rr[4..6].copy_from_slice(&1u16.to_be_bytes()); // class IN
        rr[6..10].copy_from_slice(&TTL_SECONDS.to_be_bytes());
        rr[10..12].copy_from_slice(&4u16.to_be_bytes());
        rr[12..16].copy_from_slice(&ip.octets());
    }
    Some(buf)
}

/// The question's name in lower case, dot-separated; `None` for a malformed or too long
/// name or labels that are not host-name characters.
fn name_of(packet: &DnsPacket<&[u8]>, name: &[u8]) -> Option<String> {
    let mut out = String::new();
    for label in packet.parse_name(name) {
        let label = label.ok()?;
        if label.is_empty()
            || !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        if out.len() > MAX_NAME {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A name in DNS label form (the labels were checked by [`name_of`]).
fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, type_: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
        q.extend(encode_name(name));
        q.extend(type_.to_be_bytes());
        q.extend(1u16.to_be_bytes());
        q
    }

    fn lookup(name: &str) -> Lookup {
        match name {
            "vm1" | "vm1.qemuweb.internal" => Lookup::Vm(Some(Ipv4Addr::new(10, 0, 2, 15))),
            "vm2" => Lookup::Vm(None),
            n if !n.contains('.') || n.ends_with(".qemuweb.internal") => Lookup::Unknown,
            _ => Lookup::Elsewhere,
        }
    }

    fn rcode(r: &[u8]) -> u8 {
        r[3] & 0x0f
    }

    #[test]
    fn names_of_vms_are_answered() {
        let r = answer(&query(0x1234, "VM1.qemuweb.internal", 1), lookup).unwrap();
        let p = DnsPacket::new_checked(&r[..]).unwrap();
        assert_eq!(p.transaction_id(), 0x1234);
        assert!(p
            .flags()
            .contains(DnsFlags::RESPONSE | DnsFlags::AUTHORITATIVE));
        assert_eq!(
            (p.question_count(), p.answer_record_count(), rcode(&r)),
            (1, 1, 0)
        );
        assert_eq!(&r[r.len() - 4..], &[10, 0, 2, 15]);
        // The answer parses with smoltcp's record parser.
        let (rest, _) = DnsQuestion::parse(p.payload()).unwrap();
        let (_, record) = smoltcp::wire::DnsRecord::parse(rest).unwrap();
        assert_eq!(record.ttl, TTL_SECONDS);
        assert_eq!(
            record.data,
            smoltcp::wire::DnsRecordData::A(Ipv4Addr::new(10, 0, 2, 15))
        );
    }

    #[test]
    fn other_questions_get_the_right_code() {
        // AAAA for a VM: no error, no answer.
        let r = answer(&query(1, "vm1", 28), lookup).unwrap();
        assert_eq!((rcode(&r), r[7]), (0, 0));
        // A VM without an address yet: no answer either.
        let r = answer(&query(1, "vm2", 1), lookup).unwrap();
        assert_eq!((rcode(&r), r[7]), (0, 0));
        assert_eq!(rcode(&answer(&query(1, "nope", 1), lookup).unwrap()), 3);
        assert_eq!(
            rcode(&answer(&query(1, "example.org", 1), lookup).unwrap()),
            5
        );
        let mut bad = query(1, "vm1", 1);
        bad[13] = b'!'; // a label with a character no host name has
        assert_eq!(rcode(&answer(&bad, lookup).unwrap()), 1);
        let mut status = query(1, "vm1", 1);
        status[2] |= 0x10; // opcode 2 (server status)
        assert_eq!(rcode(&answer(&status, lookup).unwrap()), 4);
        // Responses and garbage get nothing; truncated queries a format error.
        let mut response = query(1, "vm1", 1);
        response[2] |= 0x80;
        assert!(answer(&response, lookup).is_none());
        assert!(answer(&[1, 2, 3], lookup).is_none());
        let q = query(1, "vm1", 1);
        assert_eq!(rcode(&answer(&q[..q.len() - 3], lookup).unwrap()), 1);
    }
}
