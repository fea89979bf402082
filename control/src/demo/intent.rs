//! What the demo's cluster is and what its policies intend: the nodes, pods and Services,
//! the datastore objects that describe them, the verdict written down for every probe
//! ([`expected`]), and the matrix that sets what was seen beside it ([`render_matrix`]).
//! The lab that runs it all is [`super::cluster`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The probes' port (every pod serves TCP and UDP echo on it).
pub(super) const PROBE_PORT: u16 = 8080;

/// The demo's nodes: name, underlay address, pod CIDR (its IPPool), worker core (CPU 0
/// when the machine has one).
pub(super) const NODES: [(&str, Ipv4Addr, &str, usize); 2] = [
    (
        "node-a",
        Ipv4Addr::new(198, 18, 250, 1),
        "198.18.10.0/24",
        0,
    ),
    (
        "node-b",
        Ipv4Addr::new(198, 18, 250, 2),
        "198.18.11.0/24",
        1,
    ),
];

/// The demo's pods: namespace, name (also its `app` label), node index.
pub(super) const PODS: [(&str, &str, usize); 6] = [
    ("shop", "web", 0),
    ("shop", "api", 1),
    ("billing", "ledger", 0),
    ("billing", "audit", 1),
    ("ops", "monitor", 0),
    ("ops", "scanner", 1),
];

/// The demo's Services: matrix column, namespace/name, cluster IP. Both listen on port
/// [`SERVICE_PORT`] (TCP and UDP) and forward to the pods' probe port by its name.
/// `shop/api` selects the api pod (node-b); `ops/echo` selects every pod of `ops` labelled
/// `probe: echo` (monitor on node-a, scanner on node-b). `shop/web` is a NodePort
/// ([`NODE_PORT`]) in front of the web pod, probed from node-b's own namespace.
pub(super) const SERVICES: [(&str, &str, Ipv4Addr); 2] = [
    ("api-svc", "shop/api", Ipv4Addr::new(198, 18, 96, 10)),
    ("echo-svc", "ops/echo", Ipv4Addr::new(198, 18, 96, 11)),
];
pub(super) const SERVICE_PORT: u16 = 80;
pub(super) const NODE_PORT: u16 = 30080;

/// The Services of [`SERVICES`] and the NodePort, as datastore objects.
const SERVICES_YAML: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: \
     shop}\nspec:\n  clusterIP: 198.18.96.10\n  selector: {app: api}\n  ports:\n  - {name: \
     tcp, port: 80, targetPort: probe}\n  - {name: udp, port: 80, targetPort: probe-udp, \
     protocol: UDP}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: \
     ops}\nspec:\n  clusterIP: 198.18.96.11\n  selector: {probe: echo}\n  ports:\n  - {name: \
     tcp, port: 80, targetPort: probe}\n  - {name: udp, port: 80, targetPort: probe-udp, \
     protocol: UDP}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: \
     shop}\nspec:\n  type: NodePort\n  clusterIP: 198.18.96.12\n  selector: {app: web}\n  \
     ports:\n  - {name: tcp, port: 80, targetPort: probe, nodePort: 30080}\n  - {name: udp, \
     port: 80, targetPort: probe-udp, nodePort: 30080, protocol: UDP}\n";

/// Whether the matrix probes `from` -> `to`: not a pod to itself, and not the scanner to
/// `echo-svc`, whose endpoints are the scanner itself (always reached) and the monitor
/// (denied by the quarantine): the answer would depend on the endpoint Maglev picks.
pub(super) fn probed(from: &str, to: &str) -> bool {
    from != to && !(from == "scanner" && to == "echo-svc")
}

/// Every ordered pair of distinct pods, as (namespace, name) of source and destination.
pub(super) fn pairs(
) -> impl Iterator<Item = ((&'static str, &'static str), (&'static str, &'static str))> {
    PODS.iter().flat_map(|&(fns, from, _)| {
        PODS.iter()
            .filter(move |&&(_, to, _)| to != from)
            .map(move |&(tns, to, _)| ((fns, from), (tns, to)))
    })
}

/// What the demo's policies intend, written down independently of them: whether `from`
/// reaches `to` (pod names) over TCP or UDP on the probe port, and why.
pub fn expected(from: &str, to: &str, tcp: bool) -> (bool, &'static str) {
    match to {
        // Policy decides on the endpoint a service translates to; an endpoint always
        // reaches itself, through its service too.
        "api-svc" if from == "api" => return (true, "a pod reaches itself through its service"),
        "api-svc" => return expected(from, "api", tcp),
        "echo-svc" => {
            return (
                true,
                "its endpoints (monitor, scanner) admit all but the scanner",
            )
        }
        _ => {}
    }
    if from == "scanner" {
        return (false, "security tier: the quarantine denies the scanner");
    }
    match to {
        "api" if from == "web" => (true, "application tier: api admits web"),
        "api" => (false, "application tier: default Deny"),
        "ledger" if from == "api" && tcp => (true, "default tier: ledger admits api on TCP"),
        "ledger" if from == "api" => (false, "default tier: ledger admits TCP only"),
        "audit" if from == "ledger" => (true, "default tier: audit admits ledger"),
        "ledger" | "audit" => (false, "default tier: billing denies by default"),
        _ => (true, "security tier Passes, and no later policy selects it"),
    }
}

/// The namespaces, tiers, policies, nodes and pools of the demo (pods are added as they
/// are created). `keys` are the nodes' WireGuard public keys, `macs` their underlay MACs.
pub fn cluster_yaml(keys: &[String; 2], macs: &[String; 2]) -> String {
    let mut y = String::new();
    for (ns, team) in [
        ("shop", "retail"),
        ("billing", "finance"),
        ("ops", "platform"),
    ] {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    \
             team: {team}\n---\n"
        );
    }
    for (i, (name, addr, cidr, _)) in NODES.iter().enumerate() {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    \
             kubernetes.io/hostname: {name}\n  annotations:\n    \
             weir.dev/wireguard-public-key: \"{key}\"\n    weir.dev/underlay-mac: \"{mac}\"\n\
             spec:\n  podCIDRs: [\"{cidr}\"]\nstatus:\n  addresses:\n  - {{type: InternalIP, \
             address: \"{addr}\"}}\n---\n\
             apiVersion: weir.dev/v1\nkind: IPPool\nmetadata:\n  name: pods-{name}\nspec:\n  \
             cidr: {cidr}\n  blockSize: 26\n  nodeSelector: kubernetes.io/hostname == '{name}'\n\
             ---\n",
            key = keys[i],
            mac = macs[i],
        );
    }
    y.push_str(POLICIES);
    y.push_str("---\n");
    y.push_str(SERVICES_YAML);
    y
}

/// The example policies of `deploy/examples/`, which CI validates against the CRDs.
const POLICIES: &str = include_str!("../../../deploy/examples/policies.yaml");

/// One pod's object in the datastore; `ip` once the CNI plugin gave it one.
pub fn pod_yaml(ns: &str, name: &str, node: &str, ip: Option<Ipv4Addr>) -> String {
    let status = ip.map_or(String::new(), |ip| {
        format!("status:\n  podIPs:\n  - ip: {ip}\n")
    });
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    \
         app: {name}\n    probe: echo\nspec:\n  nodeName: {node}\n  containers:\n  - name: \
         {name}\n    image: demo\n    ports:\n    - {{name: probe, containerPort: {PROBE_PORT}}}\n    \
         - {{name: probe-udp, containerPort: {PROBE_PORT}, protocol: UDP}}\n{status}"
    )
}

/// The matrix: one row per source pod, one column per destination; each cell shows TCP
/// then UDP (`T`/`U` reached, `-` blocked), with `!` where what was seen differs from what
/// the policies intend; then the differences spelled out.
pub fn render_matrix(seen: &BTreeMap<(&str, &str, &str), bool>) -> String {
    let label = |name: &str| {
        PODS.iter()
            .find(|p| p.1 == name)
            .map_or(name.to_owned(), |(ns, n, node)| {
                format!("{ns}/{n} ({})", &NODES[*node].0[5..])
            })
    };
    let mut out = String::from("        from \\ to          ");
    let columns: Vec<&str> = PODS
        .iter()
        .map(|p| p.1)
        .chain(SERVICES.iter().map(|s| s.0))
        .collect();
    for to in &columns {
        let _ = write!(out, "{to:>9}");
    }
    out.push('\n');
    let mut wrong = Vec::new();
    for (_, from, _) in PODS {
        let _ = write!(out, "        {:<20}", label(from));
        for &to in &columns {
            if !probed(from, to) {
                let _ = write!(out, "{:>9}", "·");
                continue;
            }
            let mut cell = String::new();
            let mut differs = false;
            for (proto, letter) in [("tcp", 'T'), ("udp", 'U')] {
                let got = seen.get(&(from, to, proto)).copied().unwrap_or(false);
                let (want, why) = expected(from, to, proto == "tcp");
                cell.push(if got { letter } else { '-' });
                if got != want {
                    differs = true;
                    wrong.push(format!(
                        "        {from} -> {to} {}: expected {}, seen {} ({why})",
                        proto.to_uppercase(),
                        if want { "reached" } else { "blocked" },
                        if got { "reached" } else { "blocked" },
                    ));
                }
            }
            if differs {
                cell.push('!');
            }
            let _ = write!(out, "{cell:>9}");
        }
        out.push('\n');
    }
    let total = seen.len();
    if wrong.is_empty() {
        let _ = writeln!(
            out,
            "        T/U: TCP/UDP reached, -: blocked; *-svc: through the service's cluster IP. \
             {total} of {total} probes as expected."
        );
    } else {
        let _ = writeln!(
            out,
            "        T/U: TCP/UDP reached, -: blocked, !: differs. {} of {total} probes differ:",
            wrong.len()
        );
        for w in wrong {
            let _ = writeln!(out, "{w}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{eval, load::Cluster, model::IpFamily};

    /// The demo's written-down intent agrees with what the compiled policy decides, for
    /// every pair and both protocols: a policy edit that changes a verdict fails here
    /// before it fails a demo run.
    #[test]
    fn expectations_match_the_compiled_policy() {
        let keys = [
            weir_crypto::NodeKey::from_bytes([1; 32]).public_base64(),
            weir_crypto::NodeKey::from_bytes([2; 32]).public_base64(),
        ];
        let macs = [
            "02:00:00:00:00:01".to_owned(),
            "02:00:00:00:00:02".to_owned(),
        ];
        let mut yaml = cluster_yaml(&keys, &macs);
        for (i, (ns, name, node)) in PODS.iter().enumerate() {
            let ip = Ipv4Addr::new(198, 18, 10 + *node as u8, 10 + i as u8);
            yaml.push_str("---\n");
            yaml.push_str(&pod_yaml(ns, name, NODES[*node].0, Some(ip)));
        }
        let cluster = Cluster::from_sources([("demo.yaml", yaml.as_str())]).unwrap();
        let mut probes = Vec::new();
        let mut want = Vec::new();
        for ((fns, from), (tns, to)) in pairs() {
            for proto in ["TCP", "UDP"] {
                probes.push(serde_json::json!({
                    "from": format!("{fns}/{from}"), "to": format!("{tns}/{to}"),
                    "port": PROBE_PORT, "protocol": proto,
                }));
                want.push((from, to, proto, expected(from, to, proto == "TCP").0));
            }
        }
        let list =
            eval::parse_probes(&serde_json::Value::Array(probes).to_string(), "probes").unwrap();
        let report = eval::evaluate(&cluster, &list, IpFamily::V4, "probes").unwrap();
        let json = serde_json::to_value(&report).unwrap();
        let verdicts = json["verdicts"].as_array().unwrap();
        assert_eq!(verdicts.len(), want.len());
        let mut allowed = 0;
        for ((from, to, proto, want), got) in want.iter().zip(verdicts) {
            let got = got.as_str().unwrap() == "allow";
            assert_eq!(got, *want, "{from} -> {to} {proto}");
            allowed += usize::from(got);
        }
        // The matrix has both kinds of cell.
        assert!(allowed > 5 && allowed < want.len() - 5, "{allowed}");
        // iperf3's pairs are admitted.
        assert!(expected("web", "api", true).0 && expected("web", "monitor", true).0);
    }

    #[test]
    fn matrix_marks_differences_and_counts_them() {
        let mut seen = BTreeMap::new();
        let services = PODS.iter().flat_map(|&(_, from, _)| {
            SERVICES
                .iter()
                .filter(move |s| probed(from, s.0))
                .map(move |s| (from, s.0))
        });
        for (from, to) in pairs().map(|((_, f), (_, t))| (f, t)).chain(services) {
            for proto in ["tcp", "udp"] {
                seen.insert((from, to, proto), expected(from, to, proto == "tcp").0);
            }
        }
        let good = render_matrix(&seen);
        assert!(good.contains("82 of 82 probes as expected"), "{good}");
        assert!(!good.contains('!'));
        seen.insert(("scanner", "web", "udp"), true);
        let bad = render_matrix(&seen);
        assert!(bad.contains("1 of 82 probes differ"), "{bad}");
        assert!(
            bad.contains("scanner -> web UDP: expected blocked, seen reached"),
            "{bad}"
        );
        // One marked cell (TCP blocked, UDP reached), and the legend.
        assert_eq!(bad.matches("-U!").count(), 1, "{bad}");
        assert_eq!(bad.matches('!').count(), 2, "{bad}");
    }
}
