use std::net::{IpAddr, Ipv4Addr};

use super::super::{NextHop, PodSpec, Prefix, Publisher, SnapshotBuilder};
use super::FibStats;

fn pod(i: u8) -> PodSpec {
    PodSpec {
        namespace: "default".into(),
        name: format!("pod-{i}"),
        interface: format!("veth{i}"),
        gateway_mac: [0xee; 6],
        mac: [2, 0, 0, 0, 0, i],
        ipv4: Some(Ipv4Addr::new(198, 18, 0, i)),
        ipv6: None,
        mtu: 1500,
    }
}

/// A node with pods `pods` (added in this order, so that their interface indices move
/// as pods come and go) and a remote node's block.
fn node(pods: &[u8]) -> SnapshotBuilder {
    let mut b = SnapshotBuilder::new();
    for &i in pods {
        b.pod(pod(i)).unwrap();
    }
    let n = b.node(
        "other",
        "198.19.0.2".parse().unwrap(),
        Some([2, 9, 9, 9, 9, 9]),
    );
    b.route(
        "198.18.1.0/26".parse::<Prefix>().unwrap(),
        NextHop::Remote {
            node: n,
            tunnel: super::super::Tunnel::None,
        },
    );
    b
}

fn check(publisher: &Publisher, pods: &[u8]) {
    let s = publisher.current();
    for i in 0..8u8 {
        let want = pods.contains(&i).then(|| {
            let at = s.interface_by_name(&format!("veth{i}")).unwrap();
            NextHop::Local {
                interface: at,
                mac: [2, 0, 0, 0, 0, i],
            }
        });
        let got = s.fib.lookup(IpAddr::V4(Ipv4Addr::new(198, 18, 0, i)));
        assert_eq!(got, want, "pod {i} with pods {pods:?}");
    }
    assert!(matches!(
        s.fib.lookup("198.18.1.9".parse().unwrap()),
        Some(NextHop::Remote { .. })
    ));
    assert_eq!(s.fib.lookup("198.18.1.64".parse().unwrap()), None);
}

#[test]
fn publications_change_the_spare_table_in_place_and_answer_as_a_fresh_build() {
    let mut p = Publisher::new();
    let sequence: [&[u8]; 6] = [&[1], &[1, 2], &[0, 1, 2], &[0, 2], &[3, 0, 2, 5], &[]];
    for pods in sequence {
        p.publish(node(pods)).unwrap();
        check(&p, pods);
    }
    let stats = p.fib_stats();
    assert_eq!(
        stats,
        FibStats {
            full_builds: 2,
            updates: 4,
            prefixes_changed: stats.prefixes_changed,
            spare_held: 0,
        }
    );
    // Pods added before others move those others' interfaces, not their routes' ids:
    // each publication rewrote only the pods that came or went (1+1+1+2+4).
    assert_eq!(stats.prefixes_changed, 9);
}

#[test]
fn a_spare_still_held_is_left_alone_and_the_table_built_afresh() {
    let mut p = Publisher::new();
    p.publish(node(&[1])).unwrap();
    let held = p.current();
    p.publish(node(&[1, 2])).unwrap();
    // `held` keeps the first table: the third publication cannot change it.
    p.publish(node(&[1, 2, 3])).unwrap();
    check(&p, &[1, 2, 3]);
    assert_eq!(p.fib_stats().spare_held, 1);
    assert_eq!(p.fib_stats().full_builds, 3);
    // What `held` sees did not move.
    assert!(held.fib.lookup("198.18.0.2".parse().unwrap()).is_none());
    drop(held);
    p.publish(node(&[2, 3])).unwrap();
    p.publish(node(&[3])).unwrap();
    check(&p, &[3]);
    assert_eq!(p.fib_stats().updates, 2);
}
