//! The tables the workers read: one immutable [`Snapshot`], built by the control plane with
//! a [`SnapshotBuilder`] and published with one atomic pointer swap ([`Publisher`]).
//!
//! A worker loads the current snapshot once per batch ([`SnapshotReader::load`]) and keeps
//! that guard for the whole batch, so a batch never sees half an update. Large parts that
//! rarely change (the FIB) sit behind their own `Arc`, so a new snapshot can share them.
//! Policy, WireGuard peers ([`peers`]) and services have typed slots here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::batch::IfIndex;
use crate::route::{Ipv4Lpm, Ipv4Routes, Ipv6Lpm, LpmError};
use crate::wire::wireguard::outer::{OuterPath, OuterTemplate, OVERHEAD_V4, OVERHEAD_V6};

mod fib;
pub mod peers;

pub use fib::{FibStats, FibTables};
pub use peers::{Peer, PeerIndex, PeerSpec, PeerTable};

/// Index of an endpoint (a pod) in [`Snapshot::endpoints`].
pub type EndpointId = u32;
/// Index of a remote node in [`Snapshot::nodes`].
pub type NodeId = u32;
/// A MAC address, as on the wire.
pub type Mac = [u8; 6];

/// The Calico-style link-local gateway every pod routes through, answered by weir.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The IPv6 link-local gateway every pod routes through, answered by weir.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// What an interface is to weir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The host end of a pod's veth pair; frames from it must carry the pod's addresses.
    Pod(PodPort),
    /// The node's uplink (NIC).
    Uplink,
    /// weir's end of the link to the node's own stack (`weir0`); `peer_mac` is the kernel
    /// end's MAC.
    Host { peer_mac: Mac },
}

/// The addresses a pod may use on its interface (anti-spoofing) and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPort {
    pub endpoint: EndpointId,
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// An interface weir sends and receives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name (for operators and drivers).
    pub name: String,
    pub role: Role,
    /// weir's MAC on this link: the source of frames weir sends here, and on a pod link
    /// the gateway's MAC.
    pub mac: Mac,
    /// The largest IP packet that may leave through this interface.
    pub mtu: u16,
}

/// A local workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub namespace: String,
    pub name: String,
    pub interface: IfIndex,
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// A remote node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Its address on the underlay.
    pub underlay: IpAddr,
    /// Its MAC on the uplink, once the neighbour table knows it.
    pub mac: Option<Mac>,
}

/// How traffic to a remote node is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tunnel {
    /// Routed plainly on the underlay (BGP-style).
    None,
    /// VXLAN (RFC 7348).
    Vxlan,
    /// WireGuard.
    WireGuard,
}

/// Where a route sends packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// A local endpoint: out of `interface`, to `mac`.
    Local { interface: IfIndex, mac: Mac },
    /// A remote node, over `tunnel`.
    Remote { node: NodeId, tunnel: Tunnel },
    /// The node's own stack (through the host interface).
    Host,
    /// A router on the uplink's segment (the node's default gateway, learned from the
    /// kernel's routing table): out of the uplink to `mac`, `None` while the kernel's
    /// neighbour table does not know it. Packets leaving this way are the candidates for
    /// source NAT ([`SnatConfig`]).
    Router { mac: Option<Mac> },
    /// Known unreachable: answered with ICMP destination unreachable.
    Unreachable,
    /// Dropped silently.
    Blackhole,
}

/// An IP prefix, such as `198.18.0.0/15` or `2001:db8::/32`. Host bits must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// A prefix; fails when `len` is too long for the family or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::TooLong { addr, len, max });
        }
        let masked = mask(addr, len);
        if masked != addr {
            return Err(PrefixError::HostBits { addr, len, masked });
        }
        Ok(Prefix { addr, len })
    }

    /// A host route (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Prefix {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn bits(&self) -> u8 {
        self.len
    }

    /// Whether this is a default route (length 0).
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a prefix is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error(
        "{0:?} is not a prefix: expected ADDRESS/LENGTH, such as 198.18.0.0/15 or 2001:db8::/32"
    )]
    Syntax(String),
    #[error("prefix length {len} is too long for {addr} (at most {max})")]
    TooLong { addr: IpAddr, len: u8, max: u8 },
    #[error("{addr}/{len} has host bits set; did you mean {masked}/{len}?")]
    HostBits {
        addr: IpAddr,
        len: u8,
        masked: IpAddr,
    },
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(syntax)?;
        let addr: IpAddr = a.trim().parse().map_err(|_| syntax())?;
        let len: u8 = l.trim().parse().map_err(|_| syntax())?;
        Prefix::new(addr, len)
    }
}

/// The forwarding table: LPM per family into a shared next-hop table, and for each next
/// hop its adjacency (what the workers act on).
#[derive(Debug)]
pub struct Fib {
    /// Shared with [`FibTables`], which changes it in place once no snapshot holds it.
    pub v4: Arc<Ipv4Lpm>,
    pub v6: Ipv6Lpm,
    /// Next hops as configured, indexed by the values stored in the LPM tables.
    pub nexthops: Vec<NextHop>,
    /// For each next hop (same index), the resolved adjacency.
    pub adjacencies: Vec<Adjacency>,
}

/// What a worker does with a packet routed to a next hop, resolved when the snapshot is
/// built (VPP's adjacency): the output interface, its MTU and the whole rewritten MAC
/// header, so the per-packet work is a table read and a 12-byte copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjacency {
    pub action: AdjacencyAction,
    /// Output interface (valid for `Forward`).
    pub out: IfIndex,
    /// MTU of the output interface (valid for `Forward`).
    pub mtu: u16,
    /// Destination then source MAC (valid for `Forward`).
    pub macs: [u8; 12],
    /// The WireGuard peer to seal for (valid for `Encrypt`).
    pub peer: PeerIndex,
    /// Packets leaving through this adjacency leave the cluster (a [`NextHop::Router`]):
    /// the `nat` stage source-NATs those from a `natOutgoing` pool.
    pub nat: bool,
}

/// The action of an [`Adjacency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjacencyAction {
    /// Rewrite the MACs and send out of `out`.
    Forward,
    /// Answer with ICMP destination unreachable.
    Unreachable,
    /// Drop silently.
    Blackhole,
    /// The next hop needs an encapsulation this build has no stage for: drop, never send
    /// in clear.
    TunnelUnavailable,
    /// A remote node over WireGuard: rewrite, then seal for `peer` (the output stage), then
    /// out of `out` (the uplink). `mtu` is the uplink's less the tunnel overhead.
    Encrypt,
    /// A remote node over WireGuard that has no peer in this snapshot (WireGuard off here,
    /// or the node has no usable key): drop, never send in clear.
    NoPeer,
    /// The next hop's MAC (or the uplink) is not known yet.
    NeighborUnresolved,
    /// The node's own stack is the next hop but no host interface is configured.
    NoHostInterface,
}

impl Adjacency {
    fn action(action: AdjacencyAction) -> Self {
        Adjacency {
            action,
            out: 0,
            mtu: 0,
            macs: [0; 12],
            peer: 0,
            nat: false,
        }
    }

    fn forward(out: IfIndex, iface: &Interface, dst: Mac) -> Self {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&dst);
        macs[6..].copy_from_slice(&iface.mac);
        Adjacency {
            action: AdjacencyAction::Forward,
            out,
            mtu: iface.mtu,
            macs,
            peer: 0,
            nat: false,
        }
    }
}

impl Fib {
    /// The next hop for `dst`, if any route covers it (slow path; workers use the batch
    /// lookups of `v4`/`v6`).
    pub fn lookup(&self, dst: IpAddr) -> Option<NextHop> {
        let id = match dst {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        }?;
        self.nexthops.get(id as usize).copied()
    }
}

pub use crate::policy::PolicyTables;

pub use crate::service::ServiceTable;

/// Source NAT of pod traffic that leaves the cluster (Calico's IPPool `natOutgoing`): the
/// source becomes the node's address and a port (or ICMP echo identifier) from `ports`,
/// allocated per worker (see `node::nat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatConfig {
    /// The node's IPv4 address that pods' IPv4 traffic leaves with.
    pub v4: Option<Ipv4Addr>,
    /// The node's IPv6 address that pods' IPv6 traffic leaves with.
    pub v6: Option<Ipv6Addr>,
    /// First and last port of the range weir allocates from; it must stay out of the
    /// kernel's own ephemeral range (`net.ipv4.ip_local_port_range`), whose replies the
    /// uplink's XDP program leaves to the kernel.
    pub ports: (u16, u16),
    /// The cluster's address pools: traffic to any of them is never translated, traffic
    /// from a pool with `nat_outgoing` to anywhere else is.
    pub pools: Vec<NatPool>,
}

/// An address pool as source NAT sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatPool {
    pub prefix: Prefix,
    pub nat_outgoing: bool,
}

/// The default SNAT port range: above Linux's default ephemeral range (32768–60999).
pub const SNAT_PORTS: (u16, u16) = (61000, 65535);

impl SnatConfig {
    /// The pool that holds `ip`, if any (linear: a cluster has a handful of pools).
    #[inline]
    pub fn pool_of(&self, ip: IpAddr) -> Option<&NatPool> {
        self.pools.iter().find(|p| p.prefix.contains(ip))
    }

    /// Whether a packet from `src` to `dst` leaving the cluster is to be translated.
    #[inline]
    pub fn translates(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.pool_of(src).is_some_and(|p| p.nat_outgoing) && self.pool_of(dst).is_none()
    }
}

/// How weir sends ICMP errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpConfig {
    /// Source address of ICMPv4 errors.
    pub source_v4: Ipv4Addr,
    /// Source address of ICMPv6 errors.
    pub source_v6: Ipv6Addr,
    /// Errors per second per worker (token bucket rate); 0 turns ICMP errors off.
    pub rate_per_sec: u32,
    /// Bucket depth.
    pub burst: u32,
}

impl Default for IcmpConfig {
    /// Sources are the gateway addresses; 1000 errors/s with a burst of 50 per worker, in
    /// line with Linux's `icmp_ratelimit` of one per ms.
    fn default() -> Self {
        IcmpConfig {
            source_v4: GATEWAY_V4,
            source_v6: GATEWAY_V6,
            rate_per_sec: 1000,
            burst: 50,
        }
    }
}

/// One immutable version of everything the workers read.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub interfaces: Vec<Interface>,
    pub endpoints: Vec<Endpoint>,
    pub nodes: Vec<Node>,
    pub fib: Arc<Fib>,
    pub gateway_v4: Ipv4Addr,
    pub gateway_v6: Ipv6Addr,
    pub icmp: IcmpConfig,
    /// The uplink, if the node has one configured.
    pub uplink: Option<IfIndex>,
    /// The host interface, if configured.
    pub host: Option<IfIndex>,
    pub policy: PolicyTables,
    pub peers: PeerTable,
    pub services: Arc<ServiceTable>,
    /// Source NAT to the world, if configured.
    pub snat: Option<SnatConfig>,
    /// Whether connections the node's own stack opens to local pods (kubelet's probes) are
    /// allowed whatever the pods' ingress policy says, as Calico does by default.
    pub host_to_pods_allowed: bool,
}

impl Snapshot {
    /// The snapshot before any configuration: no interfaces, no routes (generation 0).
    pub fn empty() -> Self {
        SnapshotBuilder::new()
            .build(0)
            .expect("an empty snapshot always builds")
    }

    /// The interface at `index`, if it exists.
    #[inline]
    pub fn interface(&self, index: IfIndex) -> Option<&Interface> {
        self.interfaces.get(usize::from(index))
    }

    /// The interface named `name`.
    pub fn interface_by_name(&self, name: &str) -> Option<IfIndex> {
        self.interfaces
            .iter()
            .position(|i| i.name == name)
            .map(|i| i as IfIndex)
    }
}

/// A pod to attach: its interface and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    /// Host-side interface name.
    pub interface: String,
    /// The gateway MAC weir uses on this link.
    pub gateway_mac: Mac,
    /// The pod's own MAC.
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mtu: u16,
}

/// Why a snapshot could not be built. Each names the object at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("interface {0:?} is defined twice")]
    DuplicateInterface(String),
    #[error("too many interfaces (at most {max})", max = IfIndex::MAX)]
    TooManyInterfaces,
    #[error("more than one {0} interface configured; there can be only one")]
    DuplicateRole(&'static str),
    #[error("pod {namespace}/{name} has no IP address; give it an IPv4 or IPv6 address")]
    PodWithoutAddress { namespace: String, name: String },
    #[error("address {ip} is claimed by {first} and {second}")]
    AddressConflict {
        ip: IpAddr,
        first: String,
        second: String,
    },
    #[error("MTU {mtu} of interface {interface:?} is below the minimum of 1280")]
    MtuTooSmall { interface: String, mtu: u16 },
    #[error("route {prefix} is defined twice")]
    DuplicateRoute { prefix: Prefix },
    #[error("route {prefix} points at {what} {index}, which does not exist")]
    DanglingNextHop {
        prefix: Prefix,
        what: &'static str,
        index: u32,
    },
    #[error("route table: {0}")]
    Lpm(#[from] LpmError),
    #[error("WireGuard peer {name} names node {node}, which does not exist")]
    DanglingPeer { name: String, node: NodeId },
    #[error("WireGuard peers {first} and {second} are the same {what}")]
    DuplicatePeer {
        first: String,
        second: String,
        what: &'static str,
    },
    #[error("WireGuard peers are configured but WireGuard has no local address")]
    PeersWithoutWireGuard,
}

/// Collects interfaces, pods, nodes and routes, then builds a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct SnapshotBuilder {
    interfaces: Vec<Interface>,
    endpoints: Vec<Endpoint>,
    nodes: Vec<Node>,
    routes: Vec<(Prefix, NextHop)>,
    icmp: IcmpConfig,
    gateway_v4: Ipv4Addr,
    gateway_v6: Ipv6Addr,
    policy: PolicyTables,
    wireguard: Option<SocketAddr>,
    peers: Vec<PeerSpec>,
    services: Arc<ServiceTable>,
    snat: Option<SnatConfig>,
    host_to_pods_allowed: bool,
}

impl Default for SnapshotBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotBuilder {
    /// An empty builder with the default gateway addresses and ICMP settings.
    pub fn new() -> Self {
        SnapshotBuilder {
            interfaces: Vec::new(),
            endpoints: Vec::new(),
            nodes: Vec::new(),
            routes: Vec::new(),
            icmp: IcmpConfig::default(),
            gateway_v4: GATEWAY_V4,
            gateway_v6: GATEWAY_V6,
            policy: PolicyTables::default(),
            wireguard: None,
            peers: Vec::new(),
            services: Arc::default(),
            snat: None,
            host_to_pods_allowed: true,
        }
    }

    /// Turns source NAT to the world on (see [`SnatConfig`]).
    pub fn snat(&mut self, config: SnatConfig) -> &mut Self {
        self.snat = Some(config);
        self
    }

    /// The services (see [`crate::service`]): built by the caller, shared between
    /// snapshots while no service changes.
    pub fn services(&mut self, table: Arc<ServiceTable>) -> &mut Self {
        self.services = table;
        self
    }

    /// Whether the node's own stack may open connections to local pods whatever their
    /// ingress policy says (default: yes, as in Calico).
    pub fn host_to_pods_allowed(&mut self, allowed: bool) -> &mut Self {
        self.host_to_pods_allowed = allowed;
        self
    }

    /// Turns WireGuard on: this node's address on the underlay (the uplink's) and port.
    pub fn wireguard(&mut self, local: SocketAddr) -> &mut Self {
        self.wireguard = Some(local);
        self
    }

    /// Adds a WireGuard peer (a remote node reached over WireGuard). Checked at build: the
    /// node must exist, and no two peers may share a node or a key.
    pub fn peer(&mut self, spec: PeerSpec) -> PeerIndex {
        self.peers.push(spec);
        (self.peers.len() - 1) as PeerIndex
    }

    /// Sets the compiled policy (programs indexed by endpoint id).
    pub fn policy(&mut self, tables: PolicyTables) -> &mut Self {
        // Worked out here, on the thread that builds the snapshot, not on a worker.
        tables.warm_pays();
        self.policy = tables;
        self
    }

    /// Sets the ICMP error configuration.
    pub fn icmp(&mut self, icmp: IcmpConfig) -> &mut Self {
        self.icmp = icmp;
        self
    }

    /// Adds the uplink.
    pub fn uplink(&mut self, name: &str, mac: Mac, mtu: u16) -> Result<IfIndex, BuildError> {
        self.add_interface(Interface {
            name: name.to_string(),
            role: Role::Uplink,
            mac,
            mtu,
        })
    }

    /// Adds the host interface (`weir0`).
    pub fn host(
        &mut self,
        name: &str,
        mac: Mac,
        peer_mac: Mac,
        mtu: u16,
    ) -> Result<IfIndex, BuildError> {
        self.add_interface(Interface {
            name: name.to_string(),
            role: Role::Host { peer_mac },
            mac,
            mtu,
        })
    }

    /// Adds a pod: its interface, its endpoint, and host routes to its addresses.
    pub fn pod(&mut self, spec: PodSpec) -> Result<(IfIndex, EndpointId), BuildError> {
        if spec.ipv4.is_none() && spec.ipv6.is_none() {
            return Err(BuildError::PodWithoutAddress {
                namespace: spec.namespace,
                name: spec.name,
            });
        }
        let endpoint = self.endpoints.len() as EndpointId;
        let index = self.add_interface(Interface {
            name: spec.interface.clone(),
            role: Role::Pod(PodPort {
                endpoint,
                mac: spec.mac,
                ipv4: spec.ipv4,
                ipv6: spec.ipv6,
            }),
            mac: spec.gateway_mac,
            mtu: spec.mtu,
        })?;
        let local = NextHop::Local {
            interface: index,
            mac: spec.mac,
        };
        for ip in [spec.ipv4.map(IpAddr::V4), spec.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
        {
            self.routes.push((Prefix::host(ip), local));
        }
        self.endpoints.push(Endpoint {
            namespace: spec.namespace,
            name: spec.name,
            interface: index,
            mac: spec.mac,
            ipv4: spec.ipv4,
            ipv6: spec.ipv6,
        });
        Ok((index, endpoint))
    }

    /// Adds a remote node.
    pub fn node(&mut self, name: &str, underlay: IpAddr, mac: Option<Mac>) -> NodeId {
        self.nodes.push(Node {
            name: name.to_string(),
            underlay,
            mac,
        });
        (self.nodes.len() - 1) as NodeId
    }

    /// Adds a route.
    pub fn route(&mut self, prefix: Prefix, nexthop: NextHop) -> &mut Self {
        self.routes.push((prefix, nexthop));
        self
    }

    /// Validates everything and builds the snapshot, its tables from scratch.
    pub fn build(self, generation: u64) -> Result<Snapshot, BuildError> {
        self.build_with(generation, &mut FibTables::default())
    }

    /// Validates everything and builds the snapshot, its IPv4 table taken from `tables`
    /// (changed in place when it can be; see [`FibTables`]). Once this returns `Ok`, the
    /// snapshot must be the one published next.
    pub fn build_with(
        self,
        generation: u64,
        tables: &mut FibTables,
    ) -> Result<Snapshot, BuildError> {
        self.check_addresses()?;
        let uplink = self.single_role(|r| matches!(r, Role::Uplink), "uplink")?;
        let host = self.single_role(|r| matches!(r, Role::Host { .. }), "host")?;

        // Each distinct next hop, with the key its id is kept under.
        let mut hops: Vec<(fib::HopKey, NextHop)> = Vec::new();
        let mut hop_of = rustc_hash::FxHashMap::default();
        let mut seen = rustc_hash::FxHashSet::default();
        let mut route_hops = Vec::with_capacity(self.routes.len());
        for (prefix, nh) in &self.routes {
            if !seen.insert(*prefix) {
                return Err(BuildError::DuplicateRoute { prefix: *prefix });
            }
            self.check_nexthop(prefix, nh)?;
            let hop = *hop_of.entry(*nh).or_insert_with(|| {
                hops.push((self.hop_key(nh), *nh));
                hops.len() - 1
            });
            route_hops.push(hop);
        }
        let (ids, n) = tables.assign(&hops);
        let mut nexthops = vec![NextHop::Blackhole; n];
        for ((_, nh), &id) in hops.iter().zip(&ids) {
            nexthops[id as usize] = *nh;
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for ((prefix, _), &hop) in self.routes.iter().zip(&route_hops) {
            let id = ids[hop];
            match prefix.addr {
                IpAddr::V4(a) => v4.push((a, prefix.len, id)),
                IpAddr::V6(a) => v6.push((a, prefix.len, id)),
            }
        }
        let peers = self.peer_table(uplink)?;
        let adjacencies = nexthops
            .iter()
            .map(|nh| self.adjacency(nh, uplink, host, &peers))
            .collect();
        let v6 = Ipv6Lpm::build(&v6)?;
        // Last: from here the tables count this snapshot as published.
        let v4 = tables.v4(Ipv4Routes::new(&v4)?)?;
        let fib = Fib {
            v4,
            v6,
            nexthops,
            adjacencies,
        };
        Ok(Snapshot {
            generation,
            interfaces: self.interfaces,
            endpoints: self.endpoints,
            nodes: self.nodes,
            fib: Arc::new(fib),
            gateway_v4: self.gateway_v4,
            gateway_v6: self.gateway_v6,
            icmp: self.icmp,
            uplink,
            host,
            policy: self.policy,
            peers,
            services: self.services,
            snat: self.snat,
            host_to_pods_allowed: self.host_to_pods_allowed,
        })
    }

    /// The peer table: every peer checked, and its outer headers built where the node's MAC
    /// and the uplink are known.
    fn peer_table(&self, uplink: Option<IfIndex>) -> Result<PeerTable, BuildError> {
        if self.wireguard.is_none() {
            if self.peers.is_empty() {
                return Ok(PeerTable::default());
            }
            return Err(BuildError::PeersWithoutWireGuard);
        }
        let mut peers: Vec<Peer> = Vec::with_capacity(self.peers.len());
        let mut by_node: Vec<Option<PeerIndex>> = vec![None; self.nodes.len()];
        let mut by_key: rustc_hash::FxHashMap<[u8; 32], usize> = Default::default();
        for spec in &self.peers {
            let Some(node) = self.nodes.get(spec.node as usize) else {
                return Err(BuildError::DanglingPeer {
                    name: spec.name.clone(),
                    node: spec.node,
                });
            };
            let index = peers.len();
            let same_node = by_node[spec.node as usize].map(|i| (i as usize, "node"));
            let same_key = by_key.get(&spec.public_key).map(|&i| (i, "public key"));
            if let Some((first, what)) = same_node.or(same_key) {
                return Err(BuildError::DuplicatePeer {
                    first: peers[first].spec.name.clone(),
                    second: spec.name.clone(),
                    what,
                });
            }
            by_node[spec.node as usize] = Some(index as PeerIndex);
            by_key.insert(spec.public_key, index);
            let outer = match (self.wireguard, uplink, node.mac) {
                (Some(local), Some(up), Some(mac)) => OuterTemplate::new(OuterPath {
                    src_mac: self.interfaces[usize::from(up)].mac,
                    dst_mac: mac,
                    src: local,
                    dst: spec.endpoint,
                })
                .ok(),
                _ => None,
            };
            peers.push(Peer {
                spec: spec.clone(),
                outer,
            });
        }
        Ok(PeerTable {
            local: self.wireguard,
            peers,
            by_node,
        })
    }

    fn add_interface(&mut self, iface: Interface) -> Result<IfIndex, BuildError> {
        if iface.mtu < 1280 {
            return Err(BuildError::MtuTooSmall {
                interface: iface.name,
                mtu: iface.mtu,
            });
        }
        if self.interfaces.iter().any(|i| i.name == iface.name) {
            return Err(BuildError::DuplicateInterface(iface.name));
        }
        let index =
            IfIndex::try_from(self.interfaces.len()).map_err(|_| BuildError::TooManyInterfaces)?;
        if index == IfIndex::MAX {
            return Err(BuildError::TooManyInterfaces);
        }
        self.interfaces.push(iface);
        Ok(index)
    }

    fn single_role(
        &self,
        is: impl Fn(&Role) -> bool,
        what: &'static str,
    ) -> Result<Option<IfIndex>, BuildError> {
        let mut found = self
            .interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| is(&i.role));
        let first = found.next().map(|(i, _)| i as IfIndex);
        if found.next().is_some() {
            return Err(BuildError::DuplicateRole(what));
        }
        Ok(first)
    }

    fn check_addresses(&self) -> Result<(), BuildError> {
        let mut owners: rustc_hash::FxHashMap<IpAddr, &Endpoint> = Default::default();
        for e in &self.endpoints {
            for ip in [e.ipv4.map(IpAddr::V4), e.ipv6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                if let Some(first) = owners.insert(ip, e) {
                    return Err(BuildError::AddressConflict {
                        ip,
                        first: format!("{}/{}", first.namespace, first.name),
                        second: format!("{}/{}", e.namespace, e.name),
                    });
                }
            }
        }
        Ok(())
    }

    fn adjacency(
        &self,
        nh: &NextHop,
        uplink: Option<IfIndex>,
        host: Option<IfIndex>,
        peers: &PeerTable,
    ) -> Adjacency {
        let iface = |i: IfIndex| &self.interfaces[usize::from(i)];
        match *nh {
            NextHop::Local { interface, mac } => {
                Adjacency::forward(interface, iface(interface), mac)
            }
            NextHop::Host => match host {
                Some(h) => match iface(h).role {
                    Role::Host { peer_mac } => Adjacency::forward(h, iface(h), peer_mac),
                    _ => Adjacency::action(AdjacencyAction::NoHostInterface),
                },
                None => Adjacency::action(AdjacencyAction::NoHostInterface),
            },
            NextHop::Remote {
                node,
                tunnel: Tunnel::None,
            } => match (uplink, self.nodes.get(node as usize).and_then(|n| n.mac)) {
                (Some(up), Some(mac)) => Adjacency::forward(up, iface(up), mac),
                _ => Adjacency::action(AdjacencyAction::NeighborUnresolved),
            },
            NextHop::Remote {
                node,
                tunnel: Tunnel::WireGuard,
            } => match (uplink, self.nodes.get(node as usize), peers.of_node(node)) {
                (_, _, None) => Adjacency::action(AdjacencyAction::NoPeer),
                (Some(up), Some(n), Some(p)) => match (n.mac, &peers.peers[p as usize].outer) {
                    (Some(mac), Some(outer)) => {
                        let mut adj = Adjacency::forward(up, iface(up), mac);
                        adj.action = AdjacencyAction::Encrypt;
                        adj.peer = p;
                        // Outer IP and UDP headers, WireGuard's header and tag.
                        let overhead = if outer.path().dst.is_ipv4() {
                            OVERHEAD_V4
                        } else {
                            OVERHEAD_V6
                        };
                        adj.mtu = adj.mtu.saturating_sub(overhead);
                        adj
                    }
                    _ => Adjacency::action(AdjacencyAction::NeighborUnresolved),
                },
                _ => Adjacency::action(AdjacencyAction::NeighborUnresolved),
            },
            NextHop::Remote { .. } => Adjacency::action(AdjacencyAction::TunnelUnavailable),
            NextHop::Router { mac } => match (uplink, mac) {
                (Some(up), Some(mac)) => Adjacency {
                    nat: true,
                    ..Adjacency::forward(up, iface(up), mac)
                },
                _ => Adjacency::action(AdjacencyAction::NeighborUnresolved),
            },
            NextHop::Unreachable => Adjacency::action(AdjacencyAction::Unreachable),
            NextHop::Blackhole => Adjacency::action(AdjacencyAction::Blackhole),
        }
    }

    /// What `nh`'s id is kept under across publications (see [`FibTables`]); `nh` is
    /// checked.
    fn hop_key(&self, nh: &NextHop) -> fib::HopKey {
        match *nh {
            NextHop::Local { interface, mac } => {
                fib::HopKey::Local(self.interfaces[interface as usize].name.clone(), mac)
            }
            NextHop::Remote { node, tunnel } => {
                fib::HopKey::Remote(self.nodes[node as usize].name.clone(), tunnel)
            }
            other => fib::HopKey::Other(other),
        }
    }

    fn check_nexthop(&self, prefix: &Prefix, nh: &NextHop) -> Result<(), BuildError> {
        match *nh {
            NextHop::Local { interface, .. } if usize::from(interface) >= self.interfaces.len() => {
                Err(BuildError::DanglingNextHop {
                    prefix: *prefix,
                    what: "interface",
                    index: u32::from(interface),
                })
            }
            NextHop::Remote { node, .. } if node as usize >= self.nodes.len() => {
                Err(BuildError::DanglingNextHop {
                    prefix: *prefix,
                    what: "node",
                    index: node,
                })
            }
            _ => Ok(()),
        }
    }
}

/// The single writer of snapshots. `publish` takes `&mut self`: there is one control thread,
/// and generations are therefore strictly increasing.
///
/// A snapshot it replaces is kept until no one else holds it and freed then, by the
/// publisher: a worker letting go of the last reference would otherwise free its tables
/// (tens of MiB) in its own loop, forwarding nothing meanwhile. The publisher looks at
/// each publication (and at [`Publisher::collect`]), so a replaced snapshot that a worker
/// still held lives until the next one.
#[derive(Debug)]
pub struct Publisher {
    cell: Arc<ArcSwap<Snapshot>>,
    /// The IPv4 tables, changed in place between publications.
    fib: FibTables,
    /// Replaced snapshots that someone else still held when last looked at.
    retired: Vec<Arc<Snapshot>>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self::new()
    }
}

impl Publisher {
    /// A publisher serving [`Snapshot::empty`].
    pub fn new() -> Self {
        Publisher {
            cell: Arc::new(ArcSwap::from_pointee(Snapshot::empty())),
            fib: FibTables::default(),
            retired: Vec::new(),
        }
    }

    /// Builds `builder` as the next generation and swaps it in. On error nothing changes:
    /// the last good snapshot keeps serving.
    pub fn publish(&mut self, builder: SnapshotBuilder) -> Result<Arc<Snapshot>, BuildError> {
        let generation = self.cell.load().generation + 1;
        // Freed first, so that the spare IPv4 table they held can be changed in place.
        self.collect();
        let snapshot = Arc::new(builder.build_with(generation, &mut self.fib)?);
        let replaced = self.cell.swap(Arc::clone(&snapshot));
        self.retired.push(replaced);
        self.collect();
        Ok(snapshot)
    }

    /// Frees the replaced snapshots no one else holds any more; returns how many are still
    /// held.
    pub fn collect(&mut self) -> usize {
        self.retired.retain(|s| Arc::strong_count(s) > 1);
        self.retired.len()
    }

    /// How the IPv4 tables of the publications so far were made.
    pub fn fib_stats(&self) -> FibStats {
        self.fib.stats()
    }

    /// A handle for a worker.
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader {
            cell: Arc::clone(&self.cell),
        }
    }

    /// The snapshot being served.
    pub fn current(&self) -> Arc<Snapshot> {
        self.cell.load_full()
    }
}

/// A worker's read handle on the current snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotReader {
    cell: Arc<ArcSwap<Snapshot>>,
}

impl SnapshotReader {
    /// The current snapshot; hold the guard for one batch, then drop it.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.cell.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, iface: &str, v4: &str) -> PodSpec {
        PodSpec {
            namespace: "default".into(),
            name: name.into(),
            interface: iface.into(),
            gateway_mac: [0xee; 6],
            mac: [2, 0, 0, 0, 0, 1],
            ipv4: Some(v4.parse().unwrap()),
            ipv6: None,
            mtu: 1500,
        }
    }

    #[test]
    fn prefixes_parse_and_explain_mistakes() {
        let p: Prefix = "198.18.0.0/15".parse().unwrap();
        assert!(p.contains("198.19.255.1".parse().unwrap()));
        assert!(!p.contains("198.20.0.1".parse().unwrap()));
        let e = "198.18.1.1/16".parse::<Prefix>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "198.18.1.1/16 has host bits set; did you mean 198.18.0.0/16?"
        );
        assert!(matches!(
            "2001:db8::/129".parse::<Prefix>(),
            Err(PrefixError::TooLong { .. })
        ));
        assert!(matches!(
            "2001:db8::".parse::<Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
        assert_eq!("::/0".parse::<Prefix>().unwrap().to_string(), "::/0");
    }

    #[test]
    fn pods_get_host_routes_and_conflicts_are_named() {
        let mut b = SnapshotBuilder::new();
        let (i, _) = b.pod(pod("a", "veth-a", "198.18.0.10")).unwrap();
        let s = b.clone().build(1).unwrap();
        assert_eq!(
            s.fib.lookup("198.18.0.10".parse().unwrap()),
            Some(NextHop::Local {
                interface: i,
                mac: [2, 0, 0, 0, 0, 1]
            })
        );
        assert_eq!(s.fib.lookup("198.18.0.11".parse().unwrap()), None);
        b.pod(pod("b", "veth-b", "198.18.0.10")).unwrap();
        let e = b.build(1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "address 198.18.0.10 is claimed by default/a and default/b"
        );
    }

    #[test]
    fn bad_configuration_is_refused_with_reasons() {
        let mut b = SnapshotBuilder::new();
        b.uplink("up0", [1; 6], 1500).unwrap();
        assert!(matches!(
            b.uplink("up0", [1; 6], 1500),
            Err(BuildError::DuplicateInterface(_))
        ));
        assert!(matches!(
            b.uplink("up1", [1; 6], 600),
            Err(BuildError::MtuTooSmall { .. })
        ));
        b.uplink("up1", [1; 6], 1500).unwrap();
        assert_eq!(
            b.clone().build(1).unwrap_err(),
            BuildError::DuplicateRole("uplink")
        );
        let mut b = SnapshotBuilder::new();
        b.route(
            "198.18.0.0/15".parse().unwrap(),
            NextHop::Remote {
                node: 3,
                tunnel: Tunnel::None,
            },
        );
        assert!(matches!(
            b.build(1),
            Err(BuildError::DanglingNextHop { what: "node", .. })
        ));
        let mut b = SnapshotBuilder::new();
        b.route("198.18.0.0/15".parse().unwrap(), NextHop::Blackhole);
        b.route("198.18.0.0/15".parse().unwrap(), NextHop::Host);
        assert!(matches!(b.build(1), Err(BuildError::DuplicateRoute { .. })));
    }

    #[test]
    fn publish_bumps_generation_and_a_bad_build_keeps_the_last_good_snapshot() {
        let mut p = Publisher::new();
        let r = p.reader();
        assert_eq!(r.load().generation, 0);
        let mut b = SnapshotBuilder::new();
        b.pod(pod("a", "veth-a", "198.18.0.10")).unwrap();
        p.publish(b.clone()).unwrap();
        let held = r.load_full_for_test();
        assert_eq!(held.generation, 1);
        b.pod(pod("b", "veth-b", "198.18.0.10")).unwrap();
        assert!(p.publish(b).is_err());
        assert_eq!(r.load().generation, 1);
        assert_eq!(r.load().endpoints.len(), 1);
        p.publish(SnapshotBuilder::new()).unwrap();
        assert_eq!(r.load().generation, 2);
        // A guard taken before the swap still sees its own version.
        assert_eq!(held.endpoints.len(), 1);
    }

    #[test]
    fn a_replaced_snapshot_is_freed_by_the_publisher_not_by_its_last_reader() {
        let mut p = Publisher::new();
        let r = p.reader();
        p.publish(SnapshotBuilder::new()).unwrap();
        // A worker holds generation 1 across the next publication.
        let held = r.load_full_for_test();
        let gone = Arc::downgrade(&held);
        p.publish(SnapshotBuilder::new()).unwrap();
        assert_eq!(p.collect(), 1, "still held by the worker");
        drop(held);
        assert!(
            gone.upgrade().is_some(),
            "the worker's drop did not free it"
        );
        assert_eq!(p.collect(), 0);
        assert!(gone.upgrade().is_none(), "the publisher freed it");
        // One no one held is freed at once.
        let current = Arc::downgrade(&r.load_full_for_test());
        p.publish(SnapshotBuilder::new()).unwrap();
        assert!(current.upgrade().is_none());
    }

    impl SnapshotReader {
        fn load_full_for_test(&self) -> Arc<Snapshot> {
            Arc::clone(&self.load())
        }
    }
}
