//! What the agent's `/services` answers (JSON) and `weir services` prints (a table): the
//! service table the workers hold, each service port with its frontends, its backends with
//! their conditions, and which of them take new connections.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use weir_dataplane::service::{BackendSpec, ServiceTable, SCTP, TCP, UDP};

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesView {
    /// The generation of the snapshot the table was read from.
    pub generation: u64,
    /// Why the model's latest services are not the ones served (the last good table
    /// serves on), while that lasts.
    pub refused: Option<String>,
    /// Every service port, in the table's order.
    pub services: Vec<ServicePortView>,
}

/// One service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePortView {
    /// `namespace/name`, as `kubectl` names the service.
    pub service: String,
    pub namespace: String,
    pub name: String,
    /// Empty for a single unnamed port.
    pub port_name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub frontends: Vec<FrontendView>,
    pub backends: Vec<BackendView>,
    /// `externalTrafficPolicy`: `Cluster` or `Local`.
    pub external_traffic_policy: String,
    /// `internalTrafficPolicy`: `Cluster` or `Local`.
    pub internal_traffic_policy: String,
    /// `ClientIP` affinity's timeout, if the service has one.
    pub affinity_seconds: Option<u32>,
    /// Which endpoints new connections go to under the `Cluster` policy.
    pub cluster: InUse,
    /// Which of this node's endpoints new connections go to under a `Local` policy.
    pub local: InUse,
}

/// A frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendView {
    pub addr: IpAddr,
    pub port: u16,
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalIP`.
    pub kind: String,
}

/// A backend and its conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub addr: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node.
    pub local: bool,
}

/// Which set of endpoints takes new connections, and how many are in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InUse {
    /// `ready`; `terminating` when none is ready (the serving and terminating ones); `none`
    /// when there is neither (new connections are refused).
    pub set: String,
    /// The endpoints in the set, as compiled in the table.
    pub backends: usize,
}

/// The view of `table`, read from the snapshot of `generation`.
pub fn view(generation: u64, table: &ServiceTable, refused: Option<&str>) -> ServicesView {
    let policy = |local: bool| if local { "Local" } else { "Cluster" }.to_owned();
    let services = table
        .ports()
        .map(|p| {
            let s = &p.spec;
            ServicePortView {
                service: format!("{}/{}", s.namespace, s.name),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                port_name: s.port_name.clone(),
                protocol: protocol_name(s.protocol),
                frontends: s
                    .frontends
                    .iter()
                    .map(|f| FrontendView {
                        addr: f.addr,
                        port: f.port,
                        kind: f.kind.name().to_owned(),
                    })
                    .collect(),
                backends: s
                    .backends
                    .iter()
                    .map(|b| BackendView {
                        addr: b.addr,
                        port: b.port,
                        ready: b.ready,
                        serving: b.serving,
                        terminating: b.terminating,
                        local: b.local,
                    })
                    .collect(),
                external_traffic_policy: policy(s.external_local),
                internal_traffic_policy: policy(s.internal_local),
                affinity_seconds: s.affinity_seconds,
                cluster: in_use(&s.backends, |_| true, p.cluster.backends.len()),
                local: in_use(&s.backends, |b| b.local, p.local.backends.len()),
            }
        })
        .collect();
    ServicesView {
        generation,
        refused: refused.map(str::to_owned),
        services,
    }
}

/// The table `weir services` prints: a head line per service port, then a line per
/// frontend and per backend.
pub fn render(v: &ServicesView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "snapshot generation {}, {} service port{}",
        v.generation,
        v.services.len(),
        if v.services.len() == 1 { "" } else { "s" }
    );
    if let Some(why) = &v.refused {
        let _ = writeln!(out, "REFUSED: {why}");
    }
    for s in &v.services {
        let port = if s.port_name.is_empty() {
            s.protocol.clone()
        } else {
            format!("{}/{}", s.port_name, s.protocol)
        };
        let affinity = match s.affinity_seconds {
            Some(t) => format!("ClientIP {t} s"),
            None => "none".into(),
        };
        let _ = writeln!(
            out,
            "\n{} {port}  (externalTrafficPolicy {}, internalTrafficPolicy {}, affinity \
             {affinity})",
            s.service, s.external_traffic_policy, s.internal_traffic_policy
        );
        let _ = writeln!(
            out,
            "  new connections: {} ({}); local: {} ({})",
            s.cluster.set, s.cluster.backends, s.local.set, s.local.backends
        );
        let _ = writeln!(out, "  {:<9} {:<45} DETAIL", "", "ADDRESS");
        for f in &s.frontends {
            let _ = writeln!(
                out,
                "  {:<9} {:<45} {}",
                "frontend",
                socket(f.addr, f.port),
                f.kind
            );
        }
        if s.backends.is_empty() {
            let _ = writeln!(out, "  {:<9} {:<45} -", "backend", "(none)");
        }
        for b in &s.backends {
            let mut conditions: Vec<&str> = Vec::new();
            for (set, name) in [
                (b.ready, "ready"),
                (b.serving, "serving"),
                (b.terminating, "terminating"),
                (b.local, "local"),
            ] {
                if set {
                    conditions.push(name);
                }
            }
            if !b.ready {
                conditions.insert(0, "not-ready");
            }
            let _ = writeln!(
                out,
                "  {:<9} {:<45} {}",
                "backend",
                socket(b.addr, b.port),
                conditions.join(" ")
            );
        }
    }
    out
}

fn socket(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        TCP => "TCP".into(),
        UDP => "UDP".into(),
        SCTP => "SCTP".into(),
        other => other.to_string(),
    }
}

/// The set the dataplane chooses from (see `weir_dataplane::service`): the ready backends
/// `keep` accepts, else the serving and terminating ones.
fn in_use(backends: &[BackendSpec], keep: impl Fn(&BackendSpec) -> bool, compiled: usize) -> InUse {
    let kept = || backends.iter().filter(|b| keep(b));
    let set = if kept().any(|b| b.ready) {
        "ready"
    } else if kept().any(|b| b.serving && b.terminating) {
        "terminating"
    } else {
        "none"
    };
    InUse {
        set: set.into(),
        backends: compiled,
    }
}

#[cfg(test)]
mod tests {
    use weir_dataplane::service::{FrontendKind, FrontendSpec, ServiceSpec};

    use super::*;

    fn backend(last: u8, ready: bool, terminating: bool, local: bool) -> BackendSpec {
        BackendSpec {
            addr: IpAddr::from([198, 18, 1, last]),
            port: 8080,
            ready,
            serving: true,
            terminating,
            local,
        }
    }

    fn table(backends: Vec<BackendSpec>) -> ServiceTable {
        ServiceTable::build(
            vec![ServiceSpec {
                namespace: "shop".into(),
                name: "api".into(),
                port_name: "http".into(),
                protocol: TCP,
                frontends: vec![
                    FrontendSpec {
                        addr: IpAddr::from([198, 19, 0, 10]),
                        port: 80,
                        kind: FrontendKind::ClusterIp,
                    },
                    FrontendSpec {
                        addr: "2001:db8::1".parse().unwrap(),
                        port: 30080,
                        kind: FrontendKind::NodePort,
                    },
                ],
                backends,
                external_local: true,
                internal_local: false,
                affinity_seconds: Some(60),
            }],
            None,
        )
        .unwrap()
    }

    #[test]
    fn the_view_says_which_set_takes_new_connections() {
        let t = table(vec![
            backend(1, true, false, false),
            backend(2, false, true, true),
            backend(3, true, false, false),
        ]);
        let v = view(7, &t, None);
        let s = &v.services[0];
        assert_eq!(s.service, "shop/api");
        assert_eq!(
            (s.protocol.as_str(), s.frontends[1].kind.as_str()),
            ("TCP", "NodePort")
        );
        assert_eq!(
            s.cluster,
            InUse {
                set: "ready".into(),
                backends: 2
            }
        );
        assert_eq!(
            s.local,
            InUse {
                set: "terminating".into(),
                backends: 1
            },
            "this node's only endpoint is terminating"
        );
        assert_eq!(
            (
                s.external_traffic_policy.as_str(),
                s.internal_traffic_policy.as_str()
            ),
            ("Local", "Cluster")
        );
        let none = view(8, &table(vec![backend(4, false, false, true)]), Some("why"));
        assert_eq!(none.services[0].cluster.set, "none");
        assert_eq!(none.refused.as_deref(), Some("why"));
        let back: ServicesView = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v, "the JSON reads back as written");
    }

    #[test]
    fn the_table_has_a_line_per_frontend_and_backend() {
        let t = table(vec![
            backend(1, true, false, true),
            backend(2, false, true, false),
        ]);
        let text = render(&view(3, &t, Some("two services on one frontend")));
        assert!(
            text.starts_with("snapshot generation 3, 1 service port\n"),
            "{text}"
        );
        assert!(
            text.contains("REFUSED: two services on one frontend"),
            "{text}"
        );
        assert!(
            text.contains("shop/api http/TCP  (externalTrafficPolicy Local, internalTrafficPolicy Cluster, affinity ClientIP 60 s)"),
            "{text}"
        );
        assert!(
            text.contains("new connections: ready (1); local: ready (1)"),
            "{text}"
        );
        let line = |needle: &str| text.lines().find(|l| l.contains(needle)).unwrap_or("");
        assert!(line("198.19.0.10:80").ends_with("ClusterIP"), "{text}");
        assert!(line("[2001:db8::1]:30080").ends_with("NodePort"), "{text}");
        assert!(
            line("198.18.1.1:8080").ends_with("ready serving local"),
            "{text}"
        );
        assert!(
            line("198.18.1.2:8080").ends_with("not-ready serving terminating"),
            "{text}"
        );
    }
}
