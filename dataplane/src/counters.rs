//! Per-worker counters: every drop has a named reason.
//!
//! Counters are plain `u64`s owned by one worker (`#[repr(align(64))]`, no atomics on the
//! packet path). Whoever reports them (metrics, the CLI, benchmarks) sums snapshots taken
//! per batch by the worker; see [`Counters::merge`].

/// Why a frame was dropped. Each reason is counted per worker; `name()` is the label used
/// in metrics and must stay stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    EthTruncated,
    /// Carries an 802.1Q/802.1ad tag: VLAN-tagged links are not supported yet.
    VlanTagged,
    /// EtherType is neither IPv4, IPv6 nor ARP.
    UnknownEthertype,
    /// ARP packet too short or not Ethernet/IPv4.
    ArpMalformed,
    /// IPv4 header fails the RFC 1812 §5.2.2 checks (length, version, IHL, total length).
    Ipv4Malformed,
    /// IPv4 header checksum does not verify (RFC 1812 §5.2.2).
    Ipv4BadChecksum,
    /// IPv4 options that do not parse (zero or overlong option lengths).
    Ipv4BadOptions,
    /// IPv4 source routing options (LSRR/SSRR): dropped, as RFC 7126 §4.3.3 recommends.
    Ipv4SourceRoute,
    /// Source address that must never be forwarded (RFC 1812 §5.3.7: 0/8, 127/8, class D
    /// and E, limited broadcast).
    Ipv4MartianSource,
    /// Destination address that must never be forwarded (0/8, 127/8, class E).
    Ipv4MartianDestination,
    /// Multicast or broadcast destination: not routed.
    Ipv4Multicast,
    /// IPv6 header too short, wrong version, or payload length past the frame.
    Ipv6Malformed,
    /// IPv6 extension header chain that runs off the end, is too long, is misordered, or
    /// carries options with bad lengths.
    Ipv6BadExtensions,
    /// Source that must never be forwarded (multicast, loopback, unspecified).
    Ipv6MartianSource,
    /// Destination that must never be forwarded (loopback, unspecified).
    Ipv6MartianDestination,
    /// Multicast destination other than neighbour discovery: not routed.
    Ipv6Multicast,
    /// Link-local source or destination on a packet to be routed (RFC 4291 §2.5.6).
    Ipv6LinkLocal,
    /// The first fragment or unfragmented packet is too short for its transport header.
    L4Truncated,
    /// Source MAC on a pod interface is not the pod's.
    SpoofedMac,
    /// Source IP (or ARP sender address) on a pod interface is not the pod's.
    SpoofedIp,
    /// ARP that is not a request for the gateway address.
    ArpIgnored,
    /// Neighbour discovery message that fails RFC 4861 validation (hop limit not 255, bad
    /// code or checksum, truncated).
    NdpInvalid,
    /// Neighbour discovery message other than a solicitation for the gateway.
    NdpIgnored,
    /// Addressed to the gateway address itself (nothing listens there).
    ToGateway,
    /// TTL or hop limit expired (an ICMP time exceeded is sent when allowed).
    TtlExceeded,
    /// No route, or an unreachable route (an ICMP destination unreachable is sent when
    /// allowed).
    NoRoute,
    /// Route to a blackhole: dropped silently.
    Blackhole,
    /// Larger than the output MTU (an ICMP fragmentation needed / packet too big is sent
    /// when allowed; weir does not fragment).
    TooBig,
    /// Routed to a remote node over a tunnel this build has no encapsulation stage for.
    TunnelUnavailable,
    /// Routed to a remote node whose link-layer address is not known yet.
    NeighborUnresolved,
    /// Would leave through the interface it came in on.
    Hairpin,
    /// The output queue or TX ring was full.
    TxRingFull,
    /// Denied by the egress policy of the sending pod.
    PolicyDeniedEgress,
    /// Denied by the ingress policy of the receiving pod.
    PolicyDeniedIngress,
    /// Routed over WireGuard to a node that has no peer in the snapshot (no usable key, or
    /// WireGuard off on this node): never sent in clear.
    WireguardNoPeer,
    /// Routed to an interface that no worker owns (just detached, or its owner not
    /// announced yet).
    UnownedOutput,
    /// The lane to the worker that owns the output, or the flow (see `node::steer`), had no
    /// free buffer (that worker is behind): dropped, never queued without bound.
    HandoffFull,
    /// Handed in by another worker for an interface index of another snapshot generation
    /// than the one mapped here (a few while the workers move to a new snapshot).
    HandoffStale,
    /// The kernel gave an RX descriptor outside the UMEM (recycled unread).
    BadDescriptor,
    /// No free frame: a frame handed in by another worker, or a message WireGuard had to
    /// send, found this worker's free list empty.
    FillStarved,
    /// Found in a port's RX ring or TX staging queue while the port was detached.
    PortDetached,
    /// Could not be sealed or sent: no room in the frame for the outer headers and the
    /// message (a packet larger than the tunnel's frames hold), or a packet too short or
    /// too long for the tunnel.
    WireguardNoRoom,
    /// A WireGuard message refused on the way in (unauthenticated, replayed, from an
    /// unknown peer, an inner source outside the peer's allowed IPs...; the WireGuard
    /// counters say which).
    WireguardRejected,
    /// Would leave the cluster from a `natOutgoing` pool but cannot be translated: a
    /// fragment, a protocol other than TCP, UDP and ICMP echo, or no node address of its
    /// family.
    SnatUnavailable,
    /// Would leave the cluster from a `natOutgoing` pool, and this worker has no free port
    /// of the SNAT range left for it.
    SnatPortsExhausted,
    /// Addressed to the node in the SNAT port range, but no live translation matches it
    /// (expired, or not from the remote end the pod talks to).
    SnatNoMapping,
    /// A connection opened from outside to a pod could not be remembered (the worker's
    /// translation table is full).
    SnatTableFull,
    /// Addressed to a service that has no endpoint to take it (none ready or terminating,
    /// or with `Local` traffic policy none on this node): answered, like kube-proxy does,
    /// with a TCP reset or an ICMP port unreachable when the rate limit allows.
    ServiceNoEndpoints,
    /// A new connection to a service could not be remembered (the worker's service
    /// connection table is full even after expired entries were swept).
    ServiceTableFull,
    /// A later fragment of a datagram to a service address: it carries no port, and weir
    /// does not reassemble (the first fragment was translated and forwarded).
    ServiceFragment,
}

impl DropReason {
    /// Every reason, in declaration order (the order of the counter array).
    pub const ALL: [DropReason; 50] = [
        DropReason::EthTruncated,
        DropReason::VlanTagged,
        DropReason::UnknownEthertype,
        DropReason::ArpMalformed,
        DropReason::Ipv4Malformed,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4BadOptions,
        DropReason::Ipv4SourceRoute,
        DropReason::Ipv4MartianSource,
        DropReason::Ipv4MartianDestination,
        DropReason::Ipv4Multicast,
        DropReason::Ipv6Malformed,
        DropReason::Ipv6BadExtensions,
        DropReason::Ipv6MartianSource,
        DropReason::Ipv6MartianDestination,
        DropReason::Ipv6Multicast,
        DropReason::Ipv6LinkLocal,
        DropReason::L4Truncated,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::ArpIgnored,
        DropReason::NdpInvalid,
        DropReason::NdpIgnored,
        DropReason::ToGateway,
        DropReason::TtlExceeded,
        DropReason::NoRoute,
        DropReason::Blackhole,
        DropReason::TooBig,
        DropReason::TunnelUnavailable,
        DropReason::NeighborUnresolved,
        DropReason::Hairpin,
        DropReason::TxRingFull,
        DropReason::PolicyDeniedEgress,
        DropReason::PolicyDeniedIngress,
        DropReason::WireguardNoPeer,
        DropReason::UnownedOutput,
        DropReason::HandoffFull,
        DropReason::HandoffStale,
        DropReason::BadDescriptor,
        DropReason::FillStarved,
        DropReason::PortDetached,
        DropReason::WireguardNoRoom,
        DropReason::WireguardRejected,
        DropReason::SnatUnavailable,
        DropReason::SnatPortsExhausted,
        DropReason::SnatNoMapping,
        DropReason::SnatTableFull,
        DropReason::ServiceNoEndpoints,
        DropReason::ServiceTableFull,
        DropReason::ServiceFragment,
    ];

    /// The reasons the in-memory driver cannot produce from a frame, so that
    /// `every_drop_reason_is_reachable_and_counted` (workers/tests/drops.rs) leaves them
    /// out (`handoff_full` and `handoff_stale` are in it: in-memory drivers join a handoff
    /// mesh as workers do): `port_detached` and `bad_descriptor` need a
    /// kernel socket (a port detached with frames in its rings, a descriptor outside the
    /// UMEM); `fill_starved` and `wireguard_no_room` need the free list or a frame to run
    /// out under WireGuard, which the pipeline's MTU checks keep the in-memory driver from;
    /// `snat_table_full` needs 65 536 live inbound flows on one worker (proven by the
    /// `nat` stage's unit test); `service_table_full` likewise needs a full service
    /// connection table (proven by the `service` stage's unit test).
    pub const NOT_IN_MEMORY: [DropReason; 6] = [
        DropReason::BadDescriptor,
        DropReason::PortDetached,
        DropReason::FillStarved,
        DropReason::WireguardNoRoom,
        DropReason::SnatTableFull,
        DropReason::ServiceTableFull,
    ];

    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// The stable metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::EthTruncated => "eth_truncated",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::ArpMalformed => "arp_malformed",
            DropReason::Ipv4Malformed => "ipv4_malformed",
            DropReason::Ipv4BadChecksum => "ipv4_bad_checksum",
            DropReason::Ipv4BadOptions => "ipv4_bad_options",
            DropReason::Ipv4SourceRoute => "ipv4_source_route",
            DropReason::Ipv4MartianSource => "ipv4_martian_source",
            DropReason::Ipv4MartianDestination => "ipv4_martian_destination",
            DropReason::Ipv4Multicast => "ipv4_multicast",
            DropReason::Ipv6Malformed => "ipv6_malformed",
            DropReason::Ipv6BadExtensions => "ipv6_bad_extensions",
            DropReason::Ipv6MartianSource => "ipv6_martian_source",
            DropReason::Ipv6MartianDestination => "ipv6_martian_destination",
            DropReason::Ipv6Multicast => "ipv6_multicast",
            DropReason::Ipv6LinkLocal => "ipv6_link_local",
            DropReason::L4Truncated => "l4_truncated",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::ArpIgnored => "arp_ignored",
            DropReason::NdpInvalid => "ndp_invalid",
            DropReason::NdpIgnored => "ndp_ignored",
            DropReason::ToGateway => "to_gateway",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NoRoute => "no_route",
            DropReason::Blackhole => "blackhole",
            DropReason::TooBig => "too_big",
            DropReason::TunnelUnavailable => "tunnel_unavailable",
            DropReason::NeighborUnresolved => "neighbor_unresolved",
            DropReason::Hairpin => "hairpin",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::PolicyDeniedEgress => "policy_denied_egress",
            DropReason::PolicyDeniedIngress => "policy_denied_ingress",
            DropReason::WireguardNoPeer => "wireguard_no_peer",
            DropReason::UnownedOutput => "unowned_output",
            DropReason::HandoffFull => "handoff_full",
            DropReason::HandoffStale => "handoff_stale",
            DropReason::BadDescriptor => "bad_descriptor",
            DropReason::FillStarved => "fill_starved",
            DropReason::PortDetached => "port_detached",
            DropReason::WireguardNoRoom => "wireguard_no_room",
            DropReason::WireguardRejected => "wireguard_rejected",
            DropReason::SnatUnavailable => "snat_unavailable",
            DropReason::SnatPortsExhausted => "snat_ports_exhausted",
            DropReason::SnatNoMapping => "snat_no_mapping",
            DropReason::SnatTableFull => "snat_table_full",
            DropReason::ServiceNoEndpoints => "service_no_endpoints",
            DropReason::ServiceTableFull => "service_table_full",
            DropReason::ServiceFragment => "service_fragment",
        }
    }
}

/// The kinds of ICMP error weir generates (counted when sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IcmpErrorKind {
    /// ICMPv4 type 11 / ICMPv6 type 3: TTL or hop limit exceeded in transit.
    TimeExceeded,
    /// ICMPv4 type 3 / ICMPv6 type 1: no route to the destination.
    Unreachable,
    /// ICMPv4 type 3 code 4 / ICMPv6 type 2: fragmentation needed / packet too big.
    TooBig,
    /// ICMPv4 type 3 code 3 / ICMPv6 type 1 code 4: port unreachable (a UDP or SCTP
    /// service without endpoints).
    PortUnreachable,
    /// Not ICMP: a TCP reset (RFC 9293 §3.10.7.1) answering a connection attempt to a TCP
    /// service without endpoints, as a closed port answers.
    Reset,
}

impl IcmpErrorKind {
    /// Every kind, in counter order.
    pub const ALL: [IcmpErrorKind; 5] = [
        IcmpErrorKind::TimeExceeded,
        IcmpErrorKind::Unreachable,
        IcmpErrorKind::TooBig,
        IcmpErrorKind::PortUnreachable,
        IcmpErrorKind::Reset,
    ];

    /// The stable metric label.
    pub fn name(self) -> &'static str {
        match self {
            IcmpErrorKind::TimeExceeded => "time_exceeded",
            IcmpErrorKind::Unreachable => "unreachable",
            IcmpErrorKind::TooBig => "too_big",
            IcmpErrorKind::PortUnreachable => "port_unreachable",
            IcmpErrorKind::Reset => "tcp_reset",
        }
    }
}

/// One worker's counters.
///
/// Accounting identity: every frame that came in (received, handed in by another worker,
/// or made here) went out (transmitted, handed to another worker), was dropped for a named
/// reason, or was consumed by design:
///
/// `rx + handoff_in + generated + icmp_errors == tx + handoff_out + drops + consumed`
///
/// A frame answered with an ICMP error counts under its drop reason *and* the error it
/// became is counted in `icmp_errors` and `tx`. Summed over all workers, `handoff_in`
/// equals `handoff_out` once the lanes are empty. The identity holds whenever no frame is
/// between two places (in a batch, staged but not yet given to a TX ring);
/// [`Counters::check_accounting`] states it as code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(align(64))]
pub struct Counters {
    /// Frames that entered the pipeline.
    pub rx: u64,
    /// Frames given to an output's TX ring (forwarded and sealed packets, ARP/NDP replies,
    /// ICMP errors, WireGuard messages).
    pub tx: u64,
    /// Frames made here that no frame came in for: WireGuard handshake, cookie and
    /// keepalive messages, and packets flushed after a handshake (which were consumed
    /// when they were queued for it).
    pub generated: u64,
    /// Frames that ended here by design, neither sent nor dropped: WireGuard control
    /// messages received, and packets queued for a peer's handshake (they leave later as
    /// generated frames).
    pub consumed: u64,
    /// Frames received from other workers, to send here.
    pub handoff_in: u64,
    /// Frames given to the worker that owns their output.
    pub handoff_out: u64,
    /// ARP replies and neighbour advertisements sent for the gateway.
    pub neighbor_replies: u64,
    /// ICMP errors sent, by kind.
    pub icmp_errors: [u64; IcmpErrorKind::ALL.len()],
    /// ICMP errors not sent because the per-worker rate limit was reached.
    pub icmp_rate_limited: u64,
    /// Frames whose partial (tx-offload) L4 checksum was completed.
    pub checksums_completed: u64,
    /// Packets decided by the policy classifier (conntrack misses and re-checks).
    pub policy_classified: u64,
    /// Packets that took a cached conntrack verdict.
    pub conntrack_hits: u64,
    /// Policy log records not kept because of the rate limit.
    pub policy_logs_suppressed: u64,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx: 0,
            tx: 0,
            generated: 0,
            consumed: 0,
            handoff_in: 0,
            handoff_out: 0,
            neighbor_replies: 0,
            icmp_errors: [0; IcmpErrorKind::ALL.len()],
            icmp_rate_limited: 0,
            checksums_completed: 0,
            policy_classified: 0,
            conntrack_hits: 0,
            policy_logs_suppressed: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl Counters {
    /// Counts one drop.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// The count for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// ICMP errors sent of one kind.
    pub fn icmp_sent(&self, kind: IcmpErrorKind) -> u64 {
        self.icmp_errors[kind as usize]
    }

    /// Adds another worker's counters to these.
    pub fn merge(&mut self, other: &Counters) {
        self.rx += other.rx;
        self.tx += other.tx;
        self.generated += other.generated;
        self.consumed += other.consumed;
        self.handoff_in += other.handoff_in;
        self.handoff_out += other.handoff_out;
        self.neighbor_replies += other.neighbor_replies;
        self.icmp_rate_limited += other.icmp_rate_limited;
        self.checksums_completed += other.checksums_completed;
        self.policy_classified += other.policy_classified;
        self.conntrack_hits += other.conntrack_hits;
        self.policy_logs_suppressed += other.policy_logs_suppressed;
        for (a, b) in self.icmp_errors.iter_mut().zip(other.icmp_errors) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(other.drops) {
            *a += b;
        }
    }

    /// Checks the accounting identity of the type doc: every frame that came in went out,
    /// was dropped for a reason, or was consumed; ICMP errors are frames that were both
    /// dropped and sent.
    pub fn check_accounting(&self) -> Result<(), String> {
        let icmp: u64 = self.icmp_errors.iter().sum();
        let came = self.rx + self.handoff_in + self.generated + icmp;
        let went = self.tx + self.handoff_out + self.total_drops() + self.consumed;
        if came == went {
            Ok(())
        } else {
            Err(format!(
                "rx {} + handoff in {} + generated {} + icmp errors {icmp} = {came}, but tx {} \
                 + handoff out {} + drops {} + consumed {} = {went}",
                self.rx,
                self.handoff_in,
                self.generated,
                self.tx,
                self.handoff_out,
                self.total_drops(),
                self.consumed
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order_and_names_are_unique() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?} out of order in ALL");
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, k) in IcmpErrorKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }

    #[test]
    fn merge_adds_and_accounting_balances() {
        let mut a = Counters {
            rx: 3,
            tx: 2,
            ..Default::default()
        };
        a.drop(DropReason::NoRoute);
        a.icmp_errors[IcmpErrorKind::Unreachable as usize] += 1;
        a.tx += 1;
        assert!(a.check_accounting().is_ok());
        let mut b = Counters::default();
        b.merge(&a);
        b.merge(&a);
        assert_eq!(b.rx, 6);
        assert_eq!(b.dropped(DropReason::NoRoute), 2);
        assert!(b.check_accounting().is_ok());
        b.rx += 1;
        assert!(b.check_accounting().is_err());
    }
}
