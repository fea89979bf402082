//! [`ServiceState::refresh`] derives only the Services a change may have touched: after
//! any history of changes to Services, EndpointSlices, pods and node addresses, the
//! published table holds exactly what a derivation of the whole model gives.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::calc::{Calculator, Change};
use crate::policy::load::load_documents;
use crate::policy::model::{Kind, ObjectRef};

const NODE: &str = "node-a";

#[derive(Debug, Clone)]
enum Op {
    /// Service `k`: with a selector (`app: a{sel}`) or none, a named or numbered target
    /// port, a node port or not.
    Service {
        k: u8,
        selector: Option<u8>,
        named: bool,
        node_port: bool,
    },
    DeleteService(u8),
    /// Slice `j` of service `k`: endpoints (address index, ready, node index: a, b, none).
    Slice {
        k: u8,
        j: u8,
        endpoints: Vec<(u8, bool, u8)>,
    },
    DeleteSlice(u8, u8),
    /// Pod `i`: `app: a{app}`, on node a or b, at address index `ip`.
    Pod {
        i: u8,
        app: u8,
        here: bool,
        ip: u8,
    },
    DeletePod(u8),
    /// The node's addresses: none, or one.
    Addresses(bool),
    /// A refresh whose table is never published (the change is dropped).
    Unpublished,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..4,
            prop::option::of(0u8..2),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(k, selector, named, node_port)| Op::Service {
                k,
                selector,
                named,
                node_port
            }),
        (0u8..4).prop_map(Op::DeleteService),
        (
            0u8..4,
            0u8..2,
            prop::collection::vec((0u8..8, any::<bool>(), 0u8..3), 0..4)
        )
            .prop_map(|(k, j, endpoints)| Op::Slice { k, j, endpoints }),
        (0u8..4, 0u8..2).prop_map(|(k, j)| Op::DeleteSlice(k, j)),
        (0u8..6, 0u8..2, any::<bool>(), 0u8..8).prop_map(|(i, app, here, ip)| Op::Pod {
            i,
            app,
            here,
            ip
        }),
        (0u8..6).prop_map(Op::DeletePod),
        any::<bool>().prop_map(Op::Addresses),
        Just(Op::Unpublished),
    ]
}

fn addr(i: u8) -> String {
    format!("198.18.10.{}", u32::from(i) + 1)
}

fn yaml(op: &Op) -> Option<String> {
    Some(match op {
        Op::Service {
            k,
            selector,
            named,
            node_port,
        } => {
            let selector =
                selector.map_or(String::new(), |a| format!("  selector: {{app: a{a}}}\n"));
            let target = if *named { "http" } else { "8080" };
            let (kind, np) = if *node_port {
                ("NodePort", format!(", nodePort: {}", 30000 + u32::from(*k)))
            } else {
                ("ClusterIP", String::new())
            };
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: s{k}, namespace: shop}}\n\
                 spec:\n  type: {kind}\n  clusterIP: 198.19.0.{}\n{selector}  ports: [{{name: \
                 http, port: 80, targetPort: {target}{np}}}]\n",
                10 + k
            )
        }
        Op::Slice { k, j, endpoints } => {
            let eps: String = endpoints
                .iter()
                .map(|(a, ready, node)| {
                    let node = match node {
                        0 => "nodeName: node-a, ",
                        1 => "nodeName: node-b, ",
                        _ => "",
                    };
                    format!(
                        "  - {{addresses: ['{}'], {node}conditions: {{ready: {ready}}}}}\n",
                        addr(*a)
                    )
                })
                .collect();
            let eps = if eps.is_empty() {
                "endpoints: []\n".to_owned()
            } else {
                format!("endpoints:\n{eps}")
            };
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: \
                 s{k}-{j}, namespace: shop, labels: {{kubernetes.io/service-name: s{k}}}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n{eps}"
            )
        }
        Op::Pod { i, app, here, ip } => format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: shop, labels: {{app: \
             a{app}}}}}\nspec:\n  nodeName: {}\n  containers:\n  - name: c\n    image: x\n    \
             ports: [{{name: http, containerPort: {}}}]\nstatus:\n  podIPs: [{{ip: '{}'}}]\n",
            if *here { NODE } else { "node-b" },
            8080 + u32::from(*i % 2),
            // Pod i owns addresses i and i + 8: no two pods share one.
            addr(if *ip % 2 == 0 { *i } else { *i + 8 })
        ),
        _ => return None,
    })
}

fn apply(calc: &mut Calculator, op: &Op) {
    let delete = |kind, name: String| Change::Delete(ObjectRef::namespaced(kind, "shop", &name));
    let change = match op {
        Op::DeleteService(k) => delete(Kind::Service, format!("s{k}")),
        Op::DeleteSlice(k, j) => delete(Kind::EndpointSlice, format!("s{k}-{j}")),
        Op::DeletePod(i) => delete(Kind::Pod, format!("p{i}")),
        other => match yaml(other) {
            Some(y) => {
                let mut objects =
                    load_documents(&y, "test.yaml").unwrap_or_else(|e| panic!("{e:?}\n{y}"));
                Change::Upsert(objects.remove(0))
            }
            None => return,
        },
    };
    let refused = calc.apply(change);
    assert!(refused.is_empty(), "{refused:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn any_history_publishes_what_a_full_derivation_gives(ops in prop::collection::vec(op(), 1..40)) {
        let mut calc = Calculator::new(NODE);
        let mut state = ServiceState::default();
        let mut addresses: Vec<IpAddr> = Vec::new();
        for op in &ops {
            apply(&mut calc, op);
            if let Op::Addresses(some) = op {
                addresses = if *some { vec!["198.18.0.1".parse().unwrap()] } else { Vec::new() };
            }
            let change = state.refresh(&mut calc, NODE, &addresses);
            if matches!(op, Op::Unpublished) {
                drop(change);
                continue;
            }
            state.commit(change);
            let want = node_services(calc.cluster(), NODE, &addresses);
            let have: Vec<ServiceSpec> = state.table().ports().map(|p| p.spec.clone()).collect();
            prop_assert_eq!(have, want, "after {:?}", op);
            prop_assert_eq!(state.refusal(), None);
        }
    }
}

#[test]
fn a_slice_change_derives_only_its_service() {
    let mut calc = Calculator::new(NODE);
    let mut state = ServiceState::default();
    for op in [
        Op::Service {
            k: 0,
            selector: None,
            named: false,
            node_port: false,
        },
        Op::Service {
            k: 1,
            selector: None,
            named: false,
            node_port: false,
        },
        Op::Slice {
            k: 0,
            j: 0,
            endpoints: vec![(1, true, 0)],
        },
        Op::Slice {
            k: 1,
            j: 0,
            endpoints: vec![(2, true, 1)],
        },
    ] {
        apply(&mut calc, &op);
    }
    let c = state.refresh(&mut calc, NODE, &[]);
    assert_eq!(c.changed(), 2);
    state.commit(c);
    apply(
        &mut calc,
        &Op::Slice {
            k: 1,
            j: 0,
            endpoints: vec![(2, false, 1), (3, true, 1)],
        },
    );
    let c = state.refresh(&mut calc, NODE, &[]);
    assert_eq!(c.changed(), 1, "only s1");
    state.commit(c);
    // Nothing changed: nothing derived, the same table.
    let before = Arc::clone(state.table());
    let c = state.refresh(&mut calc, NODE, &[]);
    assert!(!c.is_new() && Arc::ptr_eq(c.table(), &before));
}
