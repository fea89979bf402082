//! Frame checks shared by the in-memory tests, and the node of the pipeline tests ([`node`]).

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use weir_dataplane::wire::checksum;

pub mod node;

/// The L4 checksum of an IPv4 or IPv6 packet in `f` verifies (and the IPv4 header's).
pub fn checksums_verify(f: &[u8]) {
    let ip = &f[14..];
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = if ip[0] >> 4 == 4 {
        let ihl = usize::from(ip[0] & 0xf) * 4;
        assert_eq!(checksum::checksum(&ip[..ihl]), 0, "IPv4 header checksum");
        let len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        (
            IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()),
            IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()),
            ip[9],
            &ip[ihl..len],
        )
    } else {
        let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        (
            IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()),
            IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()),
            ip[6],
            &ip[40..40 + len],
        )
    };
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) if proto != 1 => {
            checksum::pseudo_header_v4(s.octets(), d.octets(), proto, l4.len() as u16)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_header_v6(&s.octets(), &d.octets(), proto, l4.len() as u32)
        }
        _ => 0,
    };
    assert_eq!(
        checksum::fold(checksum::sum(l4, pseudo)),
        0xffff,
        "L4 checksum of protocol {proto}"
    );
}

pub fn v4_src(f: &[u8]) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(f[26], f[27], f[28], f[29]),
        u16::from_be_bytes([f[34], f[35]]),
    )
}

pub fn v4_dst(f: &[u8]) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(f[30], f[31], f[32], f[33]),
        u16::from_be_bytes([f[36], f[37]]),
    )
}
