//! Longest-prefix match: the route tables workers look destinations up in.
//!
//! The control plane builds an immutable table once per routing change ([`Ipv4Lpm::build`],
//! [`Ipv6Lpm::build`]) and publishes it; workers only look up, one batch of addresses at a
//! time ([`Ipv4Lpm::lookup_batch`]), as DPDK's `rte_fib` and VPP's `ip4-lookup` do. A table
//! maps a prefix to an opaque next-hop id (a `u32` below 2^31) that the caller turns into a
//! next hop; an address no prefix covers yields [`MISS`] in a batch and `None` from a single
//! lookup.
//!
//! Why two different structures:
//!
//! - **IPv4** uses DIR-24-8 (P. Gupta, S. Lin, N. McKeown, "Routing Lookups in Hardware at
//!   Memory Access Speeds", IEEE INFOCOM 1998): a directly indexed table of 2^24 entries for
//!   the top 24 bits and 256-entry groups for the prefixes longer than /24. Every lookup is
//!   one memory access, two for addresses under a prefix longer than /24, whatever the
//!   number of routes. It costs 64 MiB of address space, paid once per table, and most of
//!   it is untouched (so unmapped) in small tables. See [`v4`].
//! - **IPv6** uses binary search on prefix lengths over one hash table per length, with
//!   markers and precomputed best-matching prefixes (M. Waldvogel, G. Varghese, J. Turner,
//!   B. Plattner, "Scalable High Speed IP Routing Lookups", ACM SIGCOMM 1997). A lookup
//!   costs one hash probe per level of a balanced search over the *distinct* prefix lengths
//!   in the table, not one memory access per stride of the address: a Kubernetes table
//!   (cluster /48, node /64 pod ranges, /128 pod and service hosts, a default route) has a
//!   handful of lengths, so two or three probes, while a multibit trie like DPDK's (24
//!   bits, then 8 at a time) makes 14 dependent loads to resolve a /128. See [`v6`].
//!
//! [`naive`] holds one-bit-per-level binary tries: the model the property tests compare
//! both tables with, and the slow anchor of the LPM benchmark.

use std::net::IpAddr;

pub mod naive;
pub mod v4;
pub mod v6;

pub use v4::{Ipv4Lpm, Ipv4Routes};
pub use v6::Ipv6Lpm;

/// What [`Ipv4Lpm::lookup_batch`] and [`Ipv6Lpm::lookup_batch`] write for an address that
/// no prefix covers. Never a valid value (values are below 2^31).
pub const MISS: u32 = u32::MAX;

/// The largest value a table accepts (`2^31 - 1`): next-hop ids are 31 bits wide so that
/// the lookup structures can keep a flag bit beside them.
pub const MAX_VALUE: u32 = (1 << 31) - 1;

/// Why a route table could not be built. Every variant names the offending prefix.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LpmError {
    /// The prefix length is longer than the address.
    #[error("{prefix}/{len}: prefix length {len} is longer than the {max} bits of the address")]
    PrefixTooLong {
        /// The prefix as given.
        prefix: IpAddr,
        /// The length as given.
        len: u8,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits beyond the prefix length are set, which usually means a typo in the address or
    /// the length.
    #[error("{prefix}/{len} has host bits set; did you mean {masked}/{len}?")]
    HostBitsSet {
        /// The prefix as given.
        prefix: IpAddr,
        /// The length as given.
        len: u8,
        /// The prefix with the host bits cleared.
        masked: IpAddr,
    },
    /// The same prefix appears twice; a table maps each prefix to one value.
    #[error(
        "{prefix}/{len} is listed twice (values {first} and {second}); \
         each prefix may appear once"
    )]
    DuplicatePrefix {
        /// The prefix.
        prefix: IpAddr,
        /// Its length.
        len: u8,
        /// The value given first.
        first: u32,
        /// The value given again.
        second: u32,
    },
    /// The value does not fit in 31 bits.
    #[error("{prefix}/{len}: value {value} is too large; values must be at most {MAX_VALUE}")]
    ValueTooLarge {
        /// The prefix.
        prefix: IpAddr,
        /// Its length.
        len: u8,
        /// The value given.
        value: u32,
    },
    /// The IPv4 table ran out of 256-entry groups, one of which every /24 holding a prefix
    /// longer than /24 needs.
    #[error(
        "the routes need more than {max} tbl8 groups (one per /24 that holds a prefix longer \
         than /24); aggregate the long prefixes or raise the limit with \
         Ipv4Lpm::build_with_tbl8_limit"
    )]
    Tbl8Exhausted {
        /// The limit that was reached.
        max: usize,
    },
}
