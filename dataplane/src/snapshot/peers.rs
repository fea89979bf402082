//! WireGuard in the snapshot: this node's WireGuard address and port, and one entry per
//! remote node reached over WireGuard, with everything a worker needs to seal for it.
//!
//! The peers travel in the snapshot, not beside it: a route to a new node and the peer that
//! encrypts for it go live in the same generation, and the `Encrypt` adjacency of that
//! route names its peer ([`PeerIndex`]), so sealing needs no second lookup of the inner
//! destination. The outer headers to each peer (the uplink's MAC, the node's MAC, both
//! addresses and ports) are built here once ([`OuterTemplate`]); per packet the worker
//! writes only lengths and a checksum.
//!
//! Keys and sessions are not here: they are the worker's (`weir_crypto::Peers`), which
//! reconciles them with this table when the generation changes. The public key is kept as
//! raw bytes, so that the dataplane does not depend on the crypto library.

use std::net::SocketAddr;

use crate::snapshot::{NodeId, Prefix};
use crate::wire::wireguard::outer::OuterTemplate;

/// Index of a peer in [`PeerTable::peers`].
pub type PeerIndex = u32;

/// A remote node reached over WireGuard, as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The node (in the snapshot's node table) this peer is.
    pub node: NodeId,
    /// The node's name, for logs and errors.
    pub name: String,
    /// Its WireGuard public key (Curve25519, 32 bytes).
    pub public_key: [u8; 32],
    /// Where its WireGuard listens.
    pub endpoint: SocketAddr,
    /// Its pod CIDRs: what is routed to it, and the only inner sources it may send from.
    pub allowed_ips: Vec<Prefix>,
    /// Seconds between keepalives when idle (`None`: off).
    pub persistent_keepalive: Option<u16>,
}

/// A peer in a built snapshot: the spec and the outer headers to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub spec: PeerSpec,
    /// The outer headers from this node's uplink to `spec.endpoint`: `None` until the
    /// node's MAC on the underlay is known (its routes then drop as `neighbor_unresolved`).
    pub outer: Option<OuterTemplate>,
}

/// WireGuard on this node: off (`local` is `None`), or its address and peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTable {
    /// This node's WireGuard address (the uplink's) and port.
    pub local: Option<SocketAddr>,
    /// The peers, indexed by [`PeerIndex`].
    pub peers: Vec<Peer>,
}

impl PeerTable {
    /// Whether WireGuard is on.
    pub fn enabled(&self) -> bool {
        self.local.is_some()
    }

    /// The peer at `index`.
    #[inline]
    pub fn get(&self, index: PeerIndex) -> Option<&Peer> {
        self.peers.get(index as usize)
    }

    /// The peer that is node `node` (a scan: for building and control paths, not per
    /// packet; adjacencies carry the index).
    pub fn of_node(&self, node: NodeId) -> Option<PeerIndex> {
        self.peers
            .iter()
            .position(|p| p.spec.node == node)
            .map(|i| i as PeerIndex)
    }

    /// The peer whose public key is `key`.
    pub fn by_key(&self, key: &[u8; 32]) -> Option<PeerIndex> {
        self.peers
            .iter()
            .position(|p| &p.spec.public_key == key)
            .map(|i| i as PeerIndex)
    }
}
