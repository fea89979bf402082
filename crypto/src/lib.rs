//! weir's WireGuard keys and sessions: the node key, and the peers of a worker with their
//! sessions (boringtun's protocol, `ring`'s ChaCha20-Poly1305). The outer headers between
//! nodes are the dataplane's (`weir_dataplane::wire::wireguard::outer`), which peer to seal
//! for is the snapshot's (`weir_dataplane::snapshot::PeerTable`).
//!
//! No socket, no clock and no random source of its own beyond what boringtun reads (the
//! monotonic clock for its timers, the OS for ephemeral keys): the worker that owns a
//! [`peers::Peers`] feeds it messages and ticks.

#![forbid(unsafe_code)]

pub mod keys;
pub mod peers;

pub use boringtun::x25519::PublicKey;
pub use ipnet::IpNet;
pub use keys::{parse_public, KeyError, NodeKey};
pub use peers::{Opened, PeerConfig, PeerError, PeerId, Peers, Sealed, WgCounters, WgDrop};

/// WireGuard's default port.
pub const DEFAULT_PORT: u16 = 51820;

/// What happens to traffic for a node without a usable peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncryptionMode {
    /// Dropped and counted; never sent in clear. The default when WireGuard is on.
    #[default]
    Required,
    /// Sent in clear, counted and logged.
    Preferred,
    /// No WireGuard.
    Off,
}

impl std::str::FromStr for EncryptionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "required" => Ok(EncryptionMode::Required),
            "preferred" => Ok(EncryptionMode::Preferred),
            "off" => Ok(EncryptionMode::Off),
            other => Err(format!(
                "encryption mode {other:?}: expected required, preferred or off"
            )),
        }
    }
}
