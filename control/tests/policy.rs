//! Policy semantics end to end: YAML objects in, the compiled classifier's verdicts out,
//! one test per corner of the Kubernetes NetworkPolicy API and of weir's tiered model.

use weir_control::policy::eval::{evaluate, parse_probes, Report};
use weir_control::policy::load::Cluster;
use weir_control::policy::model::IpFamily;

/// Namespaces `a` (team=blue) and `b` (team=red); pods with v4 and v6 addresses.
const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: blue}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: red}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web, role: front}}
spec:
  serviceAccountName: web-sa
  containers:
  - name: c
    image: i
    ports:
    - {name: http, containerPort: 8080}
    - {name: dns, containerPort: 5353, protocol: UDP}
status: {podIPs: [{ip: 198.18.0.10}, {ip: "2001:db8::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
spec:
  containers:
  - name: c
    image: i
    ports:
    - {name: http, containerPort: 9090}
    - {name: dns, containerPort: 53, protocol: TCP}
status: {podIPs: [{ip: 198.18.0.11}, {ip: "2001:db8::11"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
status: {podIPs: [{ip: 198.18.1.10}, {ip: "2001:db8::1:10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: b, labels: {app: web}}
status: {podIPs: [{ip: 198.18.1.11}, {ip: "2001:db8::1:11"}]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web-sa, namespace: a, labels: {trusted: "yes"}}
"#;

fn run(yaml: &str, probes: &str, family: IpFamily) -> Report {
    let text = format!("{PODS}\n---\n{yaml}");
    let cluster =
        Cluster::from_sources([("test.yaml", text.as_str())]).unwrap_or_else(|e| panic!("{e:?}"));
    let probes = parse_probes(probes, "probes.json").unwrap();
    evaluate(&cluster, &probes, family, "probes.json").unwrap()
}

/// `(from, to, port, protocol)` probes, IPv4.
fn verdicts(yaml: &str, probes: &[(&str, &str, u16, &str)]) -> Vec<&'static str> {
    verdicts_in(yaml, probes, IpFamily::V4)
}

fn verdicts_in(
    yaml: &str,
    probes: &[(&str, &str, u16, &str)],
    family: IpFamily,
) -> Vec<&'static str> {
    run(yaml, &probes_json(probes), family).verdicts
}

fn probes_json(probes: &[(&str, &str, u16, &str)]) -> String {
    let items: Vec<String> = probes
        .iter()
        .map(|(f, t, port, proto)| {
            format!(r#"{{"from": "{f}", "to": "{t}", "port": {port}, "protocol": "{proto}"}}"#)
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn knp(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, \
         namespace: {ns}}}\nspec:\n{spec}\n---\n"
    )
}

#[test]
fn no_policy_means_open() {
    assert_eq!(
        verdicts(
            "",
            &[
                ("b/client", "a/db", 5432, "TCP"),
                ("a/db", "b/client", 1, "UDP")
            ]
        ),
        ["allow", "allow"]
    );
}

#[test]
fn empty_pod_selector_selects_all_and_policy_types_default_to_ingress() {
    // No policyTypes and no egress section: Ingress only. Every pod of `a` is isolated for
    // ingress, none for egress.
    let yaml = knp("deny-all", "a", "  podSelector: {}");
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("b/client", "a/db", 80, "TCP"),
                ("b/client", "a/web", 80, "TCP"),
                ("a/db", "b/client", 80, "TCP"),
                ("b/client", "b/web", 80, "TCP"),
            ]
        ),
        ["deny", "deny", "allow", "allow"]
    );
}

#[test]
fn an_egress_section_adds_egress_to_the_default_types() {
    let yaml = knp(
        "e",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  egress:\n  - to: [{podSelector: {matchLabels: {app: web}}}]",
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("a/db", "a/web", 80, "TCP"),
                ("a/db", "b/client", 80, "TCP"),
                ("b/client", "a/db", 80, "TCP"),
            ]
        ),
        ["allow", "deny", "deny"],
        "egress restricted; ingress default-denied too (Ingress is always in the default types)"
    );
    // `egress: []` does not add Egress (the defaulting tests len(spec.Egress) != 0).
    let yaml = knp(
        "e",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  egress: []",
    );
    assert_eq!(
        verdicts(&yaml, &[("a/db", "b/client", 80, "TCP")]),
        ["allow"]
    );
    // Explicit Egress only: ingress stays open.
    let yaml = knp(
        "e",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]",
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("a/db", "b/client", 80, "TCP"),
                ("b/client", "a/db", 80, "TCP")
            ]
        ),
        ["deny", "allow"]
    );
}

#[test]
fn missing_from_or_ports_match_everything() {
    let yaml = knp(
        "all-in",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - {}",
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[("b/client", "a/db", 1, "UDP"), ("a/web", "a/db", 9, "SCTP")]
        ),
        ["allow", "allow"]
    );
}

#[test]
fn peers_in_one_entry_are_anded_separate_entries_are_ored() {
    // AND: pods labelled app=client in namespaces labelled team=red.
    let and = knp(
        "and",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: red}}\n      podSelector: {matchLabels: {app: client}}",
    );
    // OR: any pod in a team=red namespace, or any app=client pod in the policy's namespace.
    let or = knp(
        "or",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: red}}\n    - podSelector: {matchLabels: {app: web}}",
    );
    let probes = [
        ("b/client", "a/db", 80, "TCP"),
        ("b/web", "a/db", 80, "TCP"),
        ("a/web", "a/db", 80, "TCP"),
    ];
    assert_eq!(verdicts(&and, &probes), ["allow", "deny", "deny"]);
    assert_eq!(verdicts(&or, &probes), ["allow", "allow", "allow"]);
}

#[test]
fn pod_selector_alone_means_the_policy_namespace() {
    let yaml = knp(
        "same-ns",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]",
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[("a/web", "a/db", 80, "TCP"), ("b/web", "a/db", 80, "TCP")]
        ),
        ["allow", "deny"]
    );
}

#[test]
fn match_expressions_in_notin_exists_doesnotexist() {
    let sel = |expr: &str| {
        knp(
            "x",
            "a",
            &format!("  podSelector: {{matchLabels: {{app: db}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{}}\n      podSelector: {{matchExpressions: [{expr}]}}"),
        )
    };
    let probes = [
        ("a/web", "a/db", 80, "TCP"),    // app=web, role=front
        ("b/client", "a/db", 80, "TCP"), // app=client
    ];
    assert_eq!(
        verdicts(&sel("{key: app, operator: In, values: [web, x]}"), &probes),
        ["allow", "deny"]
    );
    assert_eq!(
        verdicts(&sel("{key: app, operator: NotIn, values: [web]}"), &probes),
        ["deny", "allow"]
    );
    assert_eq!(
        verdicts(
            &sel("{key: role, operator: NotIn, values: [back]}"),
            &probes
        ),
        ["allow", "allow"],
        "NotIn matches pods without the key"
    );
    assert_eq!(
        verdicts(&sel("{key: role, operator: Exists}"), &probes),
        ["allow", "deny"]
    );
    assert_eq!(
        verdicts(&sel("{key: role, operator: DoesNotExist}"), &probes),
        ["deny", "allow"]
    );
}

#[test]
fn ip_block_with_except() {
    let yaml = knp(
        "blocks",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 198.18.0.0/16, except: [198.18.1.0/24]}\n    - ipBlock: {cidr: 198.18.1.11/32}",
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("a/web", "a/db", 80, "TCP"),        // 198.18.0.10: in the block
                ("b/client", "a/db", 80, "TCP"),     // 198.18.1.10: excepted
                ("b/web", "a/db", 80, "TCP"), // 198.18.1.11: excepted, but the second peer allows it
                ("198.19.0.1", "a/db", 80, "TCP"), // outside
                ("198.18.200.1", "a/db", 80, "TCP")  // outside the cluster, inside the block
            ]
        ),
        ["allow", "deny", "allow", "deny", "allow"]
    );
}

#[test]
fn ports_protocols_and_end_port() {
    let yaml = knp(
        "ports",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - ports:\n    - port: 5432\n    - {protocol: UDP, port: 53}\n    - {protocol: SCTP, port: 7000, endPort: 7010}\n    - {protocol: TCP, port: 30000, endPort: 30005}",
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("b/client", "a/db", 5432, "TCP"),
                ("b/client", "a/db", 5432, "UDP"), // protocol defaults to TCP only
                ("b/client", "a/db", 53, "UDP"),
                ("b/client", "a/db", 53, "TCP"),
                ("b/client", "a/db", 7000, "SCTP"),
                ("b/client", "a/db", 7010, "SCTP"),
                ("b/client", "a/db", 7011, "SCTP"),
                ("b/client", "a/db", 30005, "TCP"),
                ("b/client", "a/db", 29999, "TCP"),
            ]
        ),
        ["allow", "deny", "allow", "deny", "allow", "allow", "deny", "allow", "deny"]
    );
}

#[test]
fn named_ports_resolve_per_destination_pod_with_their_protocol() {
    // Ingress to every pod of `a` on port "http": web's http is 8080, db's is 9090.
    let ingress = knp(
        "named",
        "a",
        "  podSelector: {}\n  ingress:\n  - ports: [{port: http}, {port: dns, protocol: UDP}]",
    );
    assert_eq!(
        verdicts(
            &ingress,
            &[
                ("b/client", "a/web", 8080, "TCP"),
                ("b/client", "a/web", 9090, "TCP"),
                ("b/client", "a/db", 9090, "TCP"),
                ("b/client", "a/db", 8080, "TCP"),
                ("b/client", "a/web", 5353, "UDP"), // web declares dns as UDP 5353
                ("b/client", "a/db", 53, "UDP"),    // db declares dns as TCP: no UDP match
                ("b/client", "a/db", 53, "TCP"),
            ]
        ),
        ["allow", "deny", "allow", "deny", "allow", "deny", "deny"]
    );
    // Egress: the destination pod's declaration counts, not the source's.
    let egress = knp(
        "named-egress",
        "b",
        "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}}]\n    ports: [{port: http}]",
    );
    assert_eq!(
        verdicts(
            &egress,
            &[
                ("b/client", "a/web", 8080, "TCP"),
                ("b/client", "a/db", 9090, "TCP"),
                ("b/client", "a/db", 8080, "TCP"),
                ("b/client", "b/web", 8080, "TCP"), // b/web declares no ports
            ]
        ),
        ["allow", "allow", "deny", "deny"]
    );
}

#[test]
fn union_of_policies_and_both_directions_must_allow() {
    let yaml = format!(
        "{}{}{}",
        knp(
            "one",
            "a",
            "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]"
        ),
        knp(
            "two",
            "a",
            "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: red}}}]"
        ),
        knp(
            "client-egress",
            "b",
            "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: 443}]"
        ),
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("a/web", "a/db", 80, "TCP"),     // policy one
                ("b/web", "a/db", 80, "TCP"),     // policy two
                ("b/client", "a/db", 80, "TCP"),  // ingress allows, client's egress denies
                ("b/client", "a/db", 443, "TCP"), // both allow
            ]
        ),
        ["allow", "allow", "deny", "allow"]
    );
}

#[test]
fn a_pod_always_reaches_itself() {
    let yaml = knp(
        "deny-both",
        "a",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
    );
    let r = run(
        &yaml,
        &probes_json(&[("a/db", "a/db", 80, "TCP"), ("a/db", "a/web", 80, "TCP")]),
        IpFamily::V4,
    );
    assert_eq!(r.verdicts, ["allow", "deny"]);
    assert!(r.explanations[0].contains("itself"), "{:?}", r.explanations);
}

#[test]
fn ipv6_uses_the_pods_ipv6_addresses() {
    let yaml = knp(
        "v6",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: \"2001:db8::1:0/112\", except: [\"2001:db8::1:11/128\"]}\n    - ipBlock: {cidr: 198.18.0.0/15}",
    );
    let probes = [
        ("b/client", "a/db", 80, "TCP"),
        ("b/web", "a/db", 80, "TCP"),
    ];
    assert_eq!(verdicts_in(&yaml, &probes, IpFamily::V6), ["allow", "deny"]);
    assert_eq!(
        verdicts_in(&yaml, &probes, IpFamily::V4),
        ["allow", "allow"]
    );
    // Selected pods are matched in both families.
    let yaml = knp(
        "v6-pods",
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: red}}, podSelector: {matchLabels: {app: client}}}]",
    );
    assert_eq!(verdicts_in(&yaml, &probes, IpFamily::V6), ["allow", "deny"]);
}

fn tier(name: &str, order: &str, default_action: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1\nkind: Tier\nmetadata: {{name: {name}}}\nspec: {{order: {order}, \
         defaultAction: {default_action}}}\n---\n"
    )
}

fn gnp(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}\n---\n"
    )
}

fn wnp(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n---\n"
    )
}

#[test]
fn tiers_run_in_order_and_pass_moves_to_the_next() {
    let yaml = format!(
        "{}{}{}",
        tier("security", "10", "Deny"),
        gnp(
            "security.guard",
            "  tier: security\n  selector: app == 'db'\n  ingress:\n  - {action: Deny, source: {selector: app == 'client', namespaceSelector: all()}}\n  - {action: Pass, source: {namespaceSelector: team == 'red'}}\n  - {action: Allow, protocol: TCP, destination: {ports: [22]}}"
        ),
        knp(
            "db",
            "a",
            "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {}}]\n    ports: [{port: 80}]"
        ),
    );
    let r = run(
        &yaml,
        &probes_json(&[
            ("b/client", "a/db", 80, "TCP"), // denied in security
            ("b/web", "a/db", 80, "TCP"),    // passed to default, K8s policy allows 80
            ("b/web", "a/db", 81, "TCP"),    // passed, default tier denies
            ("a/web", "a/db", 22, "TCP"),    // allowed in security, never reaches default
            ("a/web", "a/db", 80, "TCP"),    // no rule in security matched: its default Deny
        ]),
        IpFamily::V4,
    );
    assert_eq!(r.verdicts, ["deny", "allow", "deny", "allow", "deny"]);
    assert!(
        r.explanations[0]
            .contains("tier security, policy GlobalNetworkPolicy security.guard, ingress rule 0"),
        "{}",
        r.explanations[0]
    );
    assert!(
        r.explanations[1].contains("tier default, policy networking.k8s.io NetworkPolicy a/db"),
        "{}",
        r.explanations[1]
    );
    assert!(
        r.explanations[4].contains("tier security") && r.explanations[4].contains("default action"),
        "{}",
        r.explanations[4]
    );
}

#[test]
fn a_tier_with_default_pass_and_no_match_falls_through() {
    let yaml = format!(
        "{}{}",
        tier("audit", "5", "Pass"),
        gnp(
            "audit.log",
            "  tier: audit\n  selector: all()\n  ingress:\n  - {action: Log}\n  - {action: Deny, protocol: UDP}"
        ),
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("b/client", "a/db", 80, "TCP"),
                ("b/client", "a/db", 53, "UDP")
            ]
        ),
        ["allow", "deny"],
        "Log continues; TCP falls through the Pass tier to an empty default tier (open)"
    );
}

#[test]
fn order_ties_are_broken_by_name() {
    // Same order: "a-allow" sorts before "b-deny", so it decides.
    let yaml = format!(
        "{}{}",
        gnp(
            "b-deny",
            "  order: 10\n  selector: app == 'db'\n  ingress: [{action: Deny}]"
        ),
        gnp(
            "a-allow",
            "  order: 10\n  selector: app == 'db'\n  ingress: [{action: Allow}]"
        ),
    );
    assert_eq!(
        verdicts(&yaml, &[("b/client", "a/db", 80, "TCP")]),
        ["allow"]
    );
    // A lower order wins over the name.
    let yaml = format!(
        "{}{}",
        gnp(
            "b-deny",
            "  order: 9\n  selector: app == 'db'\n  ingress: [{action: Deny}]"
        ),
        gnp(
            "a-allow",
            "  order: 10\n  selector: app == 'db'\n  ingress: [{action: Allow}]"
        ),
    );
    assert_eq!(
        verdicts(&yaml, &[("b/client", "a/db", 80, "TCP")]),
        ["deny"]
    );
    // No order sorts after every order.
    let yaml = format!(
        "{}{}",
        gnp(
            "a-deny",
            "  selector: app == 'db'\n  ingress: [{action: Deny}]"
        ),
        gnp(
            "z-allow",
            "  order: 1000000\n  selector: app == 'db'\n  ingress: [{action: Allow}]"
        ),
    );
    assert_eq!(
        verdicts(&yaml, &[("b/client", "a/db", 80, "TCP")]),
        ["allow"]
    );
}

#[test]
fn weir_rule_matches_and_their_negations() {
    let yaml = wnp(
        "rules",
        "a",
        "  selector: app == 'db'\n  ingress:\n  - {action: Deny, notProtocol: TCP}\n  - {action: Deny, source: {notNets: [198.18.0.0/16]}}\n  - {action: Deny, protocol: TCP, destination: {notPorts: ['1:1000']}}\n  - {action: Allow, protocol: TCP, source: {selector: app == 'web', notSelector: role == 'back'}}\n  - {action: Allow, protocol: TCP, source: {nets: [198.18.1.0/24], namespaceSelector: team == 'red'}, destination: {ports: [80, '100:200']}}",
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("a/web", "a/db", 80, "UDP"),      // notProtocol TCP: denied
                ("198.19.0.9", "a/db", 80, "TCP"), // not in 198.18/16: denied
                ("a/web", "a/db", 2000, "TCP"),    // port outside 1-1000: denied
                ("a/web", "a/db", 999, "TCP"),     // selector in the policy's namespace
                ("b/web", "a/db", 999, "TCP"),     // nets and namespace, but port 999 not listed
                ("b/web", "a/db", 150, "TCP"),     // all three
                ("b/client", "a/db", 80, "TCP"),
            ]
        ),
        ["deny", "deny", "deny", "allow", "deny", "allow", "allow"]
    );
}

#[test]
fn icmp_type_code_and_not_icmp() {
    let yaml = wnp(
        "icmp",
        "a",
        "  selector: app == 'db'\n  ingress:\n  - {action: Deny, protocol: ICMP, icmp: {type: 8, code: 1}}\n  - {action: Allow, protocol: ICMP, notICMP: {type: 13}}",
    );
    let probes = r#"[
        {"from": "b/client", "to": "a/db", "protocol": "ICMP", "port": 8, "code": 0},
        {"from": "b/client", "to": "a/db", "protocol": "ICMP", "port": 8, "code": 1},
        {"from": "b/client", "to": "a/db", "protocol": "ICMP", "port": 13}
    ]"#;
    assert_eq!(
        run(&yaml, probes, IpFamily::V4).verdicts,
        ["allow", "deny", "deny"]
    );
}

#[test]
fn service_accounts_and_policy_service_account_selector() {
    let yaml = format!(
        "{}{}",
        wnp(
            "by-sa",
            "a",
            "  selector: app == 'db'\n  ingress:\n  - {action: Allow, source: {serviceAccounts: {names: [web-sa]}}}"
        ),
        gnp(
            "trusted-egress",
            "  selector: all()\n  serviceAccountSelector: trusted == 'yes'\n  types: [Egress]\n  egress:\n  - {action: Deny, destination: {nets: [198.18.1.0/24]}}\n  - {action: Allow}"
        ),
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("a/web", "a/db", 80, "TCP"),     // web runs as web-sa
                ("b/client", "a/db", 80, "TCP"),  // default service account
                ("a/web", "b/client", 80, "TCP"), // web's account is trusted: egress rule applies
                ("a/db", "b/client", 80, "TCP"),  // db's is not: no egress policy
            ]
        ),
        ["allow", "deny", "deny", "allow"]
    );
}

#[test]
fn network_sets_and_global_network_sets() {
    let yaml = format!(
        "{}{}{}{}{}",
        tier("security", "10", "Pass"),
        "apiVersion: weir.dev/v1\nkind: NetworkSet\nmetadata: {name: partners, namespace: a, labels: {kind: partner}}\nspec: {nets: [198.19.10.0/24]}\n---\n",
        "apiVersion: weir.dev/v1\nkind: GlobalNetworkSet\nmetadata: {name: bad, labels: {kind: bad}}\nspec: {nets: [198.19.66.0/24]}\n---\n",
        wnp(
            "partners",
            "a",
            "  selector: app == 'db'\n  ingress:\n  - {action: Allow, source: {selector: kind == 'partner'}}"
        ),
        gnp(
            "security.block-bad",
            "  tier: security\n  selector: all()\n  ingress:\n  - {action: Deny, source: {selector: kind == 'bad'}}"
        ),
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[
                ("198.19.10.5", "a/db", 80, "TCP"),
                ("198.19.11.5", "a/db", 80, "TCP"),
                ("198.19.66.5", "b/web", 80, "TCP"),
                ("198.19.67.5", "b/web", 80, "TCP"),
            ]
        ),
        ["allow", "deny", "deny", "allow"]
    );
}

#[test]
fn global_policy_namespace_selector_limits_what_it_selects() {
    let yaml = gnp(
        "red-only",
        "  namespaceSelector: team == 'red'\n  selector: all()\n  ingress: [{action: Deny}]",
    );
    assert_eq!(
        verdicts(
            &yaml,
            &[("a/web", "b/web", 80, "TCP"), ("b/web", "a/web", 80, "TCP")]
        ),
        ["deny", "allow"]
    );
}

#[test]
fn bad_probes_are_errors_naming_the_probe_and_field() {
    let cluster = Cluster::from_sources([("t.yaml", PODS)]).unwrap();
    let err = |json: &str| {
        let probes = parse_probes(json, "p.json").unwrap();
        evaluate(&cluster, &probes, IpFamily::V4, "p.json")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(r#"[{"from": "a/web", "to": "a/db"}, {"from": "a/nope", "to": "a/db"}]"#),
        "p.json: probes[1].from: there is no pod a/nope"
    );
    assert_eq!(
        err(r#"[{"from": "a/web", "to": "a/db", "protocol": "tcp"}]"#),
        "p.json: probes[0].protocol: \"tcp\" is not a protocol: use TCP, UDP, SCTP, ICMP, \
         ICMPv6 or a number"
    );
    assert_eq!(
        err(r#"[{"from": "a/web", "to": "a/db", "port": 70000}]"#),
        "p.json: probes[0].port: 70000 is out of range (0 to 65535)"
    );
    assert_eq!(
        err(r#"[{"from": "a/web", "to": "2001:db8::99"}]"#),
        "p.json: probes[0].to: 198.18.0.10 and 2001:db8::99 are of different IP families"
    );
    let e = parse_probes(r#"[{"from": "a/web", "too": "a/db"}]"#, "p.json").unwrap_err();
    assert!(e.starts_with("p.json: [0].too: unknown field `too`"), "{e}");
}
