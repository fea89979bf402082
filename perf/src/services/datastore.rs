//! weir's side of a [`ServiceSet`]: the Services and EndpointSlices of the file datastore,
//! as a cluster's API server would hold them (`v1` Service with `spec.clusterIP`, a named
//! port and its `targetPort`; `discovery.k8s.io/v1` EndpointSlices labelled
//! `kubernetes.io/service-name`, as the EndpointSlice controller writes them).
//!
//! The target service selects the sink pod (`app: sink`) and its slice names the pod
//! (`targetRef`) on the benchmark's node; the other services have no selector (their
//! endpoints are addresses outside the node, as for a service whose slices another
//! controller manages) and one slice per endpoint port.

use std::fmt::Write as _;

use super::model::{BenchService, ServiceSet, NAMESPACE, PORT_NAME};

/// The label the EndpointSlice controller puts on its slices, with this harness as their
/// manager.
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by: weir-bench";

/// The datastore documents of every service in `set` (to append to the pods' file);
/// `node` is the node the sink pod runs on, `sink_pod` its name.
pub fn services_yaml(set: &ServiceSet, node: &str, sink_pod: &str) -> String {
    let mut o = String::with_capacity(set.endpoint_count() * 120 + set.services.len() * 600);
    for (i, s) in set.services.iter().enumerate() {
        let target = i == set.target;
        service(&mut o, s, target.then_some(sink_pod));
        slices(&mut o, s, target.then_some((node, sink_pod)));
    }
    o
}

fn proto(s: &BenchService) -> &'static str {
    if s.protocol == 17 {
        "UDP"
    } else {
        "TCP"
    }
}

fn service(o: &mut String, s: &BenchService, selects: Option<&str>) {
    let target_port = s.endpoints.first().map_or(s.port, |e| e.1);
    let _ = write!(
        o,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{namespace: {NAMESPACE}, name: {}}}\n\
         spec:\n  type: ClusterIP\n  clusterIP: {}\n  clusterIPs: [{}]\n  ports: [{{name: {PORT_NAME}, \
         protocol: {}, port: {}, targetPort: {target_port}}}]\n",
        s.name,
        s.cluster_ip,
        s.cluster_ip,
        proto(s),
        s.port
    );
    if let Some(app) = selects {
        let _ = writeln!(o, "  selector: {{app: {app}}}");
    }
}

/// One slice per distinct endpoint port (a slice's ports apply to all its endpoints).
fn slices(o: &mut String, s: &BenchService, local_pod: Option<(&str, &str)>) {
    let mut ports: Vec<u16> = s.endpoints.iter().map(|e| e.1).collect();
    ports.sort_unstable();
    ports.dedup();
    for (k, port) in ports.iter().enumerate() {
        let _ = write!(
            o,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
             namespace: {NAMESPACE}\n  name: {}-{k}\n  labels: {{kubernetes.io/service-name: {}, \
             {MANAGED_BY}}}\naddressType: IPv4\nports: [{{name: {PORT_NAME}, protocol: {}, port: {port}}}]\n\
             endpoints:\n",
            s.name,
            s.name,
            proto(s)
        );
        for e in s.endpoints.iter().filter(|e| e.1 == *port) {
            let _ = write!(
                o,
                "- addresses: [\"{}\"]\n  conditions: {{ready: true, serving: true, terminating: false}}\n",
                e.0
            );
            if let Some((node, pod)) = local_pod {
                let _ = write!(
                    o,
                    "  nodeName: {node}\n  targetRef: {{kind: Pod, namespace: {NAMESPACE}, name: {pod}}}\n"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use weir_control::policy::model::NamespacedName;

    const SINK: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 9, 2), 9);

    #[test]
    fn the_datastore_holds_every_service_and_the_target_points_at_the_sink_pod() {
        let set = ServiceSet::generate(1000, 10, SINK);
        let text = services_yaml(&set, "bench", "sink");
        let cluster =
            weir_control::policy::load::Cluster::from_sources([("services.yaml", text.as_str())])
                .unwrap();
        assert_eq!(cluster.services.len(), 1000);
        assert_eq!(cluster.endpoint_slices.len(), 1000);
        let t = set.target();
        let svc = &cluster.services[&NamespacedName::new(NAMESPACE, &t.name)];
        assert_eq!(svc.cluster_ips, vec![IpAddr::V4(t.cluster_ip)]);
        assert_eq!(svc.ports.len(), 1);
        assert_eq!(svc.ports[0].port, 80);
        assert!(svc.selector.is_some());
        let slice = &cluster.endpoint_slices[&NamespacedName::new(NAMESPACE, "target-0")];
        assert_eq!(slice.service.as_deref(), Some("target"));
        assert_eq!(slice.endpoints.len(), 1);
        assert_eq!(slice.endpoints[0].addresses, vec![IpAddr::V4(SINK.0)]);
        assert!(slice.endpoints[0].ready);
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("bench"));
        assert_eq!(slice.ports[0].port, Some(9));
        // Another service: 10 endpoints, no selector, not on the node.
        let other = &set.services[1];
        let s = &cluster.services[&NamespacedName::new(NAMESPACE, &other.name)];
        assert!(s.selector.is_none());
        let slice =
            &cluster.endpoint_slices[&NamespacedName::new(NAMESPACE, format!("{}-0", other.name))];
        assert_eq!(slice.endpoints.len(), 10);
        assert!(slice.endpoints.iter().all(|e| e.node_name.is_none()));
    }

    #[test]
    fn endpoints_on_several_ports_get_a_slice_per_port() {
        // Past 32,258 endpoints the generator moves to the next port.
        let set = ServiceSet::generate(4000, 10, SINK);
        let text = services_yaml(&set, "bench", "sink");
        let cluster =
            weir_control::policy::load::Cluster::from_sources([("services.yaml", text.as_str())])
                .unwrap();
        assert_eq!(cluster.services.len(), 4000);
        let endpoints: usize = cluster
            .endpoint_slices
            .values()
            .map(|s| s.endpoints.len())
            .sum();
        assert_eq!(endpoints, set.endpoint_count());
        assert!(cluster.endpoint_slices.len() > 4000);
        for s in cluster.endpoint_slices.values() {
            assert_eq!(s.ports.len(), 1);
        }
    }

    #[test]
    fn the_control_plane_turns_the_datastore_into_the_same_services() {
        let set = ServiceSet::generate(1000, 10, SINK);
        let mut text = crate::forward::forwarders::weir_datastore(
            ("wfg1", &[2, 0, 0, 0, 0, 1]),
            ("wfs1", &[2, 0, 0, 0, 0, 2]),
            &[],
        );
        text.push_str(&services_yaml(&set, "bench", "sink"));
        let cluster =
            weir_control::policy::load::Cluster::from_sources([("bench.yaml", text.as_str())])
                .unwrap();
        let specs = weir_control::services::node_services(&cluster, "bench", &[]);
        assert_eq!(specs.len(), 1000);
        let t = set.target();
        let target = specs.iter().find(|s| s.name == t.name).unwrap();
        assert_eq!(target.protocol, 17);
        assert_eq!(target.frontends.len(), 1);
        assert_eq!(target.frontends[0].addr, IpAddr::V4(t.cluster_ip));
        assert_eq!(target.frontends[0].port, 80);
        assert_eq!(target.backends.len(), 1);
        assert_eq!(target.backends[0].addr, IpAddr::V4(SINK.0));
        assert_eq!(target.backends[0].port, SINK.1);
        assert!(target.backends[0].ready && target.backends[0].local);
        let backends: usize = specs.iter().map(|s| s.backends.len()).sum();
        assert_eq!(backends, set.endpoint_count());
        // And the dataplane accepts the table.
        weir_dataplane::service::ServiceTable::build(specs, None).unwrap();
    }
}
