//! The node's own stack, as weir sees and wires it, through rtnetlink (the `rtnetlink`
//! crate; never `ip` subprocesses or procfs):
//!
//! - **The host link** (`weir0`, ARCHITECTURE.md "How a node is wired"): a veth pair whose
//!   kernel end (`weir0`) the node routes the cluster's pod CIDRs into (`via 169.254.1.1
//!   onlink` / `via fe80::1`, with a permanent neighbour entry for that gateway naming
//!   weir's end, so the kernel never has to ask), and whose other end (`weir0-xdp`) weir
//!   holds on AF_XDP. Traffic from pods to the node's addresses leaves weir through it.
//!   The pair outlives the agent (a restarted agent finds it and takes it back), so the
//!   kernel's routes to pods never flap. The IPv6 half (the `fe80::1` neighbour and the
//!   IPv6 pod routes) is left out, with one log line, when the cluster has no IPv6 pod
//!   CIDR or the kernel's end cannot carry IPv6: the kernel was booted without it, or
//!   `net.ipv6.conf.<if>.disable_ipv6` is set (the kernel refuses an IPv6 neighbour there
//!   with EINVAL). Both are read from the link's `IFLA_AF_SPEC`, the netlink form of
//!   `/proc/sys/net/ipv6/conf/<if>/disable_ipv6`.
//! - **What the kernel knows** ([`KernelView`]): the node's own addresses (pods reach them
//!   through the host link), the uplink's addresses (pods' traffic to the world leaves
//!   with them), and the default routes through the uplink with their gateways' MACs
//!   (from the neighbour table; when an entry is missing, weir asks the kernel to resolve
//!   it with one datagram to the gateway's discard port). A watcher thread re-reads it
//!   every second and asks for a recalculation when it changed (a gateway resolved or
//!   replaced, an address added).
//!
//! rtnetlink is asynchronous; the calls here run through [`crate::netlink`], on a private
//! current-thread runtime on a thread of their own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteType};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};
use weir_dataplane::snapshot::{Mac, GATEWAY_V4, GATEWAY_V6};

use super::AgentError;
use crate::calc::Update;
use crate::netlink::{link, mac_of, netlink};

/// The host link as the snapshot needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    /// The kernel's end (`weir0`), which the node routes pod CIDRs into.
    pub kernel: String,
    /// weir's end, held on AF_XDP.
    pub weir: String,
    pub weir_mac: Mac,
    pub kernel_mac: Mac,
    pub mtu: u16,
}

/// A default gateway on the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub ip: IpAddr,
    /// From the kernel's neighbour table; `None` until it resolved the gateway.
    pub mac: Option<Mac>,
}

/// What weir reads from the kernel's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// Every address of the node, but loopback, link-local and those on weir's links.
    pub addresses: Vec<IpAddr>,
    /// The uplink's first global IPv4 address.
    pub uplink_v4: Option<Ipv4Addr>,
    /// The uplink's first global IPv6 address.
    pub uplink_v6: Option<Ipv6Addr>,
    /// The IPv4 default route's gateway, if the route goes out of the uplink.
    pub gateway_v4: Option<Gateway>,
    /// The IPv6 default route's gateway, if the route goes out of the uplink.
    pub gateway_v6: Option<Gateway>,
}

/// What the node's tables take from the node itself: the host link and the kernel's view.
#[derive(Debug, Clone, Default)]
pub struct NodeEnv {
    pub host: Option<HostLink>,
    pub kernel: KernelView,
}

/// The name of weir's end of the host link whose kernel end is `kernel`.
pub fn weir_end(kernel: &str) -> String {
    format!("{kernel}-xdp")
}

/// Creates the host link if it is missing (or takes over the one a previous agent left),
/// sets both ends up with `mtu`, and routes `pod_cidrs` into it.
pub fn ensure_host_link(
    kernel: &str,
    mtu: u16,
    pod_cidrs: &[ipnet::IpNet],
) -> Result<HostLink, AgentError> {
    let weir = weir_end(kernel);
    if weir.len() > 15 {
        return Err(AgentError::Config {
            path: "host.interface".into(),
            why: format!("{kernel:?}: the name and its \"-xdp\" twin must fit 15 bytes"),
        });
    }
    let err = |why: String| AgentError::Interface {
        name: kernel.to_owned(),
        why,
    };
    let cidrs = pod_cidrs.to_vec();
    let (kernel_name, weir_name) = (kernel.to_owned(), weir.clone());
    netlink(move |handle| async move {
        let mut k = link(&handle, &kernel_name).await?;
        if k.is_none() {
            handle
                .link()
                .add(LinkVeth::new(&kernel_name, &weir_name).build())
                .execute()
                .await
                .map_err(|e| format!("creating the veth pair {kernel_name}/{weir_name}: {e}"))?;
            k = link(&handle, &kernel_name).await?;
        }
        let k = k.ok_or_else(|| format!("{kernel_name} is missing after it was created"))?;
        let w = link(&handle, &weir_name).await?.ok_or_else(|| {
            format!(
                "{kernel_name} exists but its peer {weir_name} does not: remove {kernel_name} \
                 (it is not weir's)"
            )
        })?;
        for index in [k.header.index, w.header.index] {
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .up()
                        .mtu(u32::from(mtu))
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| format!("setting {kernel_name}/{weir_name} up: {e}"))?;
        }
        let weir_mac = mac_of(&w).ok_or("no MAC on weir's end")?;
        let kernel_mac = mac_of(&k).ok_or("no MAC on the kernel's end")?;
        // The gateway the routes name, resolved once and for all to weir's end.
        let want_v6 = cidrs.iter().any(|n| matches!(n, ipnet::IpNet::V6(_)));
        let v6 = match (want_v6, ipv6_unavailable(&k)) {
            (false, _) => false,
            (true, None) => true,
            (true, Some(why)) => {
                eprintln!(
                    "weir agent: {kernel_name}: {why}; the node's stack does not route the \
                     IPv6 pod CIDRs into it (no fe80::1 neighbour, no IPv6 routes)"
                );
                false
            }
        };
        let gateways = [IpAddr::V4(GATEWAY_V4), IpAddr::V6(GATEWAY_V6)];
        for gw in gateways.into_iter().filter(|gw| gw.is_ipv4() || v6) {
            handle
                .neighbours()
                .add(k.header.index, gw)
                .link_local_address(&weir_mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| format!("neighbour {gw} on {kernel_name}: {e}"))?;
        }
        for net in cidrs
            .iter()
            .filter(|n| matches!(n, ipnet::IpNet::V4(_)) || v6)
        {
            let route = match net {
                ipnet::IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(n.network(), n.prefix_len())
                    .gateway(GATEWAY_V4)
                    .output_interface(k.header.index)
                    .onlink()
                    .build(),
                ipnet::IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(n.network(), n.prefix_len())
                    .gateway(GATEWAY_V6)
                    .output_interface(k.header.index)
                    .build(),
            };
            handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(|e| format!("route {net} into {kernel_name}: {e}"))?;
        }
        Ok(HostLink {
            kernel: kernel_name.clone(),
            weir: weir_name.clone(),
            weir_mac,
            kernel_mac,
            mtu,
        })
    })
    .map_err(err)
}

/// Reads the kernel's view of the node. `uplink` names the uplink; interfaces in `skip`
/// (weir's own links) do not give the node addresses.
pub fn kernel_view(uplink: Option<&str>, skip: &[String]) -> Result<KernelView, AgentError> {
    let uplink_name = uplink.map(str::to_owned);
    let skip = skip.to_vec();
    netlink(move |handle| async move {
        let mut names = std::collections::HashMap::new();
        let mut links = handle.link().get().execute();
        while let Some(l) = links.try_next().await.map_err(|e| e.to_string())? {
            if let Some(name) = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }) {
                names.insert(l.header.index, name);
            }
        }
        let uplink_index = uplink_name
            .as_ref()
            .and_then(|u| names.iter().find(|(_, n)| *n == u).map(|(i, _)| *i));
        let mut view = KernelView::default();
        let mut addrs = handle.address().get().execute();
        while let Some(a) = addrs.try_next().await.map_err(|e| e.to_string())? {
            let Some(ip) = a
                .attributes
                .iter()
                .find_map(|x| match x {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                })
                .or_else(|| {
                    a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })
            else {
                continue;
            };
            if !is_global(ip) {
                continue;
            }
            let name = names.get(&a.header.index).cloned().unwrap_or_default();
            if skip.contains(&name) {
                continue;
            }
            if Some(a.header.index) == uplink_index {
                match ip {
                    IpAddr::V4(v4) if view.uplink_v4.is_none() => view.uplink_v4 = Some(v4),
                    IpAddr::V6(v6) if view.uplink_v6.is_none() => view.uplink_v6 = Some(v6),
                    _ => {}
                }
            }
            if !view.addresses.contains(&ip) {
                view.addresses.push(ip);
            }
        }
        view.addresses.sort();
        let Some(up) = uplink_index else {
            return Ok(view);
        };
        let mut neighbours = Vec::new();
        let mut neigh = handle.neighbours().get().execute();
        while let Some(n) = neigh.try_next().await.map_err(|e| e.to_string())? {
            if n.header.ifindex != up
                || !matches!(
                    n.header.state,
                    NeighbourState::Reachable
                        | NeighbourState::Stale
                        | NeighbourState::Delay
                        | NeighbourState::Probe
                        | NeighbourState::Permanent
                        | NeighbourState::Noarp
                )
            {
                continue;
            }
            let ip = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    Some(IpAddr::V4(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    Some(IpAddr::V6(*v6))
                }
                _ => None,
            });
            let mac = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLocalAddress(m) => <[u8; 6]>::try_from(&m[..]).ok(),
                _ => None,
            });
            if let (Some(ip), Some(mac)) = (ip, mac) {
                neighbours.push((ip, mac));
            }
        }
        for v6 in [false, true] {
            let query = if v6 {
                RouteMessageBuilder::<Ipv6Addr>::new().build()
            } else {
                RouteMessageBuilder::<Ipv4Addr>::new().build()
            };
            let mut routes = handle.route().get(query).execute();
            while let Some(r) = routes.try_next().await.map_err(|e| e.to_string())? {
                if r.header.destination_prefix_length != 0
                    || r.header.kind != RouteType::Unicast
                    || r.header.table != 254
                {
                    continue;
                }
                let oif = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                let gw = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                });
                let (Some(oif), Some(ip)) = (oif, gw) else {
                    continue;
                };
                if oif != up {
                    continue;
                }
                let mac = neighbours.iter().find(|(n, _)| *n == ip).map(|(_, m)| *m);
                let gw = Some(Gateway { ip, mac });
                if v6 {
                    view.gateway_v6 = view.gateway_v6.or(gw);
                } else {
                    view.gateway_v4 = view.gateway_v4.or(gw);
                }
            }
        }
        Ok(view)
    })
    .map_err(|why| AgentError::Interface {
        name: uplink.unwrap_or("(none)").to_owned(),
        why: format!("reading the kernel's addresses, routes and neighbours: {why}"),
    })
}

/// Asks the kernel to resolve `gateway`'s MAC: one empty datagram to its discard port
/// (RFC 863), which makes the kernel send an ARP request or neighbour solicitation.
pub fn ask_to_resolve(gateway: IpAddr) {
    let bind: SocketAddr = if gateway.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    if let Ok(s) = UdpSocket::bind(bind) {
        let _ = s.send_to(&[], (gateway, 9));
    }
}

/// Keeps `view` fresh: re-reads the kernel every `period`, asks for unresolved gateways,
/// and sends a recalculation when the view changed. Ends with `stop`.
pub fn watch(
    uplink: Option<String>,
    skip: Vec<String>,
    view: Arc<Mutex<KernelView>>,
    updates: Sender<Update>,
    period: Duration,
    stop: &'static AtomicBool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weir-kernel".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                let Ok(fresh) = kernel_view(uplink.as_deref(), &skip) else {
                    continue;
                };
                for gw in [fresh.gateway_v4, fresh.gateway_v6].into_iter().flatten() {
                    if gw.mac.is_none() {
                        ask_to_resolve(gw.ip);
                    }
                }
                let changed = match view.lock() {
                    Ok(mut v) if *v != fresh => {
                        *v = fresh;
                        true
                    }
                    _ => false,
                };
                if changed
                    && updates
                        .send(Update::Recalculate(
                            "the kernel's routes or neighbours changed",
                        ))
                        .is_err()
                {
                    return;
                }
            }
        })
}

fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => {
            !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// Why `link` cannot carry IPv6, if it cannot: no `AF_INET6` part in its `IFLA_AF_SPEC`
/// (the kernel runs without IPv6), or `disable_ipv6` set in its IPv6 configuration.
fn ipv6_unavailable(link: &LinkMessage) -> Option<&'static str> {
    let inet6 = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::AfSpecUnspec(specs) => specs.iter().find_map(|s| match s {
            AfSpecUnspec::Inet6(v) => Some(v),
            _ => None,
        }),
        _ => None,
    });
    let Some(inet6) = inet6 else {
        return Some("the kernel has no IPv6 (booted with ipv6.disable=1?)");
    };
    inet6
        .iter()
        .any(|x| matches!(x, AfSpecInet6::DevConf(c) if c.disable_ipv6 != 0))
        .then_some("IPv6 is disabled on it (net.ipv6.conf.<if>.disable_ipv6 = 1)")
}

#[cfg(test)]
mod tests {
    use weir_testkit::lab::{in_netns, ip, ns_exec, require_root, NetnsGuard};

    use super::*;

    fn cidrs() -> Vec<ipnet::IpNet> {
        vec![
            "198.18.0.0/16".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ]
    }

    /// Creates the pair `name`/`name-xdp` in a namespace of its own (IPv6 disabled on
    /// `name` when asked), runs `ensure_host_link` there with `cidrs`, and returns what
    /// the namespace's routes and `name`'s neighbours then show.
    fn host_link_in_netns(
        tag: &str,
        disable_ipv6: bool,
        cidrs: Vec<ipnet::IpNet>,
    ) -> (Result<HostLink, AgentError>, String, String) {
        let pid = std::process::id();
        let ns = format!("weir-hl{tag}-{pid}");
        let name = format!("wh{tag}{pid}");
        let mut lab = NetnsGuard::new();
        lab.add_netns(&ns).unwrap();
        // With loopback down the kernel refuses the onlink gateway ("invalid gateway").
        ip(&["-n", &ns, "link", "set", "lo", "up"]).unwrap();
        lab.veth(&ns, &name, &weir_end(&name), None).unwrap();
        if disable_ipv6 {
            ns_exec(
                &ns,
                &[
                    "sysctl",
                    "-q",
                    "-w",
                    &format!("net.ipv6.conf.{name}.disable_ipv6=1"),
                ],
            )
            .unwrap();
        }
        let dev = name.clone();
        let result = in_netns(&ns, move || ensure_host_link(&dev, 1400, &cidrs)).unwrap();
        let routes = ip(&["-n", &ns, "route", "show", "dev", &name]).unwrap()
            + &ip(&["-n", &ns, "-6", "route", "show", "dev", &name]).unwrap_or_default();
        let neighbours = ip(&["-n", &ns, "neigh", "show", "dev", &name]).unwrap_or_default();
        (result, routes, neighbours)
    }

    #[test]
    fn root_host_link_leaves_ipv6_out_where_ipv6_is_disabled() {
        require_root("root_host_link_leaves_ipv6_out_where_ipv6_is_disabled (network namespaces)");
        let (result, routes, neighbours) = host_link_in_netns("d", true, cidrs());
        let link = result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(link.mtu, 1400);
        assert!(routes.contains("198.18.0.0/16 via 169.254.1.1"), "{routes}");
        assert!(!routes.contains("2001:db8:1::/48"), "{routes}");
        assert!(
            neighbours.contains("169.254.1.1") && neighbours.contains("PERMANENT"),
            "{neighbours}"
        );
        assert!(!neighbours.contains("fe80::1"), "{neighbours}");
    }

    #[test]
    fn root_host_link_routes_ipv6_where_it_is_enabled_and_wanted() {
        require_root(
            "root_host_link_routes_ipv6_where_it_is_enabled_and_wanted (network namespaces)",
        );
        let (result, routes, neighbours) = host_link_in_netns("e", false, cidrs());
        result.unwrap_or_else(|e| panic!("{e}"));
        assert!(routes.contains("198.18.0.0/16 via 169.254.1.1"), "{routes}");
        assert!(routes.contains("2001:db8:1::/48 via fe80::1"), "{routes}");
        assert!(neighbours.contains("fe80::1 lladdr"), "{neighbours}");

        // Without an IPv6 pod CIDR, no IPv6 neighbour either.
        let v4_only = vec!["198.18.0.0/16".parse().unwrap()];
        let (result, routes, neighbours) = host_link_in_netns("4", false, v4_only);
        result.unwrap_or_else(|e| panic!("{e}"));
        assert!(routes.contains("198.18.0.0/16 via 169.254.1.1"), "{routes}");
        assert!(!neighbours.contains("fe80::1"), "{neighbours}");
    }
}
