//! Tests of the weir.dev objects, loaded from YAML as the datastore loads them.

use crate::policy::load::{load_documents, Object};

use super::super::tests::{invalid, load_one, weir, weir_policy};
use super::*;

#[test]
fn weir_policy_defaults() {
    let p = weir("");
    assert_eq!(p.spec.tier, "default");
    assert_eq!(p.spec.order, None);
    assert_eq!(p.spec.selector, Selector::All);
    assert_eq!(p.spec.service_account_selector, Selector::All);
    let ingress = PolicyTypes {
        ingress: true,
        egress: false,
    };
    let egress = PolicyTypes {
        ingress: false,
        egress: true,
    };
    let both = PolicyTypes {
        ingress: true,
        egress: true,
    };
    assert_eq!(p.spec.types, ingress, "no rules: Ingress");
    assert_eq!(weir("ingress: [{action: Allow}]").spec.types, ingress);
    assert_eq!(
        weir("egress: [{action: Allow}]").spec.types,
        egress,
        "Calico: egress only"
    );
    assert_eq!(
        weir("ingress: [{action: Allow}]\negress: [{action: Deny}]")
            .spec
            .types,
        both
    );
    assert_eq!(
        weir("types: []\negress: [{action: Allow}]").spec.types,
        egress
    );
    assert_eq!(weir("types: [Egress, Ingress]").spec.types, both);
    let p = weir("tier: security\norder: 10.5\nselector: app == 'web'");
    assert_eq!(p.spec.tier, "security");
    assert_eq!(p.spec.order, Some(10.5));
    assert_eq!(p.spec.selector, Selector::parse("app == 'web'").unwrap());
}

#[test]
fn weir_rule_fields() {
    let p = weir(
        "ingress:\n- action: Allow\n  protocol: TCP\n  ipVersion: 4\n  source:\n    nets: \
         [10.0.0.0/8, 192.168.1.1]\n    notNets: [10.9.0.0/16]\n    selector: role == \
         'fe'\n    notSelector: has(test)\n    namespaceSelector: global()\n    ports: [80, \
         '8000:8080', http, '443']\n    notPorts: [8001]\n    serviceAccounts:\n      \
         names: [api]\n      selector: team == 'a'\n- action: Log\n  protocol: 58\n  icmp: \
         {type: 128, code: 0}\n- action: Pass\n  notProtocol: UDPLite\n- action: Deny\n  \
         protocol: ICMP\n  notICMP: {type: 8}\n  destination: {nets: ['10.0.0.0/8']}",
    );
    let r = &p.spec.ingress[0];
    assert_eq!(r.action, Action::Allow);
    assert_eq!(r.protocol, Some(Protocol::TCP));
    assert_eq!(r.ip_version, Some(IpFamily::V4));
    assert_eq!(
        r.source.nets,
        vec![
            "10.0.0.0/8".parse::<IpNet>().unwrap(),
            "192.168.1.1/32".parse().unwrap()
        ]
    );
    assert_eq!(r.source.namespace_selector, Some(Selector::Global));
    assert_eq!(
        r.source.ports,
        vec![
            PortMatch::single(80),
            PortMatch::Range {
                first: 8000,
                last: 8080
            },
            PortMatch::Named("http".into()),
            PortMatch::single(443)
        ]
    );
    assert_eq!(r.source.not_ports, vec![PortMatch::single(8001)]);
    assert_eq!(
        r.source.service_accounts,
        Some(ServiceAccountMatch {
            names: vec!["api".into()],
            selector: Some(Selector::parse("team == 'a'").unwrap())
        })
    );
    assert_eq!(r.destination, EntityRule::default());
    let log = &p.spec.ingress[1];
    assert_eq!(
        (log.action, log.protocol),
        (Action::Log, Some(Protocol::ICMPV6))
    );
    assert_eq!(
        log.icmp,
        Some(IcmpMatch {
            icmp_type: Some(128),
            code: Some(0)
        })
    );
    assert_eq!(p.spec.ingress[2].not_protocol, Some(Protocol::UDPLITE));
    assert_eq!(
        p.spec.ingress[3].not_icmp,
        Some(IcmpMatch {
            icmp_type: Some(8),
            code: None
        })
    );
    assert_eq!(Protocol::ICMPV6.to_string(), "ICMPv6");
    assert_eq!(Protocol::from_number(99).unwrap().to_string(), "99");
}

#[test]
fn weir_validation_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "ingress: [{action: Allow, source: {nets: [10.0.0.1/24]}}]",
            "spec.ingress[0].source.nets[0]",
            "\"10.0.0.1/24\" has bits set after the /24 prefix: did you mean \"10.0.0.0/24\"?",
        ),
        (
            "ingress: [{action: Allow, source: {nets: [10.0.0/24]}}]",
            "spec.ingress[0].source.nets[0]",
            "\"10.0.0/24\" is not a CIDR: \"10.0.0\" is not an IP address",
        ),
        (
            "ingress: [{action: Allow, source: {nets: ['10.0.0.0/x']}}]",
            "spec.ingress[0].source.nets[0]",
            "\"10.0.0.0/x\" is not a CIDR: prefix length \"x\" is not a number",
        ),
        (
            "egress: [{action: Allow, destination: {notNets: ['2001:db8::/129']}}]",
            "spec.egress[0].destination.notNets[0]",
            "\"2001:db8::/129\" is not a CIDR: prefix length 129 exceeds 128",
        ),
        (
            "ingress: [{action: Allow, source: {selector: app = 'x'}}]",
            "spec.ingress[0].source.selector",
            "invalid selector: at position 4: expected \"==\", \"!=\", \"in\", \"not in\", \
             \"starts with\", \"ends with\" or \"contains\" but found \"=\" (selector: app = \
             'x')",
        ),
        (
            "selector: has(app",
            "spec.selector",
            "invalid selector: at position 7: expected \")\" but found the end of the \
             selector (selector: has(app)",
        ),
        (
            "selector: global()",
            "spec.selector",
            "global() can only be used, alone, in a rule's namespaceSelector",
        ),
        (
            "ingress: [{action: Allow, source: {namespaceSelector: global() || has(a)}}]",
            "spec.ingress[0].source.namespaceSelector",
            "global() cannot be combined with other selectors",
        ),
        (
            "serviceAccountSelector: a in {",
            "spec.serviceAccountSelector",
            "invalid selector: at position 6: expected a quoted string but found the end \
             of the selector (selector: a in {)",
        ),
        (
            "ingress: [{action: Allow, protocol: TCP, destination: {ports: ['90:80']}}]",
            "spec.ingress[0].destination.ports[0]",
            "\"90:80\" is not a port range: the first port must not exceed the last",
        ),
        (
            "ingress: [{action: Allow, protocol: TCP, destination: {ports: [70000]}}]",
            "spec.ingress[0].destination.ports[0]",
            "70000 is not a port: use 0-65535",
        ),
        (
            "ingress: [{action: Allow, protocol: TCP, destination: {ports: ['1:70000']}}]",
            "spec.ingress[0].destination.ports[0]",
            "\"1:70000\" is not a port: 70000 exceeds 65535",
        ),
        (
            "ingress: [{action: Allow, protocol: TCP, destination: {ports: [Web_Port]}}]",
            "spec.ingress[0].destination.ports[0]",
            "port name \"Web_Port\" must contain only lower-case letters, digits and '-'",
        ),
        (
            "ingress: [{action: Allow, destination: {ports: [80]}}]",
            "spec.ingress[0].destination.ports",
            "rules that match ports must set protocol to TCP, UDP, SCTP or UDPLite",
        ),
        (
            "ingress: [{action: Allow, protocol: ICMP, source: {notPorts: [80]}}]",
            "spec.ingress[0].source.notPorts",
            "rules that match ports must set protocol to TCP, UDP, SCTP or UDPLite",
        ),
        (
            "ingress: [{action: Allow, protocol: tcp}]",
            "spec.ingress[0].protocol",
            "\"tcp\" is not a protocol: use TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite (case \
             matters) or a number 1-255",
        ),
        (
            "ingress: [{action: Allow, notProtocol: 256}]",
            "spec.ingress[0].notProtocol",
            "256 is not a protocol number: use 1-255",
        ),
        (
            "ingress: [{action: Allow, protocol: 0}]",
            "spec.ingress[0].protocol",
            "0 is not a protocol number: use 1-255",
        ),
        (
            "ingress: [{action: Allow, protocol: ICMP, icmp: {code: 1}}]",
            "spec.ingress[0].icmp.code",
            "an ICMP code needs an ICMP type: set type as well",
        ),
        (
            "ingress: [{action: Allow, protocol: ICMP, icmp: {type: 255}}]",
            "spec.ingress[0].icmp.type",
            "255 is not 0-254",
        ),
        (
            "ingress: [{action: Allow, protocol: TCP, icmp: {type: 8}}]",
            "spec.ingress[0].icmp",
            "rules that match ICMP fields must set protocol to ICMP or ICMPv6",
        ),
        (
            "ingress: [{action: Allow, notICMP: {type: 8}}]",
            "spec.ingress[0].notICMP",
            "rules that match ICMP fields must set protocol to ICMP or ICMPv6",
        ),
        (
            "ingress: [{action: Allow, protocol: ICMP, ipVersion: 6}]",
            "spec.ingress[0].ipVersion",
            "must be 4 with protocol ICMP (ICMPv6 is the IPv6 protocol)",
        ),
        (
            "ingress: [{action: Allow, protocol: ICMPv6, ipVersion: 4}]",
            "spec.ingress[0].ipVersion",
            "must be 6 with protocol ICMPv6 (ICMP is the IPv4 protocol)",
        ),
        (
            "ingress: [{action: Allow, ipVersion: 5}]",
            "spec.ingress[0].ipVersion",
            "5 is not 4 or 6",
        ),
        (
            "ingress: [{action: Allow, ipVersion: 6, source: {nets: [10.0.0.0/8]}}]",
            "spec.ingress[0].source.nets[0]",
            "10.0.0.0/8 is IPv4 but the rule's ipVersion is IPv6",
        ),
        (
            "ingress: [{action: Allow, source: {nets: [10.0.0.0/8]}, destination: {notNets: \
             ['::/0']}}]",
            "spec.ingress[0].destination.notNets[0]",
            "::/0 is IPv6 but spec.ingress[0].source.nets[0] is IPv4: a rule's nets must all \
             be of one IP version; split it into two rules",
        ),
        (
            "ingress: [{protocol: TCP}]",
            "spec.ingress[0].action",
            "is required: Allow, Deny, Pass or Log",
        ),
        (
            "egress: [{action: Accept}]",
            "spec.egress[0].action",
            "\"Accept\" is not an action: use Allow, Deny, Pass or Log",
        ),
        (
            "types: [Ingress, Ingress]",
            "spec.types[1]",
            "'Ingress' type specified more than once",
        ),
        (
            "types: [ingress]",
            "spec.types[0]",
            "\"ingress\" is not a policy type: use Ingress or Egress (case matters)",
        ),
        (
            "types: [Ingress]\negress: [{action: Allow}]",
            "spec.egress",
            "the policy has egress rules but spec.types does not include Egress, so they \
             would never apply: add Egress to spec.types or remove the rules",
        ),
        ("order: .nan", "spec.order", "NaN is not a finite number"),
        (
            "tier: Security",
            "spec.tier",
            "\"Security\" must be a DNS label: at most 63 lower-case alphanumeric \
             characters or '-', starting and ending with an alphanumeric character",
        ),
        (
            "namespaceSelector: all()",
            "spec.namespaceSelector",
            "a NetworkPolicy applies to its own namespace only; use a GlobalNetworkPolicy \
             to select namespaces",
        ),
        (
            "ingress: [{action: Allow, source: {serviceAccounts: {names: [Bad]}}}]",
            "spec.ingress[0].source.serviceAccounts.names[0]",
            "\"Bad\" must be a DNS subdomain: lower-case alphanumeric characters, '-' and \
             '.', starting and ending with an alphanumeric character",
        ),
    ];
    for (spec, field, message) in cases {
        let e = invalid(&weir_policy(spec));
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            (*field, *message),
            "{spec}"
        );
    }
}

#[test]
fn tiers() {
    let tier = |yaml: &str| match load_one(&format!(
        "apiVersion: weir.dev/v1\nkind: Tier\nmetadata: {{name: security}}\n{yaml}"
    )) {
        Ok(Object {
            resource: crate::policy::load::Resource::Tier(t),
            ..
        }) => Ok(t),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    assert_eq!(
        tier("").unwrap(),
        Tier {
            name: "security".into(),
            order: None,
            default_action: TierDefaultAction::Deny
        }
    );
    assert_eq!(
        tier("spec: {order: 100, defaultAction: Pass}").unwrap(),
        Tier {
            name: "security".into(),
            order: Some(100.0),
            default_action: TierDefaultAction::Pass
        }
    );
    let e = tier("spec: {defaultAction: Allow}").unwrap_err();
    assert!(
        e.ends_with(
            "Tier security: spec.defaultAction: \"Allow\" is not a tier default \
                         action: use Deny or Pass"
        ),
        "{e}"
    );
    let e = load_one("apiVersion: weir.dev/v1\nkind: Tier\nmetadata: {name: a.b}\n").unwrap_err();
    assert!(
        e.contains("Tier a.b: metadata.name: \"a.b\" must be a DNS label"),
        "{e}"
    );
    let e = load_one(
        "apiVersion: weir.dev/v1\nkind: Tier\nmetadata: {name: default}\nspec: {order: 5}\n",
    )
    .unwrap_err();
    assert!(
        e.contains("the default tier's order is fixed at 1000000"),
        "{e}"
    );
}

#[test]
fn network_sets_and_global_policies() {
    let objects = load_documents(
        "apiVersion: weir.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.block}\n\
         spec:\n  namespaceSelector: team == 'a'\n  egress: [{action: Deny}]\n---\n\
         apiVersion: weir.dev/v1\nkind: GlobalNetworkSet\nmetadata: {name: ext, labels: \
         {kind: ext}}\nspec: {nets: ['192.0.2.0/24', '2001:db8::/32']}\n---\n\
         apiVersion: weir.dev/v1\nkind: NetworkSet\nmetadata: {name: office, namespace: \
         shop}\nspec: {nets: [198.51.100.7]}\n",
        "sets.yaml",
    )
    .unwrap();
    let crate::policy::load::Resource::GlobalNetworkPolicy(g) = &objects[0].resource else {
        panic!("{:?}", objects[0]);
    };
    assert_eq!(g.namespace_selector.to_string(), "team == \"a\"");
    assert!(g.spec.types.egress && !g.spec.types.ingress);
    let crate::policy::load::Resource::GlobalNetworkSet(s) = &objects[1].resource else {
        panic!("{:?}", objects[1]);
    };
    assert_eq!(s.nets.len(), 2);
    assert_eq!(s.labels.get("kind").map(String::as_str), Some("ext"));
    let crate::policy::load::Resource::NetworkSet(n) = &objects[2].resource else {
        panic!("{:?}", objects[2]);
    };
    assert_eq!(n.nets, vec!["198.51.100.7/32".parse::<IpNet>().unwrap()]);
    let e = load_documents(
        "apiVersion: weir.dev/v1\nkind: NetworkSet\nmetadata: {name: s}\nspec: {nets: \
         [192.0.2.1/24]}\n",
        "s.yaml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "s.yaml document 1: NetworkSet default/s: spec.nets[0]: \"192.0.2.1/24\" has bits \
         set after the /24 prefix: did you mean \"192.0.2.0/24\"?"
    );
}

fn ip_pool(spec: &str) -> Result<IpPool, String> {
    match load_one(&format!(
        "apiVersion: weir.dev/v1\nkind: IPPool\nmetadata: {{name: pool}}\n{spec}"
    ))? {
        Object {
            resource: crate::policy::load::Resource::IpPool(p),
            ..
        } => Ok(p),
        other => panic!("{other:?}"),
    }
}

/// Loads an IPPool named `name`.
fn named_ip_pool(name: &str, spec: &str) -> IpPool {
    match load_one(&format!(
        "apiVersion: weir.dev/v1\nkind: IPPool\nmetadata: {{name: {name}}}\n{spec}"
    ))
    .unwrap()
    {
        Object {
            resource: crate::policy::load::Resource::IpPool(p),
            ..
        } => p,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_default_pools_nat_outgoing_unless_told_otherwise_as_in_calico() {
    for name in ["default-ipv4-ippool", "default-ipv6-ippool"] {
        let cidr = if name.contains("v4") {
            "198.18.0.0/16"
        } else {
            "'2001:db8::/48'"
        };
        assert!(
            named_ip_pool(name, &format!("spec: {{cidr: {cidr}}}")).nat_outgoing,
            "{name}"
        );
        assert!(
            !named_ip_pool(name, &format!("spec: {{cidr: {cidr}, natOutgoing: false}}"))
                .nat_outgoing,
            "{name} with natOutgoing: false"
        );
    }
    // Any other pool translates only when it says so.
    assert!(!named_ip_pool("pods-v4", "spec: {cidr: 198.18.0.0/16}").nat_outgoing);
    assert!(
        named_ip_pool("pods-v4", "spec: {cidr: 198.18.0.0/16, natOutgoing: true}").nat_outgoing
    );
}

#[test]
fn ip_pools_default_their_block_size_by_family() {
    let v4 = ip_pool("spec: {cidr: 198.18.0.0/16}").unwrap();
    assert_eq!(
        v4,
        IpPool {
            name: "pool".into(),
            cidr: "198.18.0.0/16".parse().unwrap(),
            block_size: DEFAULT_IPV4_BLOCK_SIZE,
            node_selector: Selector::All,
            disabled: false,
            nat_outgoing: false,
        }
    );
    let nat = ip_pool("spec: {cidr: 198.18.0.0/16, natOutgoing: true}").unwrap();
    assert!(nat.nat_outgoing);
    let v6 = ip_pool("spec: {cidr: '2001:db8::/48', disabled: true}").unwrap();
    assert_eq!(
        (v6.block_size, v6.disabled),
        (DEFAULT_IPV6_BLOCK_SIZE, true)
    );
    let exact =
        ip_pool("spec: {cidr: 198.18.0.0/24, blockSize: 24, nodeSelector: \"zone == 'a'\"}")
            .unwrap();
    assert_eq!(exact.block_size, 24);
    assert_eq!(exact.node_selector.to_string(), "zone == \"a\"");
    assert_eq!(
        ip_pool("spec: {cidr: 198.18.0.0/24, blockSize: 32}")
            .unwrap()
            .block_size,
        32
    );
}

#[test]
fn invalid_ip_pools_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "spec.cidr", "is required"),
        ("spec: {blockSize: 26}", "spec.cidr", "is required"),
        (
            "spec: {cidr: 198.18.0.1/16}",
            "spec.cidr",
            "did you mean \"198.18.0.0/16\"?",
        ),
        (
            "spec: {cidr: 198.18.0.0}",
            "spec.cidr",
            "needs a prefix length",
        ),
        (
            "spec: {cidr: 198.18.0.0/33}",
            "spec.cidr",
            "prefix length 33 exceeds 32",
        ),
        ("spec: {cidr: pods}", "spec.cidr", "is not an IP address"),
        (
            "spec: {cidr: 198.18.0.0/16, blockSize: 12}",
            "spec.blockSize",
            "12 is not a block size for 198.18.0.0/16: use a prefix length from 16",
        ),
        (
            "spec: {cidr: 198.18.0.0/16, blockSize: 33}",
            "spec.blockSize",
            "to 32",
        ),
        (
            "spec: {cidr: '2001:db8::/48', blockSize: 129}",
            "spec.blockSize",
            "to 128",
        ),
        (
            "spec: {cidr: 198.18.0.0/16, blockSize: -1}",
            "spec.blockSize",
            "-1 is not",
        ),
        (
            "spec: {cidr: 198.18.0.0/28}",
            "spec.blockSize",
            "the default block size /26 is larger than the pool 198.18.0.0/28",
        ),
        (
            "spec: {cidr: 198.18.0.0/16, nodeSelector: 'zone =='}",
            "spec.nodeSelector",
            "invalid selector",
        ),
    ];
    for (spec, field, message) in cases {
        let e = ip_pool(spec).unwrap_err();
        assert!(
            e.contains(&format!("IPPool pool: {field}: ")) && e.contains(message),
            "{spec}: {e}"
        );
    }
    let e = ip_pool("spec: {cidr: 198.18.0.0/16, vxlanMode: Always}").unwrap_err();
    assert!(e.contains("spec.vxlanMode: unknown field"), "{e}");
    let e = ip_pool("spec: {cidr: 198.18.0.0/16, disabled: 'no'}").unwrap_err();
    assert!(e.contains("spec.disabled: invalid type"), "{e}");
}

fn host_endpoint(spec: &str) -> Result<HostEndpoint, String> {
    match load_one(&format!(
        "apiVersion: weir.dev/v1\nkind: HostEndpoint\nmetadata: {{name: hep, labels: {{role: \
         edge}}}}\n{spec}"
    ))? {
        Object {
            resource: crate::policy::load::Resource::HostEndpoint(h),
            ..
        } => Ok(h),
        other => panic!("{other:?}"),
    }
}

#[test]
fn host_endpoints() {
    let hep = host_endpoint(
        "spec: {node: n1, interfaceName: eth0, expectedIPs: [198.18.0.1, '2001:db8::1']}",
    )
    .unwrap();
    assert_eq!(
        hep,
        HostEndpoint {
            name: "hep".into(),
            labels: Labels::from([("role".to_owned(), "edge".to_owned())]),
            node: "n1".into(),
            interface_name: Some("eth0".into()),
            expected_ips: vec![
                "198.18.0.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap()
            ],
        }
    );
    assert!(host_endpoint("spec: {node: n1, interfaceName: '*'}").is_ok());
    assert_eq!(
        host_endpoint("spec: {node: n1, expectedIPs: [198.18.0.1]}")
            .unwrap()
            .interface_name,
        None
    );
    let cases: &[(&str, &str, &str)] = &[
        ("", "spec.node", "is required"),
        ("spec: {interfaceName: eth0}", "spec.node", "is required"),
        ("spec: {node: N_1, interfaceName: eth0}", "spec.node", "N_1"),
        (
            "spec: {node: n1}",
            "spec",
            "needs spec.interfaceName, spec.expectedIPs or both",
        ),
        (
            "spec: {node: n1, expectedIPs: []}",
            "spec",
            "needs spec.interfaceName",
        ),
        (
            "spec: {node: n1, interfaceName: 'eth 0'}",
            "spec.interfaceName",
            "is not an interface name",
        ),
        (
            "spec: {node: n1, interfaceName: a-very-long-interface}",
            "spec.interfaceName",
            "is not an interface name",
        ),
        (
            "spec: {node: n1, expectedIPs: [198.18.0.0/24]}",
            "spec.expectedIPs[0]",
            "is not an IP address",
        ),
        (
            "spec: {node: n1, expectedIPs: [198.18.0.1, 198.18.0.1]}",
            "spec.expectedIPs[1]",
            "198.18.0.1 is listed twice",
        ),
    ];
    for (spec, field, message) in cases {
        let e = host_endpoint(spec).unwrap_err();
        assert!(
            e.contains(&format!("HostEndpoint hep: {field}: ")) && e.contains(message),
            "{spec}: {e}"
        );
    }
}

#[test]
fn ordering_puts_unordered_last_and_breaks_ties_by_name() {
    let mut items = vec![
        (None, "b"),
        (Some(10.0), "z"),
        (None, "a"),
        (Some(1.0), "y"),
        (Some(10.0), "m"),
    ];
    items.sort_by(|a, b| compare_order(*a, *b));
    assert_eq!(
        items,
        vec![
            (Some(1.0), "y"),
            (Some(10.0), "m"),
            (Some(10.0), "z"),
            (None, "a"),
            (None, "b")
        ]
    );
}
