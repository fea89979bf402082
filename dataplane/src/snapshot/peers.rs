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
    /// Node id → its peer, built with the table.
    pub(crate) by_node: Vec<Option<PeerIndex>>,
}

impl PeerTable {
    /// The peer at `index`.
    #[inline]
    pub fn get(&self, index: PeerIndex) -> Option<&Peer> {
        self.peers.get(index as usize)
    }

    /// The peer that is node `node` (adjacencies carry the index for the packet path).
    pub fn of_node(&self, node: NodeId) -> Option<PeerIndex> {
        self.by_node.get(node as usize).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use crate::snapshot::{BuildError, PeerSpec, SnapshotBuilder};

    fn spec(node: u32, name: &str, key: u8) -> PeerSpec {
        PeerSpec {
            node,
            name: name.into(),
            public_key: [key; 32],
            endpoint: "198.18.0.2:51820".parse().unwrap(),
            allowed_ips: vec![],
            persistent_keepalive: None,
        }
    }

    #[test]
    fn peers_are_checked_and_found_by_node() {
        let mut b = SnapshotBuilder::new();
        b.uplink("up0", [2, 0, 0, 0, 0, 1], 1500).unwrap();
        let n0 = b.node(
            "n0",
            "198.18.0.2".parse().unwrap(),
            Some([2, 0, 0, 0, 0, 2]),
        );
        let n1 = b.node("n1", "198.18.0.3".parse().unwrap(), None);
        let mut ok = b.clone();
        ok.wireguard("198.18.0.1:51820".parse().unwrap());
        ok.peer(spec(n1, "n1", 1));
        ok.peer(spec(n0, "n0", 2));
        let s = ok.build(1).unwrap();
        assert_eq!(
            (s.peers.of_node(n0), s.peers.of_node(n1)),
            (Some(1), Some(0))
        );
        assert!(s.peers.get(1).unwrap().outer.is_some(), "n0's MAC is known");
        assert!(s.peers.get(0).unwrap().outer.is_none(), "n1's is not");

        let mut off = b.clone();
        off.peer(spec(n0, "n0", 2));
        assert_eq!(off.build(1).unwrap_err(), BuildError::PeersWithoutWireGuard);
        for (second, what) in [
            (spec(n0, "again", 3), "node"),
            (spec(n1, "copy", 2), "public key"),
        ] {
            let mut dup = b.clone();
            dup.wireguard("198.18.0.1:51820".parse().unwrap());
            dup.peer(spec(n0, "n0", 2));
            dup.peer(second);
            match dup.build(1) {
                Err(BuildError::DuplicatePeer { what: w, .. }) => assert_eq!(w, what),
                other => panic!("{other:?}"),
            }
        }
        let mut dangling = b;
        dangling.wireguard("198.18.0.1:51820".parse().unwrap());
        dangling.peer(spec(9, "ghost", 4));
        assert!(matches!(
            dangling.build(1),
            Err(BuildError::DanglingPeer { node: 9, .. })
        ));
    }
}
