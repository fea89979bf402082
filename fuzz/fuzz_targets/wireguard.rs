//! WireGuard from the wire: arbitrary frames through the outer-header parser, and arbitrary
//! messages into a peer table that has a peer. Nothing may panic; everything must be a
//! counted drop, a reply, or (for well-formed input only) a packet.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use weir_dataplane::wire::wireguard::outer;
use weir_crypto::peers::{Opened, PeerConfig, Peers};
use weir_crypto::NodeKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(inb) = outer::parse(data, 51820) {
        assert!(inb.offset + inb.message.len() <= data.len());
    }
    let key = NodeKey::from_bytes([1; 32]);
    let peer = NodeKey::from_bytes([2; 32]);
    let mut peers = Peers::new(key, 10);
    peers
        .set_peers(vec![PeerConfig {
            name: "p".into(),
            public_key: peer.public(),
            endpoint: "198.18.0.2:51820".parse().unwrap(),
            allowed_ips: vec!["198.18.2.0/24".parse().unwrap()],
            persistent_keepalive: None,
        }])
        .unwrap();
    let from: SocketAddr = "198.18.0.2:51820".parse().unwrap();
    let mut out = vec![0u8; data.len().max(2048)];
    match peers.open(from, data, &mut out) {
        Opened::Packet { .. } => panic!("an unauthenticated message opened"),
        Opened::Reply { .. } | Opened::Nothing | Opened::Dropped(_) => {}
    }
});
