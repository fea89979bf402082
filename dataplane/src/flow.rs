//! The 5-tuple flow key, one type for IPv4 and IPv6.
//!
//! Byte order, fixed here once for every user (conntrack, policy, the symmetric hash):
//! - `src` and `dst` hold addresses in **network byte order**, exactly as on the wire. An
//!   IPv4 address is stored IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), so the
//!   16 bytes compare and hash the same way for both families.
//! - `src_port` and `dst_port` are in **host byte order** (read with `u16::from_be_bytes`).
//!   For ICMP and ICMPv6, `src_port` is the message type and code (`type << 8 | code`) and
//!   `dst_port` the echo identifier for echo request/reply (0 otherwise). For non-first
//!   fragments and protocols without ports both are 0.
//! - `proto` is the IP protocol number of the upper layer (after IPv6 extension headers).

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A 5-tuple. See the module doc for byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
#[repr(C)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

/// The IPv4-mapped prefix `::ffff:0:0/96`.
const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

impl FlowKey {
    /// Stores an IPv4 address (network byte order) IPv4-mapped.
    #[inline]
    pub fn map_v4(addr: [u8; 4]) -> [u8; 16] {
        // One 16-byte value, not two copies into an array: parsing maps two addresses
        // per packet, and a 16-byte read of the copies stalls on their narrower stores.
        (0xffff_u128 << 32 | u128::from(u32::from_be_bytes(addr))).to_be_bytes()
    }

    /// Stores any address in key form: IPv4 mapped, IPv6 as is (the inverse of `src_ip`).
    pub fn map_ip(addr: IpAddr) -> [u8; 16] {
        match addr {
            IpAddr::V4(a) => FlowKey::map_v4(a.octets()),
            IpAddr::V6(a) => a.octets(),
        }
    }

    /// Whether both addresses are IPv4-mapped.
    #[inline]
    pub fn is_v4(&self) -> bool {
        let mapped = |a: &[u8; 16]| u128::from_be_bytes(*a) >> 32 == 0xffff;
        mapped(&self.src) && mapped(&self.dst)
    }

    /// The source address as an `IpAddr`.
    pub fn src_ip(&self) -> IpAddr {
        to_ip(&self.src)
    }

    /// The destination address as an `IpAddr`.
    pub fn dst_ip(&self) -> IpAddr {
        to_ip(&self.dst)
    }

    /// The key of the reply direction (addresses and ports swapped). ICMP keys swap too,
    /// which conntrack normalises itself.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }

    /// A hash that is the same for a flow and its reply, so both directions land on the same
    /// worker (FNV-1a over the ordered endpoint pair, then a final mix).
    pub fn symmetric_hash(&self) -> u64 {
        let a = (self.src, self.src_port);
        let b = (self.dst, self.dst_port);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        // Word at a time (five multiplies, not one per byte): this runs for every packet.
        let word = |x: &[u8; 16], i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&x[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let mix = |h: u64, v: u64| (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        h = mix(h, word(&lo.0, 0));
        h = mix(h, word(&lo.0, 8));
        h = mix(h, word(&hi.0, 0));
        h = mix(h, word(&hi.0, 8));
        h = mix(
            h,
            u64::from(lo.1) << 48 | u64::from(hi.1) << 32 | u64::from(self.proto),
        );
        // Final avalanche (MurmurHash3's fmix64).
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// Three words for the hasher: each address folded to 64 bits (its halves, one rotated),
/// then the ports and protocol. The derived hash wrote nine (each array's length too),
/// and a hasher's steps are serial: the tables keyed by flows (service connections,
/// source NAT) hash a key for every packet. Keys that are equal hash equal.
impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let fold = |a: &[u8; 16]| {
            let x = u128::from_le_bytes(*a);
            (x as u64) ^ ((x >> 64) as u64).rotate_left(32)
        };
        state.write_u64(fold(&self.src));
        state.write_u64(fold(&self.dst));
        state.write_u64(
            u64::from(self.src_port) << 24 | u64::from(self.dst_port) << 8 | u64::from(self.proto),
        );
    }
}

fn to_ip(a: &[u8; 16]) -> IpAddr {
    if a[..12] == V4_MAPPED {
        IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx(k: &FlowKey) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        k.hash(&mut h);
        h.finish()
    }

    #[test]
    fn the_hash_sees_every_byte_of_both_addresses_and_every_other_field() {
        let base = FlowKey {
            src: [
                0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            ],
            dst: FlowKey::map_v4([198, 18, 0, 2]),
            src_port: 40000,
            dst_port: 80,
            proto: 6,
        };
        let h = fx(&base);
        for i in 0..16 {
            for bit in [0x01u8, 0x80] {
                let mut k = base;
                k.src[i] ^= bit;
                assert_ne!(fx(&k), h, "source byte {i}, bit {bit:#x}");
                let mut k = base;
                k.dst[i] ^= bit;
                assert_ne!(fx(&k), h, "destination byte {i}, bit {bit:#x}");
            }
        }
        for k in [
            FlowKey {
                src_port: 40001,
                ..base
            },
            FlowKey {
                dst_port: 81,
                ..base
            },
            FlowKey { proto: 17, ..base },
            base.reversed(),
        ] {
            assert_ne!(fx(&k), h, "{k:?}");
        }
        assert_eq!(fx(&{ base }), h);
    }

    #[test]
    fn v4_is_mapped_and_reads_back() {
        let k = FlowKey {
            src: FlowKey::map_v4([198, 18, 0, 1]),
            dst: FlowKey::map_v4([198, 18, 0, 2]),
            src_port: 1234,
            dst_port: 80,
            proto: 6,
        };
        assert!(k.is_v4());
        assert_eq!(k.src_ip(), "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(k.src_ip().to_string(), "198.18.0.1");
        assert_eq!(k.reversed().dst_port, 1234);
    }

    #[test]
    fn symmetric_hash_spreads_similar_flows_over_buckets() {
        // 65 536 flows that differ only in a source port and the last address byte.
        let mut low = vec![0u32; 1024];
        let mut high = vec![0u32; 1024];
        for i in 0..65_536u32 {
            let k = FlowKey {
                src: FlowKey::map_v4([198, 18, 0, (i >> 8) as u8]),
                dst: FlowKey::map_v4([198, 18, 1, 1]),
                src_port: 1024 + (i & 0xff) as u16,
                dst_port: 80,
                proto: 6,
            };
            let h = k.symmetric_hash();
            low[(h & 1023) as usize] += 1;
            high[(h >> 54) as usize] += 1;
        }
        // 64 per bucket on average; a good hash stays well under twice that.
        assert!(
            low.iter().all(|&n| n < 128),
            "low bits: max {:?}",
            low.iter().max()
        );
        assert!(
            high.iter().all(|&n| n < 128),
            "high bits: max {:?}",
            high.iter().max()
        );
    }

    #[test]
    fn symmetric_hash_is_symmetric_and_discriminates() {
        let k = FlowKey {
            src: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets(),
            dst: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).octets(),
            src_port: 40000,
            dst_port: 443,
            proto: 6,
        };
        assert!(!k.is_v4());
        assert_eq!(k.symmetric_hash(), k.reversed().symmetric_hash());
        let mut other = k;
        other.dst_port = 444;
        assert_ne!(k.symmetric_hash(), other.symmetric_hash());
    }
}
