//! Wire views: typed, bounds-checked views over packet bytes.
//!
//! A view wraps `T: AsRef<[u8]>` (getters) or `T: AsMut<[u8]>` (setters), names its field
//! offsets as constants and has a `new_checked` that validates the length. The promise every
//! view in this module keeps: **once `new_checked` has returned `Ok`, no accessor panics**,
//! whatever the bytes are. Malformed input is reported as [`Malformed`], which the pipeline
//! turns into a counted drop.
//!
//! smoltcp's views (Ethernet, ARP, IPv4, IPv6, ICMPv4, ICMPv6/NDP, UDP, TCP) are
//! re-exported here for tools, tests and the `wire` fuzz target, which drives them beside
//! weir's own views. The pipeline's input stage reads its few offsets by hand instead (see
//! `node/parse.rs` for why). Hand-rolled here is what smoltcp lacks: 802.1Q tags, SCTP
//! ports, VXLAN, WireGuard messages and the outer headers between nodes, a bounded IPv6
//! extension-header walk that also reports fragments, and the checksum helpers the
//! forwarding path needs (RFC 1624 incremental update, completion of the partial checksums
//! that veth tx offload leaves behind).

pub mod checksum;
pub mod ipv6ext;
pub mod sctp;
pub mod vlan;
pub mod vxlan;
pub mod wireguard;

pub use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message,
    Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Address, Ipv4Packet, Ipv6Address,
    Ipv6Packet, TcpPacket, UdpPacket,
};

/// Why bytes could not be read as the header they claim to be.
///
/// Deliberately tiny (one byte, `Copy`): it is produced on the per-packet path and turned
/// into a drop reason there, never formatted on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// The buffer ends before the header (or a field it announces) does.
    Truncated,
    /// A length field disagrees with the buffer or with another length field.
    BadLength,
    /// The version field is not the one the header needs.
    BadVersion,
    /// A checksum that must be verified did not verify.
    BadChecksum,
    /// An IPv6 extension-header chain is longer than we are willing to walk, or is ordered
    /// in a way RFC 8200 forbids (hop-by-hop not first).
    BadExtensionChain,
    /// A type or flag field holds a value the header does not allow.
    BadField,
}

impl core::fmt::Display for Malformed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = match self {
            Malformed::Truncated => "truncated header",
            Malformed::BadLength => "inconsistent length field",
            Malformed::BadVersion => "wrong version field",
            Malformed::BadChecksum => "bad checksum",
            Malformed::BadExtensionChain => "bad IPv6 extension header chain",
            Malformed::BadField => "field value not allowed",
        };
        f.write_str(s)
    }
}

impl std::error::Error for Malformed {}
