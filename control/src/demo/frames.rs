//! `weir demo --in-memory`: the pipeline alone, without root. It builds the embedded default node (three pods in
//! two namespaces, an uplink to a remote node, the host link), sends a scripted set of
//! frames through the real pipeline with the in-memory driver, and prints, for each, what
//! was expected and what happened. Any mismatch is a failure (non-zero exit).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use weir_dataplane::snapshot::{Mac, NextHop, PodSpec, Prefix, Tunnel};
use weir_dataplane::{craft, DropReason, IfIndex, Snapshot, SnapshotBuilder};
use weir_workers::MemDriver;

const GW_MAC: Mac = [0xee, 0xee, 0xee, 0xee, 0xee, 0xee];
const UP_MAC: Mac = [0x02, 0x57, 0x45, 0x49, 0x52, 0x01];
const REMOTE_MAC: Mac = [0x02, 0x57, 0x45, 0x49, 0x52, 0x02];

struct DemoPod {
    ns: &'static str,
    name: &'static str,
    mac: Mac,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

const PODS: [DemoPod; 3] = [
    DemoPod {
        ns: "shop",
        name: "frontend",
        mac: [2, 0, 0, 0, 1, 1],
        v4: Ipv4Addr::new(198, 18, 1, 10),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10),
    },
    DemoPod {
        ns: "shop",
        name: "backend",
        mac: [2, 0, 0, 0, 1, 2],
        v4: Ipv4Addr::new(198, 18, 1, 11),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11),
    },
    DemoPod {
        ns: "billing",
        name: "ledger",
        mac: [2, 0, 0, 0, 2, 1],
        v4: Ipv4Addr::new(198, 18, 2, 10),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10),
    },
];

/// The embedded default node.
pub fn default_node() -> Result<Snapshot, String> {
    let mut b = SnapshotBuilder::new();
    for p in &PODS {
        b.pod(PodSpec {
            namespace: p.ns.into(),
            name: p.name.into(),
            interface: format!("weir-{}", p.name),
            gateway_mac: GW_MAC,
            mac: p.mac,
            ipv4: Some(p.v4),
            ipv6: Some(p.v6),
            mtu: 1440,
        })
        .map_err(|e| e.to_string())?;
    }
    b.uplink("uplink0", UP_MAC, 1500)
        .map_err(|e| e.to_string())?;
    let node = b.node(
        "node-2",
        "198.19.255.2".parse().expect("literal"),
        Some(REMOTE_MAC),
    );
    let route = |s: &str| s.parse::<Prefix>().map_err(|e| e.to_string());
    b.route(
        route("198.18.64.0/18")?,
        NextHop::Remote {
            node,
            tunnel: Tunnel::None,
        },
    );
    b.route(
        route("2001:db8:40::/48")?,
        NextHop::Remote {
            node,
            tunnel: Tunnel::None,
        },
    );
    b.route(
        route("198.18.128.0/18")?,
        NextHop::Remote {
            node,
            tunnel: Tunnel::WireGuard,
        },
    );
    b.build(1).map_err(|e| e.to_string())
}

/// What a scripted frame should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Out(IfIndex),
    Drop(DropReason),
}

/// Runs the demo; returns the printed report and whether every expectation held.
pub fn run() -> Result<(String, bool), String> {
    let snapshot = default_node()?;
    let idx = |name: &str| {
        snapshot
            .interface_by_name(name)
            .ok_or_else(|| format!("no interface {name}"))
    };
    let (fe, be, ledger) = (&PODS[0], &PODS[1], &PODS[2]);
    let gw4 = snapshot.gateway_v4;
    let remote4: Ipv4Addr = "198.18.64.7".parse().expect("literal");
    let remote6: Ipv6Addr = "2001:db8:40::7".parse().expect("literal");
    let ll: Ipv6Addr = "fe80::1:1".parse().expect("literal");
    let mut expired = craft::udp4(fe.mac, GW_MAC, fe.v4, be.v4, 4000, 53, 80);
    expired[22] = 1;
    expired[24..26].copy_from_slice(&[0, 0]);
    let c = weir_dataplane::wire::checksum::checksum(&expired[14..34]);
    expired[24..26].copy_from_slice(&c.to_be_bytes());
    let script: Vec<(&str, IfIndex, Vec<u8>, Expect)> = vec![
        (
            "frontend ARPs for its gateway 169.254.1.1",
            idx("weir-frontend")?,
            craft::arp_request(fe.mac, fe.v4, gw4),
            Expect::Out(idx("weir-frontend")?),
        ),
        (
            "frontend solicits fe80::1",
            idx("weir-frontend")?,
            craft::neighbor_solicitation(fe.mac, ll, snapshot.gateway_v6),
            Expect::Out(idx("weir-frontend")?),
        ),
        (
            "frontend -> backend, UDP/IPv4",
            idx("weir-frontend")?,
            craft::udp4(fe.mac, GW_MAC, fe.v4, be.v4, 40000, 8080, 200),
            Expect::Out(idx("weir-backend")?),
        ),
        (
            "frontend -> backend, TCP/IPv6",
            idx("weir-frontend")?,
            craft::tcp6(fe.mac, GW_MAC, fe.v6, be.v6, 40001, 8080, 200),
            Expect::Out(idx("weir-backend")?),
        ),
        (
            "backend -> ledger (other namespace), ping",
            idx("weir-backend")?,
            craft::icmp4_echo(be.mac, GW_MAC, be.v4, ledger.v4, 7, 56),
            Expect::Out(idx("weir-ledger")?),
        ),
        (
            "ledger -> pod on node-2, UDP/IPv4",
            idx("weir-ledger")?,
            craft::udp4(ledger.mac, GW_MAC, ledger.v4, remote4, 5000, 5001, 300),
            Expect::Out(idx("uplink0")?),
        ),
        (
            "ledger -> pod on node-2, UDP/IPv6",
            idx("weir-ledger")?,
            craft::udp6(ledger.mac, GW_MAC, ledger.v6, remote6, 5000, 5001, 300),
            Expect::Out(idx("uplink0")?),
        ),
        (
            "node-2 pod -> frontend, from the uplink",
            idx("uplink0")?,
            craft::udp4(REMOTE_MAC, UP_MAC, remote4, fe.v4, 5001, 5000, 300),
            Expect::Out(idx("weir-frontend")?),
        ),
        (
            "frontend forges backend's IP",
            idx("weir-frontend")?,
            craft::udp4(fe.mac, GW_MAC, be.v4, ledger.v4, 1, 2, 64),
            Expect::Drop(DropReason::SpoofedIp),
        ),
        (
            "frontend forges backend's MAC",
            idx("weir-frontend")?,
            craft::udp4(be.mac, GW_MAC, fe.v4, ledger.v4, 1, 2, 64),
            Expect::Drop(DropReason::SpoofedMac),
        ),
        (
            "frontend sends with TTL 1 (ICMP time exceeded back)",
            idx("weir-frontend")?,
            expired,
            Expect::Out(idx("weir-frontend")?),
        ),
        (
            "frontend -> 203.0.113.9, no route (ICMP unreachable back)",
            idx("weir-frontend")?,
            craft::udp4(
                fe.mac,
                GW_MAC,
                fe.v4,
                "203.0.113.9".parse().expect("literal"),
                1,
                2,
                64,
            ),
            Expect::Out(idx("weir-frontend")?),
        ),
        (
            "ledger -> WireGuard node without a peer: never in clear",
            idx("weir-ledger")?,
            craft::udp4(
                ledger.mac,
                GW_MAC,
                ledger.v4,
                "198.18.128.9".parse().expect("literal"),
                1,
                2,
                64,
            ),
            Expect::Drop(DropReason::WireguardNoPeer),
        ),
        (
            "a truncated frame",
            idx("weir-backend")?,
            vec![0u8; 9],
            Expect::Drop(DropReason::EthTruncated),
        ),
    ];

    let mut report = String::new();
    let _ = writeln!(
        report,
        "weir demo (in memory): node with {} pods, uplink to node-2, generation {}",
        PODS.len(),
        snapshot.generation
    );
    let _ = writeln!(
        report,
        "{:<68} {:<34} {:<34} ok",
        "frame", "expected", "seen"
    );
    let mut all_ok = true;
    for (i, (what, ingress, frame, expect)) in script.iter().enumerate() {
        let mut d = MemDriver::new(8, 8);
        d.inject(*ingress, frame).map_err(|e| e.to_string())?;
        d.run(&snapshot, 1_000_000_000 + i as u64);
        let seen = (0..snapshot.interfaces.len() as IfIndex)
            .find(|o| !d.take_tx(*o).is_empty())
            .map(Expect::Out)
            .or_else(|| {
                DropReason::ALL
                    .into_iter()
                    .find(|r| d.counters().dropped(*r) > 0)
                    .map(Expect::Drop)
            });
        let ok = seen == Some(*expect);
        all_ok &= ok;
        let _ = writeln!(
            report,
            "{:<68} {:<34} {:<34} {}",
            what,
            describe(&snapshot, Some(*expect)),
            describe(&snapshot, seen),
            if ok { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(
        report,
        "{}",
        if all_ok {
            "all frames did what was expected"
        } else {
            "SOME FRAMES DID NOT DO WHAT WAS EXPECTED"
        }
    );
    Ok((report, all_ok))
}

fn describe(snapshot: &Snapshot, e: Option<Expect>) -> String {
    match e {
        Some(Expect::Out(i)) => format!("sent on {}", snapshot.interfaces[usize::from(i)].name),
        Some(Expect::Drop(r)) => format!("dropped: {}", r.name()),
        None => "nothing".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_script_holds() {
        let (report, ok) = super::run().unwrap();
        assert!(ok, "{report}");
        assert_eq!(report.lines().filter(|l| l.ends_with(" yes")).count(), 14);
    }
}
