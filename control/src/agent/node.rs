//! This node's part of the cluster: the snapshot the workers forward with (its pods, its
//! uplink, the policy compiled for them, the WireGuard peers) and the interfaces it names,
//! read from sysfs.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;

use weir_dataplane::service::{FrontendKind, ServiceTable};
use weir_dataplane::snapshot::{Mac, NatPool, NextHop, PodSpec, Prefix, SnatConfig};
use weir_dataplane::SnapshotBuilder;
use weir_workers::bpf::{
    SnatMatch, UplinkFilter, MAX_SNAT_V4, MAX_SNAT_V6, MAX_V4_PREFIXES, MAX_V6_PREFIXES,
};
use weir_workers::worker::PortSpec;

use crate::calc::Calculator;
use crate::policy::compile::Compiled;
use crate::policy::load::Cluster;
use crate::services::{ServiceChange, ServiceState};

use super::host::NodeEnv;
use super::{AgentConfig, AgentError, INTERFACE_ANNOTATION, MAC_ANNOTATION};
use crate::calc::{HOST_MAC_ANNOTATION, MTU_ANNOTATION};

/// "aa:bb:cc:dd:ee:ff" as bytes.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The snapshot of this node from the datastore, and the interfaces to attach.
/// `services` is the service table to publish (the uplink's filter takes its node ports
/// and external addresses).
pub fn build_node(
    config: &AgentConfig,
    cluster: &Cluster,
    compiled: Compiled,
    env: &NodeEnv,
    services: &Arc<ServiceTable>,
) -> Result<(SnapshotBuilder, Vec<PortSpec>), AgentError> {
    let mut b = SnapshotBuilder::new();
    let mut ports = Vec::new();
    // Snapshot endpoint ids must be the compiler's: pods are added in id order.
    let mut by_id: Vec<_> = compiled.endpoints.iter().collect();
    by_id.sort_by_key(|(_, &id)| id);
    for (name, &id) in by_id {
        let pod = &cluster.pods[name];
        let who = format!("{}/{}", pod.namespace, pod.name);
        let perr = |why: String| AgentError::Pod {
            pod: who.clone(),
            why,
        };
        let interface = pod.annotations.get(INTERFACE_ANNOTATION).ok_or_else(|| {
            perr(format!(
                "no {INTERFACE_ANNOTATION} annotation: this agent serves one node, and every \
                 pod in its datastore must be local (name its host-side interface)"
            ))
        })?;
        let mac = pod
            .annotations
            .get(MAC_ANNOTATION)
            .and_then(|m| parse_mac(m))
            .ok_or_else(|| perr(format!("{MAC_ANNOTATION}: missing or not a MAC")))?;
        let (mut ipv4, mut ipv6) = (None, None);
        for ip in &pod.ips {
            match ip {
                IpAddr::V4(a) => ipv4 = Some(*a),
                IpAddr::V6(a) => ipv6 = Some(*a),
            }
        }
        // An interface that is gone (its pod's namespace was deleted before DEL) must not
        // stop the node's other changes: the pod keeps its endpoint, with no port, so
        // nothing reaches it, until it is detached.
        // From the attachment (kept in its annotations) when it has them; a pod given
        // by the datastore with an interface of its own is read from the kernel.
        let kept = pod
            .annotations
            .get(HOST_MAC_ANNOTATION)
            .and_then(|m| parse_mac(m))
            .zip(
                pod.annotations
                    .get(MTU_ANNOTATION)
                    .and_then(|m| m.parse::<u16>().ok()),
            );
        let present = match kept {
            // One ioctl: is the interface still there (its pod's namespace may be gone)?
            Some(known) => nix::net::if_::if_nametoindex(interface.as_str())
                .map(|_| known)
                .map_err(|e| AgentError::Interface {
                    name: interface.clone(),
                    why: e.to_string(),
                }),
            None => interface_mac(interface).and_then(|m| Ok((m, interface_mtu(interface)?))),
        };
        let (gateway_mac, mtu) = match &present {
            Ok((m, t)) => (*m, *t),
            Err(e) => {
                eprintln!("weir agent: pod {who}: {e}; it is unreachable until it is detached");
                ([0x02, 0, 0, 0, 0, 0], 1500)
            }
        };
        let (_, endpoint) = b
            .pod(PodSpec {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                interface: interface.clone(),
                gateway_mac,
                mac,
                ipv4,
                ipv6,
                mtu,
            })
            .map_err(|e| perr(e.to_string()))?;
        if endpoint != id {
            return Err(perr(format!(
                "endpoint id {endpoint} differs from the policy's {id}"
            )));
        }
        if present.is_ok() {
            ports.push(PortSpec {
                name: interface.clone(),
                uplink_filter: None,
            });
        }
    }
    let pools = nat_pools(config, cluster);
    if let Some(up) = &config.uplink {
        b.uplink(up, interface_mac(up)?, interface_mtu(up)?)
            .map_err(|e| AgentError::Snapshot(e.to_string()))?;
        let mut filter = UplinkFilter {
            v4: Vec::new(),
            v6: Vec::new(),
            udp_ports: config.uplink_udp_ports.clone(),
            snat: snat_matches(config, env, &pools),
        };
        for net in &config.pod_cidrs {
            match net {
                ipnet::IpNet::V4(n) => filter.v4.push((n.network(), n.prefix_len())),
                ipnet::IpNet::V6(n) => filter.v6.push((n.network(), n.prefix_len())),
            }
        }
        add_services_to_filter(&mut filter, config, env, services)?;
        ports.push(PortSpec {
            name: up.clone(),
            uplink_filter: Some(filter),
        });
    }
    let snapshot_err =
        |e: weir_dataplane::snapshot::BuildError| AgentError::Snapshot(e.to_string());
    let in_pool = |ip: IpAddr| pools.iter().any(|p| p.prefix.contains(ip));
    if let Some(h) = &env.host {
        b.host(&h.weir, h.weir_mac, h.kernel_mac, h.mtu)
            .map_err(snapshot_err)?;
        ports.push(PortSpec {
            name: h.weir.clone(),
            uplink_filter: None,
        });
        // Pods reach the node's own addresses through the host link.
        for &ip in env.kernel.addresses.iter().filter(|&&ip| !in_pool(ip)) {
            b.route(Prefix::host(ip), NextHop::Host);
        }
    }
    b.host_to_pods_allowed(config.host.allow_host_to_pods);
    if config.uplink.is_some() {
        // The world: through the uplink's default gateways, as the kernel routes.
        for (gw, default) in [
            (env.kernel.gateway_v4, "0.0.0.0/0"),
            (env.kernel.gateway_v6, "::/0"),
        ] {
            if let Some(gw) = gw {
                let prefix: Prefix = default.parse().expect("a default route parses");
                b.route(prefix, NextHop::Router { mac: gw.mac });
            }
        }
        b.snat(SnatConfig {
            v4: env.kernel.uplink_v4,
            v6: env.kernel.uplink_v6,
            ports: (config.snat_ports[0], config.snat_ports[1]),
            pools,
        });
    }
    b.policy(compiled.tables);
    b.services(services.clone());
    Ok((b, ports))
}

/// What the uplink's XDP program must hand to weir for services from outside the node:
///
/// - the **node ports**: TCP and UDP to the uplink's address (as the kernel sees it) with a
///   port of `nodePortRange`, as one more [`SnatMatch`] per family that has a NodePort
///   frontend. A `SnatMatch` also takes ICMP echo replies whose identifier is in the
///   range; weir hands those on to the node's kernel through the host link. SCTP node
///   ports are left to the kernel: the program does not look into SCTP.
/// - the **load balancer and external IPs**: every packet to them, as a /32 (/128) prefix
///   beside the pod CIDRs. An address the node holds itself is left out (taking it would
///   take the node's SSH and kubelet traffic too), as is one a pod CIDR covers already.
///
/// Refused, naming the limit, when the program cannot hold that many entries: the last
/// good tables keep serving.
fn add_services_to_filter(
    filter: &mut UplinkFilter,
    config: &AgentConfig,
    env: &NodeEnv,
    services: &ServiceTable,
) -> Result<(), AgentError> {
    let [first, last] = config.node_port_range;
    let frontends = || services.ports().flat_map(|p| p.spec.frontends.iter());
    let node_ports_v4 = frontends().any(|f| f.kind == FrontendKind::NodePort && f.addr.is_ipv4());
    let node_ports_v6 = frontends().any(|f| f.kind == FrontendKind::NodePort && f.addr.is_ipv6());
    let uplink_v4 = env
        .kernel
        .uplink_v4
        .map(IpAddr::V4)
        .filter(|_| node_ports_v4);
    let uplink_v6 = env
        .kernel
        .uplink_v6
        .map(IpAddr::V6)
        .filter(|_| node_ports_v6);
    for addr in [uplink_v4, uplink_v6].into_iter().flatten() {
        filter.snat.push(SnatMatch {
            addr,
            ports: first..=last,
        });
    }
    let own = |ip: IpAddr| {
        env.kernel.addresses.contains(&ip)
            || env.kernel.uplink_v4.map(IpAddr::V4) == Some(ip)
            || env.kernel.uplink_v6.map(IpAddr::V6) == Some(ip)
    };
    let covered = |ip: IpAddr| config.pod_cidrs.iter().any(|n| n.contains(&ip));
    let mut external: Vec<IpAddr> = frontends()
        .filter(|f| {
            matches!(
                f.kind,
                FrontendKind::LoadBalancer | FrontendKind::ExternalIp
            )
        })
        .map(|f| f.addr)
        .filter(|&ip| !own(ip) && !covered(ip))
        .collect();
    external.sort();
    external.dedup();
    for ip in external {
        match ip {
            IpAddr::V4(a) => filter.v4.push((a, 32)),
            IpAddr::V6(a) => filter.v6.push((a, 128)),
        }
    }
    let too_many = |count: usize, max: usize, what: &str, limit: &str| {
        AgentError::Snapshot(format!(
            "the uplink's XDP filter needs {count} {what}, more than the {max} it holds \
             ({limit} in weir_workers::bpf): {}",
            if what.contains("prefixes") {
                "pod CIDRs and the services' load balancer and external IPs count; the \
                 last good tables keep serving"
            } else {
                "source NAT and node ports take one per uplink address; the last good \
                 tables keep serving"
            }
        ))
    };
    if filter.v4.len() > MAX_V4_PREFIXES {
        return Err(too_many(
            filter.v4.len(),
            MAX_V4_PREFIXES,
            "IPv4 prefixes",
            "MAX_V4_PREFIXES",
        ));
    }
    if filter.v6.len() > MAX_V6_PREFIXES {
        return Err(too_many(
            filter.v6.len(),
            MAX_V6_PREFIXES,
            "IPv6 prefixes",
            "MAX_V6_PREFIXES",
        ));
    }
    let snat = |v4: bool| {
        filter
            .snat
            .iter()
            .filter(|m| m.addr.is_ipv4() == v4)
            .count()
    };
    if snat(true) > MAX_SNAT_V4 {
        return Err(too_many(
            snat(true),
            MAX_SNAT_V4,
            "IPv4 address and port matches",
            "MAX_SNAT_V4",
        ));
    }
    if snat(false) > MAX_SNAT_V6 {
        return Err(too_many(
            snat(false),
            MAX_SNAT_V6,
            "IPv6 address and port matches",
            "MAX_SNAT_V6",
        ));
    }
    Ok(())
}

/// The addresses node ports answer on: the uplink's and every other address the kernel
/// gives the node (but loopback, link-local and weir's own links).
pub fn node_addresses(env: &NodeEnv) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = env
        .kernel
        .uplink_v4
        .map(IpAddr::V4)
        .into_iter()
        .chain(env.kernel.uplink_v6.map(IpAddr::V6))
        .chain(env.kernel.addresses.iter().copied())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the uplink's XDP program must hand to weir for source NAT: the replies to the
/// translated flows, addressed to the uplink's address (as the kernel sees it, the one
/// `SnatConfig` translates to) with a port of the SNAT range. Only for a family some
/// pool translates (`natOutgoing`): otherwise every packet to the node's address is the
/// node's own, and stays with the kernel.
pub fn snat_matches(config: &AgentConfig, env: &NodeEnv, pools: &[NatPool]) -> Vec<SnatMatch> {
    let [first, last] = config.snat_ports;
    let translates = |v4: bool| {
        pools
            .iter()
            .any(|p| p.nat_outgoing && p.prefix.addr().is_ipv4() == v4)
    };
    let v4 = env
        .kernel
        .uplink_v4
        .map(IpAddr::V4)
        .filter(|_| translates(true));
    let v6 = env
        .kernel
        .uplink_v6
        .map(IpAddr::V6)
        .filter(|_| translates(false));
    [v4, v6]
        .into_iter()
        .flatten()
        .map(|addr| SnatMatch {
            addr,
            ports: first..=last,
        })
        .collect()
}

/// The cluster's address pools as source NAT sees them: the IPPools, and the configured
/// pod CIDRs that no IPPool covers, which act as the node's default pool (translated, as
/// Calico's default pool is).
pub fn nat_pools(config: &AgentConfig, cluster: &Cluster) -> Vec<NatPool> {
    let mut pools: Vec<NatPool> = cluster
        .ip_pools
        .values()
        .filter_map(|p| {
            Some(NatPool {
                prefix: Prefix::new(p.cidr.network(), p.cidr.prefix_len()).ok()?,
                nat_outgoing: p.nat_outgoing,
            })
        })
        .collect();
    for net in &config.pod_cidrs {
        let covered = pools
            .iter()
            .any(|p| p.prefix.contains(net.network()) && p.prefix.bits() <= net.prefix_len());
        if !covered {
            if let Ok(prefix) = Prefix::new(net.network(), net.prefix_len()) {
                pools.push(NatPool {
                    prefix,
                    nat_outgoing: true,
                });
            }
        }
    }
    pools
}

/// What one calculation gives the agent.
pub(super) struct Calculated {
    /// The snapshot to publish.
    pub builder: SnapshotBuilder,
    /// The interfaces it needs.
    pub ports: Vec<PortSpec>,
    /// The WireGuard peers.
    pub peers: Vec<weir_crypto::PeerConfig>,
    /// Warnings for the operator.
    pub warnings: Vec<String>,
    /// The service table in the snapshot, to [`ServiceState::commit`] once published.
    pub services: ServiceChange,
}

/// This node's snapshot, the interfaces it names, and the peer set, from the calculator's
/// model. Refused (with the reason) when the peer set is invalid: the running tables stay.
///
/// `wireguard` is this node's key and WireGuard address once WireGuard has started (the
/// first calculation, which comes before, leaves the address to the caller).
///
/// `services` is the service table published last: the new one is built from it (or is
/// it, when no service changed).
pub(super) fn calculate(
    config: &AgentConfig,
    wireguard: Option<&(weir_crypto::NodeKey, SocketAddr)>,
    calc: &mut Calculator,
    env: &NodeEnv,
    services: &mut ServiceState,
) -> Result<Calculated, AgentError> {
    let change = services.refresh(calc, &config.node, &node_addresses(env));
    let compiled = calc.compile();
    let cluster = calc.cluster();
    let (mut builder, new_ports) = build_node(config, cluster, compiled, env, change.table())?;
    let mut warnings = Vec::new();
    let [first, last] = config.node_port_range;
    let outside: Vec<String> = change
        .table()
        .ports()
        .filter(|p| {
            p.spec
                .frontends
                .iter()
                .any(|f| f.kind == FrontendKind::NodePort && !(first..=last).contains(&f.port))
        })
        .map(|p| format!("{}/{}", p.spec.namespace, p.spec.name))
        .collect();
    if !outside.is_empty() {
        warnings.push(format!(
            "node ports of {} are outside nodePortRange {first}-{last}: the uplink leaves \
             them to the kernel, so only pods and the node reach them",
            outside.join(", ")
        ));
    }
    let unattached = cluster
        .pods
        .values()
        .filter(|p| p.node_name.as_deref() == Some(config.node.as_str()) && !calc.is_local(p))
        .count();
    if unattached > 0 {
        warnings.push(format!(
            "{unattached} pod(s) scheduled on this node have no {INTERFACE_ANNOTATION} \
             annotation yet: they are not attached, and nothing reaches them until they are"
        ));
    }
    let wg = config.wireguard_mode()?;
    let peers =
        crate::wireguard::remote_nodes(&config.node, wg, cluster, &mut builder, &mut warnings);
    if let Some((key, local)) = wireguard {
        builder.wireguard(*local);
        // Checked here, so that a refused set never reaches the worker.
        weir_crypto::Peers::new(key.clone(), 1)
            .set_peers(peers.clone())
            .map_err(|e| AgentError::Datastore {
                path: config.datastore_name(),
                why: e.to_string(),
            })?;
        warnings.extend(crate::wireguard::check_published(
            &config.node,
            key,
            cluster,
        ));
    }
    Ok(Calculated {
        builder,
        ports: new_ports,
        peers,
        warnings,
        services: change,
    })
}

/// The MTU of pod interfaces: the uplink's (1500 without one) less WireGuard's overhead
/// when it is on (80 bytes, enough for an IPv6 underlay).
pub(super) fn pod_mtu(config: &AgentConfig) -> Result<u16, AgentError> {
    let base = match &config.uplink {
        Some(up) => interface_mtu(up)?,
        None => 1500,
    };
    let wg = config
        .wireguard_mode()?
        .is_some_and(|(_, m)| m != weir_crypto::EncryptionMode::Off);
    Ok(if wg { base.saturating_sub(80) } else { base })
}

fn sysfs(name: &str, what: &str) -> Result<String, AgentError> {
    let path = format!("/sys/class/net/{name}/{what}");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| AgentError::Interface {
            name: name.into(),
            why: format!("{path}: {e}"),
        })
}

fn interface_mac(name: &str) -> Result<Mac, AgentError> {
    let text = sysfs(name, "address")?;
    parse_mac(&text).ok_or_else(|| AgentError::Interface {
        name: name.into(),
        why: format!("unreadable MAC {text:?}"),
    })
}

fn interface_mtu(name: &str) -> Result<u16, AgentError> {
    let text = sysfs(name, "mtu")?;
    text.parse().map_err(|_| AgentError::Interface {
        name: name.into(),
        why: format!("unreadable MTU {text:?}"),
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use weir_dataplane::service::{FrontendSpec, ServiceSpec, TCP};

    use super::*;

    fn config(extra: &str) -> AgentConfig {
        serde_yaml::from_str(&format!(
            "node: node-a\ncores: [0]\ndatastore: /nonexistent\npodCidrs: [198.18.64.0/18, \
             '2001:db8:64::/48']\n{extra}"
        ))
        .unwrap()
    }

    fn env() -> NodeEnv {
        let mut env = NodeEnv::default();
        env.kernel.uplink_v4 = Some(Ipv4Addr::new(198, 18, 0, 1));
        env.kernel.uplink_v6 = Some("2001:db8::1".parse().unwrap());
        env.kernel.addresses = vec![
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ];
        env
    }

    fn table(frontends: &[(&str, u16, FrontendKind)]) -> ServiceTable {
        let spec = ServiceSpec {
            namespace: "shop".into(),
            name: "web".into(),
            port_name: String::new(),
            protocol: TCP,
            frontends: frontends
                .iter()
                .map(|&(a, port, kind)| FrontendSpec {
                    addr: a.parse().unwrap(),
                    port,
                    kind,
                })
                .collect(),
            backends: Vec::new(),
            external_local: false,
            internal_local: false,
            affinity_seconds: None,
        };
        ServiceTable::build(vec![spec], None).unwrap()
    }

    fn filter(config: &AgentConfig) -> UplinkFilter {
        let mut f = UplinkFilter::default();
        for net in &config.pod_cidrs {
            match net {
                ipnet::IpNet::V4(n) => f.v4.push((n.network(), n.prefix_len())),
                ipnet::IpNet::V6(n) => f.v6.push((n.network(), n.prefix_len())),
            }
        }
        f
    }

    #[test]
    fn node_ports_are_matched_on_the_uplink_address_of_each_family_that_has_one() {
        let config = config("nodePortRange: 31000-31999\n");
        let mut f = filter(&config);
        let t = table(&[
            ("198.19.0.10", 80, FrontendKind::ClusterIp),
            ("198.18.0.1", 31080, FrontendKind::NodePort),
        ]);
        add_services_to_filter(&mut f, &config, &env(), &t).unwrap();
        assert_eq!(
            f.snat,
            [SnatMatch {
                addr: "198.18.0.1".parse().unwrap(),
                ports: 31000..=31999
            }],
            "no IPv6 node port: no IPv6 match"
        );
        assert_eq!(
            (f.v4.len(), f.v6.len()),
            (1, 1),
            "no prefix for a cluster IP"
        );

        let mut f = filter(&config);
        add_services_to_filter(&mut f, &config, &env(), &table(&[])).unwrap();
        assert!(
            f.snat.is_empty(),
            "no node port service: the range stays the kernel's"
        );
    }

    #[test]
    fn load_balancer_and_external_ips_are_host_prefixes_but_the_nodes_own_and_pod_addresses() {
        let config = config("");
        let mut f = filter(&config);
        let t = table(&[
            ("198.18.250.1", 443, FrontendKind::LoadBalancer),
            ("198.18.250.1", 80, FrontendKind::LoadBalancer),
            ("2001:db8:250::1", 443, FrontendKind::ExternalIp),
            ("198.18.0.2", 443, FrontendKind::ExternalIp),
            ("198.18.64.9", 443, FrontendKind::ExternalIp),
        ]);
        add_services_to_filter(&mut f, &config, &env(), &t).unwrap();
        assert_eq!(
            f.v4,
            [
                (Ipv4Addr::new(198, 18, 64, 0), 18),
                (Ipv4Addr::new(198, 18, 250, 1), 32)
            ]
        );
        assert_eq!(
            f.v6,
            [
                ("2001:db8:64::".parse::<Ipv6Addr>().unwrap(), 48),
                ("2001:db8:250::1".parse().unwrap(), 128)
            ]
        );
    }

    #[test]
    fn a_filter_past_the_programs_limits_is_refused_naming_the_limit() {
        let config = config("");
        let ips: Vec<String> = (1..=MAX_V4_PREFIXES)
            .map(|i| format!("198.18.250.{i}"))
            .collect();
        let frontends: Vec<(&str, u16, FrontendKind)> = ips
            .iter()
            .map(|a| (a.as_str(), 443, FrontendKind::LoadBalancer))
            .collect();
        let mut f = filter(&config);
        let e = add_services_to_filter(&mut f, &config, &env(), &table(&frontends))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "needs {} IPv4 prefixes, more than the {MAX_V4_PREFIXES} it holds (MAX_V4_PREFIXES",
                MAX_V4_PREFIXES + 1
            )),
            "{e}"
        );
        let mut f = filter(&config);
        add_services_to_filter(&mut f, &config, &env(), &table(&frontends[1..])).unwrap();
        assert_eq!(f.v4.len(), MAX_V4_PREFIXES, "at the limit is fine");
    }
}
