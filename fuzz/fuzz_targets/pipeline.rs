//! Whole frames through the whole pipeline. The first input byte picks the ingress
//! interface (two pods, the uplink, the host link, or one the snapshot does not know);
//! the rest is the frame. Whatever the bytes, the pipeline must not panic, and every frame
//! must end up transmitted or dropped with its counters balanced.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use weir_dataplane::service::{BackendSpec, FrontendKind, FrontendSpec, ServiceSpec, ServiceTable};
use weir_dataplane::snapshot::{NextHop, PodSpec, Prefix, Tunnel};
use weir_dataplane::{Snapshot, SnapshotBuilder};
use weir_workers::MemDriver;

fn node() -> &'static Snapshot {
    static NODE: OnceLock<Snapshot> = OnceLock::new();
    NODE.get_or_init(|| {
        let mut b = SnapshotBuilder::new();
        for (i, name) in ["a", "b"].iter().enumerate() {
            b.pod(PodSpec {
                namespace: "fuzz".into(),
                name: (*name).into(),
                interface: format!("veth-{name}"),
                gateway_mac: [0xee; 6],
                mac: [2, 0, 0, 0, 0, 0x0a + i as u8],
                ipv4: Some(format!("198.18.0.{}", 10 + i).parse().unwrap()),
                ipv6: Some(format!("2001:db8::{}", 10 + i).parse().unwrap()),
                mtu: 1400,
            })
            .unwrap();
        }
        b.uplink("up0", [2, 0, 0, 0, 0, 0x99], 1500).unwrap();
        b.host("weir0", [2, 0, 0, 0, 0, 0x77], [2, 0, 0, 0, 0, 0x78], 1500).unwrap();
        let n = b.node("n2", "198.19.255.2".parse().unwrap(), Some([2, 0, 0, 0, 0, 0x22]));
        let routes = [
            ("0.0.0.0/0", NextHop::Remote { node: n, tunnel: Tunnel::None }),
            ("::/0", NextHop::Remote { node: n, tunnel: Tunnel::None }),
            ("198.19.1.0/24", NextHop::Remote { node: n, tunnel: Tunnel::WireGuard }),
            ("198.19.2.0/24", NextHop::Blackhole),
            ("198.19.3.0/24", NextHop::Unreachable),
            ("198.19.5.0/24", NextHop::Host),
        ];
        for (p, nh) in routes {
            b.route(p.parse::<Prefix>().unwrap(), nh);
        }
        // Services: a cluster IP on pod b (TCP, UDP, SCTP, with a hairpin from b), one
        // without endpoints, and a node port from the uplink (translated to the node, which
        // has no SNAT address here).
        let spec = |name: &str, protocol, addr: &str, port, kind, backends: Vec<BackendSpec>| {
            ServiceSpec {
                namespace: "fuzz".into(),
                name: name.into(),
                port_name: String::new(),
                protocol,
                frontends: vec![FrontendSpec { addr: addr.parse().unwrap(), port, kind }],
                backends,
                external_local: false,
                internal_local: false,
                affinity_seconds: Some(60),
            }
        };
        let b4 = || {
            vec![BackendSpec {
                addr: "198.18.0.11".parse().unwrap(),
                port: 8080,
                ready: true,
                serving: true,
                terminating: false,
                local: true,
            }]
        };
        let mut specs = Vec::new();
        for proto in [6u8, 17, 132] {
            specs.push(spec("api", proto, "198.19.9.1", 80, FrontendKind::ClusterIp, b4()));
            specs.push(spec("none", proto, "198.19.9.2", 80, FrontendKind::ClusterIp, vec![]));
            specs.push(spec("np", proto, "198.19.255.1", 30080, FrontendKind::NodePort, b4()));
        }
        b.services(Arc::new(ServiceTable::build(specs, None).unwrap()));
        b.build(1).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, frame)) = data.split_first() else {
        return;
    };
    let mut d = MemDriver::new(4, 4);
    if d.inject(u16::from(which % 5), frame).is_err() {
        return; // larger than a frame: a driver never hands such a frame to the pipeline
    }
    d.run(node(), 1_000_000_000);
    d.counters().check_accounting().unwrap();
    assert_eq!(d.counters().rx, 1);
    d.complete_all();
    d.check_accounting().unwrap();
});
