//! kube-proxy's rules for a [`ServiceSet`], in the two shapes it writes them, for the kernel
//! anchors of `weir-bench services`.
//!
//! - **nftables mode** ([`nft_ruleset`]): what `pkg/proxy/nftables/proxier.go` syncs into
//!   table `ip kube-proxy` through knftables (`nft -f -` fed `add` commands): its base sets,
//!   maps and chains (filter hooks at -110 and 0 with `ct state new` checks, nat hooks at
//!   -100 and 100, masquerading by mark), then per service port a chain
//!   `service-<HASH>-<ns>/<name>/<proto>/<port name>` that marks traffic from outside the
//!   cluster CIDR for masquerade and picks an endpoint with
//!   `numgen random mod N vmap { 0 : goto endpoint-…, … }`, an `endpoint-…` chain per
//!   endpoint doing `dnat to <ip>:<port>`, and the frontend as an element of the
//!   `service-ips` verdict map keyed `ip daddr . meta l4proto . th dport`.
//! - **iptables mode** ([`iptables_restore`]): what `pkg/proxy/iptables/proxier.go` feeds
//!   `iptables-restore`: the filter table's KUBE-FORWARD / KUBE-SERVICES hooks, and in the
//!   nat table KUBE-SERVICES with one rule per frontend jumping to `KUBE-SVC-<HASH>`, which
//!   walks its endpoints with `-m statistic --mode random --probability 1/(N-i)` into
//!   `KUBE-SEP-<HASH>` chains doing `-j DNAT --to-destination <ip>:<port>`, the last
//!   frontend rule sending local addresses to KUBE-NODEPORTS.
//!
//! Chain names carry kube-proxy's hashes: the first 8 (nftables) or 16 (iptables)
//! characters of the base32 of the SHA-256 of the service port's name (with the endpoint
//! for endpoint chains), so that names and lengths are those of a real node.
//!
//! In both modes the nat chains run once per connection (the kernel binds NAT when the
//! conntrack entry is created); later packets cost a conntrack lookup, the translation,
//! and the filter rules (which for one-way UDP, still `ct state new`, include the
//! `ct state new` checks on every packet).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::model::{BenchService, ServiceSet, CLUSTER_CIDR, NAMESPACE, PORT_NAME, SERVICE_CIDR};

/// The nftables table kube-proxy owns (IPv4).
pub const NFT_TABLE: &str = "kube-proxy";

/// The mark kube-proxy sets on traffic to masquerade (`--masquerade-bit` 14).
const MASQ_MARK: &str = "0x4000";

/// `ns/name:port` as kube-proxy's comments spell a service port.
fn port_name(s: &BenchService) -> String {
    format!("{NAMESPACE}/{}:{PORT_NAME}", s.name)
}

/// The nftables base name of a service port, `ns/name/proto/port`, as in
/// `servicePortChainNameBase`.
fn nft_base(s: &BenchService) -> String {
    format!("{NAMESPACE}/{}/{}/{PORT_NAME}", s.name, s.proto_name())
}

/// `<first 8 of base32(sha256(name))>-<name>`, as kube-proxy's nftables `hashAndTruncate`.
fn nft_hashed(name: &str) -> String {
    format!("{}-{name}", &base32_sha256(name)[..8])
}

/// The service chain of `s` (nftables).
pub fn nft_service_chain(s: &BenchService) -> String {
    format!("service-{}", nft_hashed(&nft_base(s)))
}

/// The chain of endpoint `ep` of `s` (nftables).
pub fn nft_endpoint_chain(s: &BenchService, ep: (Ipv4Addr, u16)) -> String {
    format!(
        "endpoint-{}",
        nft_hashed(&format!("{}__{}/{}", nft_base(s), ep.0, ep.1))
    )
}

/// The whole `ip kube-proxy` table for `set`, as `nft -f` input; `node_ip` is the node's
/// address (the one element of `nodeport-ips`).
pub fn nft_ruleset(set: &ServiceSet, node_ip: Ipv4Addr) -> String {
    let t = format!("ip {NFT_TABLE}");
    let mut o = String::with_capacity(set.endpoint_count() * 400 + 8192);
    let key = "ipv4_addr . inet_proto . inet_service : verdict";
    let _ = writeln!(o, "add table {t} {{ comment \"rules for kube-proxy\" ; }}");
    let _ = writeln!(o, "flush table {t}");
    let _ = writeln!(
        o,
        "add set {t} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    let _ = writeln!(
        o,
        "add set {t} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
    );
    for (map, ty, comment) in [
        (
            "firewall-ips",
            key,
            "destinations that are subject to LoadBalancerSourceRanges",
        ),
        (
            "no-endpoint-nodeports",
            "inet_proto . inet_service : verdict",
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        (
            "no-endpoint-services",
            key,
            "vmap to drop or reject packets to services with no endpoints",
        ),
        (
            "service-ips",
            key,
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
        (
            "service-nodeports",
            "inet_proto . inet_service : verdict",
            "NodePort traffic",
        ),
    ] {
        let _ = writeln!(
            o,
            "add map {t} {map} {{ type {ty} ; comment \"{comment}\" ; }}"
        );
    }
    for chain in [
        "cluster-ips-check",
        "filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }",
        "filter-output-pre-dnat { type filter hook output priority -110 ; }",
        "filter-forward { type filter hook forward priority 0 ; }",
        "filter-input { type filter hook input priority 0 ; }",
        "filter-output { type filter hook output priority 0 ; }",
        "firewall-check",
        "mark-for-masquerade",
        "masquerading",
        "nat-output { type nat hook output priority -100 ; }",
        "nat-postrouting { type nat hook postrouting priority 100 ; }",
        "nat-prerouting { type nat hook prerouting priority -100 ; }",
        "nodeport-endpoints-check",
        "reject-chain { comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }",
        "services",
        "service-endpoints-check",
    ] {
        let _ = writeln!(o, "add chain {t} {chain}");
    }
    for rule in [
        "cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"".to_string(),
        format!("cluster-ips-check ip daddr {{ {SERVICE_CIDR} }} drop comment \"Drop traffic to unallocated ClusterIPs\""),
        "filter-prerouting-pre-dnat ct state new jump firewall-check".into(),
        "filter-forward ct state new jump service-endpoints-check".into(),
        "filter-forward ct state new jump cluster-ips-check".into(),
        "filter-input ct state new jump nodeport-endpoints-check".into(),
        "filter-input ct state new jump service-endpoints-check".into(),
        "filter-output ct state new jump service-endpoints-check".into(),
        "filter-output-pre-dnat ct state new jump firewall-check".into(),
        "filter-output ct state new jump cluster-ips-check".into(),
        "firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips".into(),
        format!("mark-for-masquerade mark set mark or {MASQ_MARK}"),
        format!("masquerading mark and {MASQ_MARK} == 0 return"),
        format!("masquerading mark set mark xor {MASQ_MARK}"),
        "masquerading masquerade fully-random".into(),
        "nat-output jump services".into(),
        "nat-postrouting jump masquerading".into(),
        "nat-prerouting jump services".into(),
        "nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports".into(),
        "reject-chain reject".into(),
        "services ip daddr . meta l4proto . th dport vmap @service-ips".into(),
        "services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports".into(),
        "service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
    ] {
        let _ = writeln!(o, "add rule {t} {rule}");
    }
    let _ = writeln!(o, "add element {t} nodeport-ips {{ {node_ip} }}");
    for s in &set.services {
        let svc = nft_service_chain(s);
        let proto = s.proto_name();
        // Chains before the rules that jump to them (one transaction, in order).
        let _ = writeln!(o, "add chain {t} {svc}");
        for &ep in &s.endpoints {
            let _ = writeln!(o, "add chain {t} {}", nft_endpoint_chain(s, ep));
        }
        let _ = writeln!(
            o,
            "add rule {t} {svc} ip daddr {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
            s.cluster_ip
        );
        let arms: Vec<String> = s
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, &ep)| format!("{i} : goto {}", nft_endpoint_chain(s, ep)))
            .collect();
        let _ = writeln!(
            o,
            "add rule {t} {svc} numgen random mod {} vmap {{ {} }}",
            s.endpoints.len(),
            arms.join(" , ")
        );
        for &ep in &s.endpoints {
            let chain = nft_endpoint_chain(s, ep);
            let _ = writeln!(
                o,
                "add rule {t} {chain} ip saddr {} jump mark-for-masquerade",
                ep.0
            );
            let _ = writeln!(
                o,
                "add rule {t} {chain} meta l4proto {proto} dnat to {}:{}",
                ep.0, ep.1
            );
        }
        let _ = writeln!(o, "add element {t} cluster-ips {{ {} }}", s.cluster_ip);
        let _ = writeln!(
            o,
            "add element {t} service-ips {{ {} . {proto} . {} : goto {svc} }}",
            s.cluster_ip, s.port
        );
    }
    o
}

/// `KUBE-SVC-<first 16 of base32(sha256(port name + protocol))>`, as kube-proxy's
/// `servicePortChainName`.
pub fn ipt_service_chain(s: &BenchService) -> String {
    format!(
        "KUBE-SVC-{}",
        &base32_sha256(&format!("{}{}", port_name(s), s.proto_name()))[..16]
    )
}

/// `KUBE-SEP-<first 16 of base32(sha256(port name + protocol + endpoint))>`, as
/// kube-proxy's `servicePortEndpointChainName`.
pub fn ipt_endpoint_chain(s: &BenchService, ep: (Ipv4Addr, u16)) -> String {
    format!(
        "KUBE-SEP-{}",
        &base32_sha256(&format!(
            "{}{}{}:{}",
            port_name(s),
            s.proto_name(),
            ep.0,
            ep.1
        ))[..16]
    )
}

/// The filter and nat tables kube-proxy's iptables mode writes for `set`, as
/// `iptables-restore` input (with `--noflush`: only kube-proxy's chains are declared, the
/// built-in ones get jumps appended).
pub fn iptables_restore(set: &ServiceSet) -> String {
    let mut o = String::with_capacity(set.endpoint_count() * 500 + 8192);
    o.push_str("*filter\n");
    for chain in [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SERVICES",
    ] {
        let _ = writeln!(o, ":{chain} - [0:0]");
    }
    for hook in ["INPUT", "FORWARD", "OUTPUT"] {
        let _ = writeln!(
            o,
            "-A {hook} -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"
        );
        if hook == "INPUT" {
            let _ = writeln!(
                o,
                "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS"
            );
        }
        if hook == "FORWARD" {
            let _ = writeln!(
                o,
                "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"
            );
        }
        if hook != "INPUT" {
            let _ = writeln!(
                o,
                "-A {hook} -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            );
        }
        if hook != "OUTPUT" {
            let _ = writeln!(
                o,
                "-A {hook} -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
            );
        }
    }
    o.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    let _ = writeln!(
        o,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
    );
    o.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    o.push_str("COMMIT\n*nat\n");
    for chain in [
        "KUBE-MARK-MASQ",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-SERVICES",
    ] {
        let _ = writeln!(o, ":{chain} - [0:0]");
    }
    for s in &set.services {
        let _ = writeln!(o, ":{} - [0:0]", ipt_service_chain(s));
        for &ep in &s.endpoints {
            let _ = writeln!(o, ":{} - [0:0]", ipt_endpoint_chain(s, ep));
        }
    }
    for hook in ["PREROUTING", "OUTPUT"] {
        let _ = writeln!(
            o,
            "-A {hook} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        );
    }
    o.push_str(
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    let _ = writeln!(
        o,
        "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}\n\
         -A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    for s in &set.services {
        let _ = writeln!(
            o,
            "-A KUBE-SERVICES -m comment --comment \"{} cluster IP\" -m {p} -p {p} -d {}/32 --dport {} -j {}",
            port_name(s),
            s.cluster_ip,
            s.port,
            ipt_service_chain(s),
            p = s.proto_name()
        );
    }
    o.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    for s in &set.services {
        let svc = ipt_service_chain(s);
        let name = port_name(s);
        let p = s.proto_name();
        let _ = writeln!(
            o,
            "-A {svc} -m comment --comment \"{name} cluster IP\" -m {p} -p {p} -d {}/32 --dport {} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
            s.cluster_ip, s.port
        );
        let n = s.endpoints.len();
        for (i, &ep) in s.endpoints.iter().enumerate() {
            let sep = ipt_endpoint_chain(s, ep);
            if i + 1 < n {
                let _ = writeln!(
                    o,
                    "-A {svc} -m comment --comment \"{name} -> {}:{}\" -m statistic --mode random --probability {:.10} -j {sep}",
                    ep.0,
                    ep.1,
                    1.0 / (n - i) as f64
                );
            } else {
                let _ = writeln!(
                    o,
                    "-A {svc} -m comment --comment \"{name} -> {}:{}\" -j {sep}",
                    ep.0, ep.1
                );
            }
        }
        for &ep in &s.endpoints {
            let sep = ipt_endpoint_chain(s, ep);
            let _ = writeln!(
                o,
                "-A {sep} -m comment --comment \"{name}\" -s {}/32 -j KUBE-MARK-MASQ\n\
                 -A {sep} -m comment --comment \"{name}\" -m {p} -p {p} -j DNAT --to-destination {}:{}",
                ep.0, ep.0, ep.1
            );
        }
    }
    o.push_str("COMMIT\n");
    o
}

/// Base32 (RFC 4648 alphabet, as Go's `base32.StdEncoding`) of the SHA-256 of `text`,
/// without padding.
fn base32_sha256(text: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = String::with_capacity(52);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in digest.as_ref() {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINK: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 9, 2), 9);
    const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);

    #[test]
    fn base32_matches_the_rfc_4648_encoding() {
        // SHA-256("") = e3b0c442…; its base32 starts 4OYMIQUY (Go: base32.StdEncoding).
        assert!(
            base32_sha256("").starts_with("4OYMIQUY"),
            "{}",
            base32_sha256("")
        );
        assert_eq!(base32_sha256("x").len(), 52);
        assert_ne!(base32_sha256("a"), base32_sha256("b"));
    }

    #[test]
    fn the_nft_ruleset_has_kube_proxys_shape_one_chain_per_service_and_endpoint() {
        let set = ServiceSet::generate(1000, 10, SINK);
        let text = nft_ruleset(&set, NODE);
        let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        // Every service and endpoint chain, distinct.
        let chains: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("add chain ip kube-proxy "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(chains.len(), 16 + 1000 + set.endpoint_count());
        assert_eq!(count("add element ip kube-proxy service-ips "), 1000);
        assert_eq!(count("add element ip kube-proxy cluster-ips "), 1000);
        assert_eq!(
            text.matches(" dnat to ").count(),
            set.endpoint_count(),
            "one DNAT per endpoint"
        );
        assert!(text.contains(
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n"
        ));
        assert!(text.contains(
            "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\n"
        ));
        // The target: its frontend in the map, one endpoint, the sink, port translated.
        let t = set.target();
        let svc = nft_service_chain(t);
        assert!(svc.starts_with("service-") && svc.ends_with("-bench/target/udp/p"));
        assert!(text.contains(&format!(
            "add element ip kube-proxy service-ips {{ {} . udp . 80 : goto {svc} }}\n",
            t.cluster_ip
        )));
        assert!(text.contains(&format!(
            "add rule ip kube-proxy {svc} numgen random mod 1 vmap {{ 0 : goto {} }}\n",
            nft_endpoint_chain(t, SINK)
        )));
        assert!(text.contains(&format!(
            "add rule ip kube-proxy {} meta l4proto udp dnat to 198.18.9.2:9\n",
            nft_endpoint_chain(t, SINK)
        )));
        // Another service picks among its 10 endpoints.
        let other = &set.services[1];
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "add rule ip kube-proxy {} numgen",
                    nft_service_chain(other)
                ))
            })
            .unwrap();
        assert!(
            line.contains("numgen random mod 10 vmap { 0 : goto endpoint-"),
            "{line}"
        );
        assert_eq!(line.matches(": goto endpoint-").count(), 10);
    }

    #[test]
    fn the_iptables_rules_walk_endpoints_with_kube_proxys_probabilities() {
        let set = ServiceSet::generate(1000, 10, SINK);
        let text = iptables_restore(&set);
        let t = set.target();
        let svc = ipt_service_chain(t);
        assert_eq!(svc.len(), "KUBE-SVC-".len() + 16);
        let services_rules = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .count();
        assert_eq!(services_rules, 1000 + 1, "one per frontend, then nodeports");
        assert!(text.contains(&format!(
            "-A KUBE-SERVICES -m comment --comment \"bench/target:p cluster IP\" -m udp -p udp -d {}/32 --dport 80 -j {svc}\n",
            t.cluster_ip
        )));
        let sep = ipt_endpoint_chain(t, SINK);
        assert!(text.contains(&format!(
            "-A {sep} -m comment --comment \"bench/target:p\" -m udp -p udp -j DNAT --to-destination 198.18.9.2:9\n"
        )));
        // The first of 10 endpoints at 1/10, the 9th at 1/2, the 10th unconditionally.
        let other = &set.services[1];
        let walk: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {} ", ipt_service_chain(other))))
            .collect();
        assert_eq!(walk.len(), 1 + 10);
        assert!(walk[0].ends_with("-j KUBE-MARK-MASQ"));
        assert!(
            walk[1].contains("--probability 0.1000000000 "),
            "{}",
            walk[1]
        );
        assert!(
            walk[9].contains("--probability 0.5000000000 "),
            "{}",
            walk[9]
        );
        assert!(!walk[10].contains("statistic"));
        assert_eq!(
            text.matches("-j DNAT --to-destination").count(),
            set.endpoint_count()
        );
        // Every chain declared once per table, every name within iptables' 28 characters.
        let nat = &text[text.find("*nat\n").unwrap()..];
        let declared: Vec<&str> = nat
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(declared.len(), 4 + 1000 + set.endpoint_count());
        let mut unique = declared.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), declared.len());
        assert!(declared.iter().all(|c| c.len() <= 28));
        assert_eq!(text.matches("COMMIT\n").count(), 2);
    }

    /// Loads the rulesets in check mode in a namespace of their own: nftables, and iptables
    /// through both backends (root, with the programs installed; otherwise says why it
    /// skipped).
    #[test]
    fn both_rulesets_load_in_a_namespace_when_root() {
        if !weir_testkit::lab::is_root() {
            eprintln!("skipped: needs root (a network namespace, nft -c)");
            return;
        }
        let (Ok(nft), Ok(ipt), Ok(legacy)) = (
            crate::tools::require("nft"),
            crate::tools::require("iptables-nft-restore"),
            crate::tools::require("iptables-legacy-restore"),
        ) else {
            eprintln!("skipped: nft, iptables-nft-restore or iptables-legacy-restore is missing");
            return;
        };
        let ns = format!("weir-kp-check-{}", std::process::id());
        let mut guard = weir_testkit::lab::NetnsGuard::new();
        guard.add_netns(&ns).unwrap();
        let set = ServiceSet::generate(100, 10, SINK);
        let dir = std::env::temp_dir().join(format!("weir-kp-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nft_file = dir.join("rules.nft");
        std::fs::write(&nft_file, nft_ruleset(&set, NODE)).unwrap();
        let ipt_file = dir.join("rules.ipt");
        std::fs::write(&ipt_file, iptables_restore(&set)).unwrap();
        let nft_out = weir_testkit::lab::ns_exec(
            &ns,
            &[
                nft.to_str().unwrap(),
                "-c",
                "-f",
                nft_file.to_str().unwrap(),
            ],
        );
        let ipt_out: Vec<_> = [ipt, legacy]
            .iter()
            .map(|restore| {
                weir_testkit::lab::ns_exec(
                    &ns,
                    &[
                        restore.to_str().unwrap(),
                        "--test",
                        "--noflush",
                        ipt_file.to_str().unwrap(),
                    ],
                )
            })
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        nft_out.unwrap();
        for out in ipt_out {
            out.unwrap();
        }
    }
}
