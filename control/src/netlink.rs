//! rtnetlink, the way the control plane uses it: a private current-thread runtime on a
//! thread of its own per call, in the agent's network namespace ([`netlink`]) or in
//! another one ([`netlink_in`]: the thread enters it before it opens its socket, and
//! ends after the call, so nothing else ever runs in the pod's namespace), and the pod
//! interface operations of `weir-cni`'s ADD, DEL and CHECK built on them ([`plumb`],
//! [`delete_link`], [`addresses_in`]). No `ip`, `nsenter` or sysfs: one netlink
//! conversation per namespace, no process start-up.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use weir_dataplane::snapshot::{Mac, GATEWAY_V4, GATEWAY_V6};

/// `ENODEV`: the kernel's answer for a link that does not exist.
const ENODEV: i32 = 19;

/// The MAC of a link message.
pub(crate) fn mac_of(link: &LinkMessage) -> Option<Mac> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => <[u8; 6]>::try_from(&m[..]).ok(),
        _ => None,
    })
}

/// The link named `name`, if the namespace has one.
pub(crate) async fn link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, String> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(None),
        Err(e) => Err(format!("looking up {name}: {e}")),
    }
}

/// Runs `work` with a netlink handle on a private runtime, on a thread of its own, in
/// the agent's network namespace.
pub(crate) fn netlink<F, Fut, T>(work: F) -> Result<T, String>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    on_thread(None, work)
}

/// [`netlink`] in the network namespace `netns` (an open namespace file, as a runtime's
/// `/var/run/netns/<name>` or `/proc/<pid>/ns/net`).
pub(crate) fn netlink_in<F, Fut, T>(netns: File, work: F) -> Result<T, String>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    on_thread(Some(netns), work)
}

fn on_thread<F, Fut, T>(netns: Option<File>, work: F) -> Result<T, String>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        if let Some(ns) = &netns {
            // This thread only: it ends when the work is done.
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("entering the network namespace: {e}"))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("netlink runtime: {e}"))?;
        rt.block_on(async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
            tokio::spawn(connection);
            work(handle).await
        })
    })
    .join()
    .map_err(|_| "the netlink thread panicked".to_owned())?
}

/// A MAC as `ip` and sysfs print it (`02:00:5e:10:00:01`).
pub(crate) fn mac_text(mac: Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn open_netns(netns: &str) -> Result<File, String> {
    File::open(netns).map_err(|e| format!("the network namespace {netns}: {e}"))
}

/// Creates and configures a pod's veth pair; returns (host MAC, pod MAC).
///
/// In the agent's namespace: the pair, its pod end created straight into the pod's
/// namespace under its final name (`ifname`, `IFLA_NET_NS_FD` in the peer's message),
/// both ends with `mtu`, the host end `host` up. In the pod's namespace: the addresses
/// (/32, /128 without duplicate address detection), loopback and `ifname` up, and a
/// default route via weir's link-local gateway (169.254.1.1 through an on-link host
/// route, fe80::1). Every step replaces what is there, so a repeated ADD converges; an
/// existing host end is kept.
pub(crate) fn plumb(
    netns: &str,
    ifname: &str,
    host: &str,
    ips: &[IpAddr],
    mtu: u16,
) -> Result<(String, String), String> {
    if !std::path::Path::new(netns).exists() {
        return Err(format!("the network namespace {netns} does not exist"));
    }
    let pod_ns = open_netns(netns)?;
    let peer_ns = pod_ns
        .try_clone()
        .map_err(|e| format!("the network namespace {netns}: {e}"))?;
    let (host_name, pod_name) = (host.to_owned(), ifname.to_owned());
    let host_mac = netlink(move |handle| async move {
        if link(&handle, &host_name).await?.is_none() {
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(pod_name.clone())
                .mtu(u32::from(mtu))
                .setns_by_fd(peer_ns.as_raw_fd())
                .build();
            let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(host_name.clone())
                .mtu(u32::from(mtu))
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            handle.link().add(pair).execute().await.map_err(|e| {
                format!(
                    "creating the veth pair {host_name} / {pod_name} (in the pod's namespace): {e}"
                )
            })?;
        }
        let l = link(&handle, &host_name)
            .await?
            .ok_or_else(|| format!("{host_name} is missing after it was created"))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(l.header.index).up().build())
            .execute()
            .await
            .map_err(|e| format!("setting {host_name} up: {e}"))?;
        mac_of(&l).ok_or_else(|| format!("no MAC on {host_name}"))
    })?;

    let (ips, pod_name, ns_name) = (ips.to_vec(), ifname.to_owned(), netns.to_owned());
    let pod_mac = netlink_in(pod_ns, move |handle| async move {
        let l = link(&handle, &pod_name)
            .await?
            .ok_or_else(|| format!("no {pod_name} in {ns_name}"))?;
        let index = l.header.index;
        for ip in &ips {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            let mut add = handle.address().add(index, *ip, len).replace();
            if ip.is_ipv6() {
                add.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            add.execute()
                .await
                .map_err(|e| format!("address {ip}/{len} on {pod_name} in {ns_name}: {e}"))?;
        }
        let lo = link(&handle, "lo")
            .await?
            .ok_or_else(|| format!("no loopback in {ns_name}"))?;
        for (i, what) in [(lo.header.index, "lo"), (index, pod_name.as_str())] {
            handle
                .link()
                .set(LinkUnspec::new_with_index(i).up().build())
                .execute()
                .await
                .map_err(|e| format!("setting {what} up in {ns_name}: {e}"))?;
        }
        let mut routes = Vec::new();
        if ips.iter().any(IpAddr::is_ipv4) {
            routes.push(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(GATEWAY_V4, 32)
                    .output_interface(index)
                    .scope(RouteScope::Link)
                    .build(),
            );
            routes.push(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(GATEWAY_V4)
                    .output_interface(index)
                    .build(),
            );
        }
        if ips.iter().any(IpAddr::is_ipv6) {
            routes.push(
                RouteMessageBuilder::<Ipv6Addr>::new()
                    .gateway(GATEWAY_V6)
                    .output_interface(index)
                    .build(),
            );
        }
        for route in routes {
            handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(|e| format!("a route in {ns_name}: {e}"))?;
        }
        mac_of(&l).ok_or_else(|| format!("no MAC on {pod_name} in {ns_name}"))
    })?;
    Ok((mac_text(host_mac), mac_text(pod_mac)))
}

/// Whether the agent's namespace has a link named `name`.
pub(crate) fn link_exists(name: &str) -> Result<bool, String> {
    let name = name.to_owned();
    netlink(move |handle| async move { Ok(link(&handle, &name).await?.is_some()) })
}

/// Deletes link `name` of the agent's namespace (a veth takes its peer with it); a link
/// that is not there is not an error.
pub(crate) fn delete_link(name: &str) -> Result<(), String> {
    let name = name.to_owned();
    netlink(move |handle| async move {
        let Some(l) = link(&handle, &name).await? else {
            return Ok(());
        };
        match handle.link().del(l.header.index).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(()),
            Err(e) => Err(format!("deleting {name}: {e}")),
        }
    })
}

/// The addresses on `ifname` in the namespace `netns`; an error when either is missing.
pub(crate) fn addresses_in(netns: &str, ifname: &str) -> Result<Vec<IpAddr>, String> {
    let ns = open_netns(netns)?;
    let (name, ns_name) = (ifname.to_owned(), netns.to_owned());
    netlink_in(ns, move |handle| async move {
        let l = link(&handle, &name)
            .await?
            .ok_or_else(|| format!("no {name} in {ns_name}"))?;
        let mut found = Vec::new();
        let mut addrs = handle
            .address()
            .get()
            .set_link_index_filter(l.header.index)
            .execute();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(|e| format!("addresses of {name} in {ns_name}: {e}"))?
        {
            found.extend(a.attributes.iter().filter_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            }));
        }
        Ok(found)
    })
}
