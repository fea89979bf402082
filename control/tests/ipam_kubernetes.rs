//! IPAM with its state in the Kubernetes API (`IPAMBlock` objects), against the project's
//! fake API server: two nodes allocating at the same time never share a block or an
//! address, the leases are in the block objects, and a node that restarts finds them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use weir_control::ipam::Ipam;
use weir_control::k8s::ipam::KubeStore;
use weir_control::policy::model::IpPool;
use weir_control::policy::selector::{Labels, Selector};
use weir_testkit::fake_api::FakeApi;

fn ipam(fake: &FakeApi, node: &str) -> Ipam {
    let fake = fake.clone();
    let store = KubeStore::new(|| async move { Ok(fake.client()) }).unwrap();
    Ipam::with_store(Box::new(store), node).unwrap()
}

#[test]
fn two_nodes_allocating_at_once_share_no_block_and_leases_survive_a_restart() {
    let fake = FakeApi::new();
    let pool = IpPool {
        name: "pods".into(),
        cidr: "198.18.96.0/24".parse().unwrap(),
        block_size: 28,
        node_selector: Selector::All,
        disabled: false,
        nat_outgoing: false,
    };
    let got: Vec<(String, Vec<IpAddr>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|node| {
                let (fake, pool) = (&fake, &pool);
                s.spawn(move || {
                    let mut ipam = ipam(fake, node);
                    let mut ips = Vec::new();
                    for i in 0..30 {
                        ips.extend(
                            ipam.allocate(
                                &[pool],
                                &Labels::new(),
                                &format!("{node}{i}"),
                                "eth0",
                                None,
                            )
                            .unwrap(),
                        );
                    }
                    (node.to_owned(), ips)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: BTreeSet<IpAddr> = got
        .iter()
        .flat_map(|(_, ips)| ips.iter().copied())
        .collect();
    assert_eq!(all.len(), 60, "no address twice across the nodes");

    // The blocks and leases are API objects; each block has one holder.
    let a = ipam(&fake, "a");
    let b = ipam(&fake, "b");
    let blocks_a: BTreeSet<_> = a.blocks().copied().collect();
    let blocks_b: BTreeSet<_> = b.blocks().copied().collect();
    assert!(blocks_a.is_disjoint(&blocks_b));
    assert_eq!(
        a.leases().len(),
        30,
        "node a found its leases after a restart"
    );
    assert_eq!(b.leases().len(), 30);
    for (ip, lease) in a.leases() {
        assert!(lease.container_id.starts_with('a'), "{ip}: {lease:?}");
        assert!(blocks_a.iter().any(|blk| blk.contains(ip)));
    }
    let name = weir_control::k8s::ipam::block_name(blocks_a.iter().next().unwrap());
    let object = fake
        .get("weir.dev/v1", "IPAMBlock", None, &name)
        .expect("the block object");
    assert_eq!(object["spec"]["node"], "a");
    assert!(object["spec"]["leases"]
        .as_object()
        .is_some_and(|m| !m.is_empty()));

    // Release and GC write the block objects too.
    let mut a = a;
    assert_eq!(a.release("a0", Some("eth0")).unwrap().len(), 1);
    let keep: Vec<(String, String)> = (1..10).map(|i| (format!("a{i}"), "eth0".into())).collect();
    assert_eq!(a.gc(&keep).unwrap().len(), 20);
    assert_eq!(ipam(&fake, "a").leases().len(), 9);
}
