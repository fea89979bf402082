//! The outer headers of WireGuard traffic between nodes: Ethernet, IPv4 or IPv6, and UDP,
//! written in front of a sealed message and checked on the way in.
//!
//! Written by hand: these are a few fixed fields at fixed offsets on the per-packet path,
//! where a general packet library would add parsing and bounds work for nothing. The
//! headers to one peer are built once, when a snapshot is built ([`OuterTemplate`]): per
//! packet only the lengths and a checksum are written. The parser is fuzzed
//! (`fuzz/fuzz_targets/wireguard.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::checksum;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// What a WireGuard data message adds to a packet: type, index and counter (16) and the
/// Poly1305 tag (16).
pub const WG_DATA_OVERHEAD: usize = 32;
/// Overhead between node MTU and pod MTU with an IPv4 outer header.
pub const OVERHEAD_V4: u16 = 20 + 8 + WG_DATA_OVERHEAD as u16;
/// Overhead with an IPv6 outer header.
pub const OVERHEAD_V6: u16 = 40 + 8 + WG_DATA_OVERHEAD as u16;

/// The pod MTU that fits in `uplink_mtu` once sealed (60 bytes less over IPv4, 80 over
/// IPv6).
pub fn pod_mtu(uplink_mtu: u16, ipv6_outer: bool) -> u16 {
    uplink_mtu.saturating_sub(if ipv6_outer { OVERHEAD_V6 } else { OVERHEAD_V4 })
}

/// Where a sealed packet goes on the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterPath {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// This node's address and WireGuard port.
    pub src: SocketAddr,
    /// The peer's endpoint.
    pub dst: SocketAddr,
}

impl OuterPath {
    /// Bytes of Ethernet, IP and UDP header in front of the WireGuard message.
    pub fn header_len(&self) -> usize {
        ETH_LEN + if self.dst.is_ipv4() { 20 } else { 40 } + 8
    }
}

/// Why outer headers were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OuterError {
    #[error("frame too short")]
    Truncated,
    #[error("not IPv4 or IPv6")]
    NotIp,
    #[error("IPv4 options, fragments or a bad header checksum")]
    BadIpv4,
    #[error("IPv6 extension headers")]
    Ipv6Extensions,
    #[error("not UDP")]
    NotUdp,
    #[error("not the WireGuard port")]
    OtherPort,
    #[error("lengths disagree")]
    BadLength,
    #[error("source and destination families differ")]
    MixedFamilies,
}

/// Writes Ethernet, IP and UDP headers into `frame[..path.header_len()]` for a WireGuard
/// message of `wg_len` bytes that is already at `frame[path.header_len()..]`; returns the
/// whole frame length. IPv4 carries no UDP checksum (0, allowed); IPv6 gets the full one.
/// For many packets to one peer, build an [`OuterTemplate`] once instead.
pub fn write_headers(
    frame: &mut [u8],
    path: &OuterPath,
    wg_len: usize,
) -> Result<usize, OuterError> {
    OuterTemplate::new(*path)?.write(frame, wg_len)
}

/// The largest outer header: Ethernet, IPv6 and UDP.
pub const MAX_HEADER_LEN: usize = ETH_LEN + 40 + 8;

/// The outer headers to one peer, prebuilt: everything but the length fields and the
/// checksum that covers them. The IPv4 header checksum is kept for a zero total length and
/// updated per packet with RFC 1624's `HC' = ~(~HC + ~m + m')`; IPv6 has no header
/// checksum, but its UDP checksum is mandatory (RFC 8200 §8.1) and covers the message, so
/// it is summed per packet from the template's pseudo-header sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterTemplate {
    path: OuterPath,
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
    /// IPv6: the pseudo-header sum without the length (a partial sum, see `checksum`).
    pseudo: u32,
}

impl OuterTemplate {
    /// The headers for `path`; refused when its addresses are of different families.
    pub fn new(path: OuterPath) -> Result<Self, OuterError> {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        bytes[0..6].copy_from_slice(&path.dst_mac);
        bytes[6..12].copy_from_slice(&path.src_mac);
        let mut pseudo = 0;
        let l4 = match (path.src.ip(), path.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                bytes[12..14].copy_from_slice(&[0x08, 0x00]);
                let ip = &mut bytes[ETH_LEN..ETH_LEN + 20];
                ip[0] = 0x45;
                ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
                ip[8] = 64;
                ip[9] = 17;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let sum = checksum::checksum(ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                ETH_LEN + 20
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                bytes[12..14].copy_from_slice(&[0x86, 0xdd]);
                let ip = &mut bytes[ETH_LEN..ETH_LEN + 40];
                ip[0] = 0x60;
                ip[6] = 17;
                ip[7] = 64;
                ip[8..24].copy_from_slice(&s.octets());
                ip[24..40].copy_from_slice(&d.octets());
                pseudo = checksum::pseudo_header_v6(&s.octets(), &d.octets(), 17, 0);
                ETH_LEN + 40
            }
            _ => return Err(OuterError::MixedFamilies),
        };
        bytes[l4..l4 + 2].copy_from_slice(&path.src.port().to_be_bytes());
        bytes[l4 + 2..l4 + 4].copy_from_slice(&path.dst.port().to_be_bytes());
        Ok(OuterTemplate {
            path,
            bytes,
            len: (l4 + 8) as u8,
            pseudo,
        })
    }

    /// The path the headers were built for.
    pub fn path(&self) -> &OuterPath {
        &self.path
    }

    /// Bytes of header in front of the message.
    pub fn header_len(&self) -> usize {
        usize::from(self.len)
    }

    /// Writes the headers into `frame[..header_len()]` for the `wg_len`-byte message
    /// already at `frame[header_len()..]`; returns the frame's length.
    pub fn write(&self, frame: &mut [u8], wg_len: usize) -> Result<usize, OuterError> {
        let hdr = self.header_len();
        let total = hdr + wg_len;
        let udp_len = u16::try_from(8 + wg_len).map_err(|_| OuterError::BadLength)?;
        let Some(frame) = frame.get_mut(..total) else {
            return Err(OuterError::Truncated);
        };
        frame[..hdr].copy_from_slice(&self.bytes[..hdr]);
        let u = hdr - 8;
        frame[u + 4..u + 6].copy_from_slice(&udp_len.to_be_bytes());
        if self.path.dst.is_ipv4() {
            let ip_len = 20 + udp_len;
            let check = u16::from_be_bytes([frame[ETH_LEN + 10], frame[ETH_LEN + 11]]);
            frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&ip_len.to_be_bytes());
            let check = checksum::update16(check, 0, ip_len);
            frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&check.to_be_bytes());
        } else {
            frame[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&udp_len.to_be_bytes());
            let sum = checksum::sum(&frame[u..total], self.pseudo + u32::from(udp_len));
            let mut csum = !checksum::fold(sum);
            if csum == 0 {
                csum = 0xffff;
            }
            frame[u + 6..u + 8].copy_from_slice(&csum.to_be_bytes());
        }
        Ok(total)
    }
}

/// A WireGuard datagram found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Offset of the WireGuard message in the frame.
    pub offset: usize,
    pub message: &'a [u8],
}

/// Finds the UDP datagram to `port` in an Ethernet frame (no VLAN tags, no IPv4 options or
/// fragments, no IPv6 extension headers: WireGuard between nodes sends none).
pub fn parse(frame: &[u8], port: u16) -> Result<Inbound<'_>, OuterError> {
    if frame.len() < ETH_LEN {
        return Err(OuterError::Truncated);
    }
    let (src_ip, dst_ip, l4, ip_end): (IpAddr, IpAddr, usize, usize) = match [frame[12], frame[13]]
    {
        [0x08, 0x00] => {
            let ip = frame
                .get(ETH_LEN..ETH_LEN + 20)
                .ok_or(OuterError::Truncated)?;
            if ip[0] != 0x45 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return Err(OuterError::BadIpv4);
            }
            if checksum::fold(checksum::sum(ip, 0)) != 0xffff {
                return Err(OuterError::BadIpv4);
            }
            if ip[9] != 17 {
                return Err(OuterError::NotUdp);
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let s: [u8; 4] = ip[12..16].try_into().map_err(|_| OuterError::Truncated)?;
            let d: [u8; 4] = ip[16..20].try_into().map_err(|_| OuterError::Truncated)?;
            (
                Ipv4Addr::from(s).into(),
                Ipv4Addr::from(d).into(),
                ETH_LEN + 20,
                ETH_LEN + total,
            )
        }
        [0x86, 0xdd] => {
            let ip = frame
                .get(ETH_LEN..ETH_LEN + 40)
                .ok_or(OuterError::Truncated)?;
            if ip[0] >> 4 != 6 {
                return Err(OuterError::NotIp);
            }
            if ip[6] != 17 {
                return Err(if matches!(ip[6], 0 | 43 | 44 | 60) {
                    OuterError::Ipv6Extensions
                } else {
                    OuterError::NotUdp
                });
            }
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let s: [u8; 16] = ip[8..24].try_into().map_err(|_| OuterError::Truncated)?;
            let d: [u8; 16] = ip[24..40].try_into().map_err(|_| OuterError::Truncated)?;
            (
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                ETH_LEN + 40,
                ETH_LEN + 40 + payload,
            )
        }
        _ => return Err(OuterError::NotIp),
    };
    if ip_end > frame.len() || ip_end < l4 + 8 {
        return Err(OuterError::BadLength);
    }
    let udp = &frame[l4..l4 + 8];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || l4 + udp_len > ip_end {
        return Err(OuterError::BadLength);
    }
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    if dport != port {
        return Err(OuterError::OtherPort);
    }
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    Ok(Inbound {
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        offset: l4 + 8,
        message: &frame[l4 + 8..l4 + udp_len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(v6: bool) -> OuterPath {
        let (s, d): (IpAddr, IpAddr) = if v6 {
            (
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
        } else {
            ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap())
        };
        OuterPath {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: SocketAddr::new(s, 51820),
            dst: SocketAddr::new(d, 51821),
        }
    }

    /// An independent check of the checksums, by smoltcp.
    fn assert_checksums_verify(frame: &[u8], v6: bool) {
        let eth = smoltcp::wire::EthernetFrame::new_checked(frame).unwrap();
        if v6 {
            let ip = smoltcp::wire::Ipv6Packet::new_checked(eth.payload()).unwrap();
            let udp = smoltcp::wire::UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(udp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
        } else {
            let ip = smoltcp::wire::Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum(), "IPv4 header checksum");
        }
    }

    #[test]
    fn written_headers_parse_back_and_verify_with_smoltcp() {
        for v6 in [false, true] {
            let p = path(v6);
            let hdr = p.header_len();
            let mut frame = vec![0u8; hdr + 100];
            for (i, b) in frame[hdr..].iter_mut().enumerate() {
                *b = i as u8;
            }
            let len = write_headers(&mut frame, &p, 100).unwrap();
            assert_eq!(len, frame.len());
            let got = parse(&frame, 51821).unwrap();
            assert_eq!((got.src, got.dst, got.offset), (p.src, p.dst, hdr));
            assert_eq!(got.message, &frame[hdr..]);
            assert_eq!(parse(&frame, 51820), Err(OuterError::OtherPort));
            assert_checksums_verify(&frame, v6);
        }
    }

    #[test]
    fn damaged_frames_are_refused() {
        let p = path(false);
        let mut frame = vec![0u8; p.header_len() + 40];
        write_headers(&mut frame, &p, 40).unwrap();
        assert_eq!(parse(&frame[..20], 51821), Err(OuterError::Truncated));
        let mut bad = frame.clone();
        bad[ETH_LEN + 8] ^= 1; // TTL: header checksum no longer matches
        assert_eq!(parse(&bad, 51821), Err(OuterError::BadIpv4));
        let mut short = frame.clone();
        short.truncate(frame.len() - 1);
        assert_eq!(parse(&short, 51821), Err(OuterError::BadLength));
        let mut udp_long = frame.clone();
        udp_long[ETH_LEN + 24..ETH_LEN + 26].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(parse(&udp_long, 51821), Err(OuterError::BadLength));
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(&arp, 51821), Err(OuterError::NotIp));
        let mixed = OuterPath {
            dst: path(true).dst,
            ..p
        };
        let mut roomy = vec![0u8; 200];
        assert_eq!(
            write_headers(&mut roomy, &mixed, 40),
            Err(OuterError::MixedFamilies)
        );
    }

    #[test]
    fn pod_mtu_leaves_room_for_the_tunnel() {
        assert_eq!(pod_mtu(1500, false), 1440);
        assert_eq!(pod_mtu(1500, true), 1420);
        assert_eq!(pod_mtu(40, false), 0);
    }

    #[test]
    fn one_template_writes_verifiable_headers_for_every_length() {
        for v6 in [false, true] {
            let t = OuterTemplate::new(path(v6)).unwrap();
            for wg_len in [32usize, 33, 100, 1452] {
                let hdr = t.header_len();
                let mut frame = vec![0u8; hdr + wg_len];
                for (i, b) in frame[hdr..].iter_mut().enumerate() {
                    *b = (i * 7) as u8;
                }
                assert_eq!(t.write(&mut frame, wg_len), Ok(hdr + wg_len));
                let got = parse(&frame, 51821).unwrap();
                assert_eq!(got.message.len(), wg_len);
                assert_checksums_verify(&frame, v6);
            }
            let mut short = vec![0u8; 40];
            assert_eq!(t.write(&mut short, 100), Err(OuterError::Truncated));
        }
    }
}
