//! XDP programs assembled in Rust and loaded with the raw `bpf(2)` system call.
//!
//! weir steers frames into its AF_XDP sockets with tiny XDP programs:
//!
//! - [`XdpProgram::by_ifindex`] (pod veths, `weir0`): one program per worker for all of
//!   them, loaded once. Every frame goes to the socket in the XSKMAP slot a hash map
//!   gives its interface, `bpf_redirect_map(xsks, slots[ctx->ingress_ifindex],
//!   XDP_PASS)`; an interface the map does not list passes. Attaching a pod is two map
//!   updates and a link: no program is verified, and since every pod interface runs the
//!   same program the kernel's XDP dispatcher does not change (each change waits for an
//!   RCU grace period). Fifteen instructions.
//! - [`XdpProgram::redirect_all`]: every frame goes to the socket bound on the queue it
//!   arrived on, `bpf_redirect_map(xskmap, ctx->rx_queue_index, XDP_PASS)`. Five
//!   instructions; a program per interface (the tests and tools use it).
//! - [`XdpProgram::uplink`] (the node's NIC): only weir's traffic, meaning frames to a pod
//!   prefix, UDP to the WireGuard/VXLAN ports, and the replies to the flows weir
//!   translated to the node's address (source NAT: TCP/UDP to a port of the SNAT range,
//!   ICMP echo replies with an identifier in it), goes to the socket; ARP, the node's SSH,
//!   kubelet and API traffic go to the kernel (`XDP_PASS`). The classifier is described
//!   in `programs.rs`. A filter that changes (the node's address did) reaches a running
//!   program through [`XdpLink::update`], which swaps the program atomically.
//!
//! # Why hand-written
//!
//! The programs are a few dozen instructions whose only variable parts are a map file
//! descriptor, some prefixes and some ports. Writing them as typed instructions
//! ([`insn`]) and loading them with `bpf(2)` keeps `cargo build` free of a C toolchain,
//! clang's BPF target, libbpf, libelf and ELF relocation handling; the prefixes are
//! compiled into the program as immediates, so no LPM map has to be created, filled and
//! kept in sync. The cost is that the verifier is our type checker: every program is
//! loaded in the tests, and a rejection carries the verifier log in [`BpfError::Load`].
//!
//! # Attaching
//!
//! [`XdpLink::attach`] uses `BPF_LINK_CREATE` rather than netlink's `IFLA_XDP`: a link is
//! owned by its file descriptor, so the program is detached when the [`XdpLink`] is
//! dropped *and* when the agent dies, instead of being left behind on the interface to
//! eat traffic for sockets that no longer exist.
//!
//! # Testing the classifier with `BPF_PROG_TEST_RUN`
//!
//! A test run without `BPF_F_TEST_XDP_LIVE_FRAMES` executes the program and returns its
//! value without acting on it. `bpf_redirect_map` on an XSKMAP returns `XDP_REDIRECT` when
//! the queue has a socket and the low two bits of its flags (the [`MissAction`]) when it
//! has none. So with an empty map, "ours" and "not ours" both read `XDP_PASS` under the
//! production miss action. [`XdpProgram::uplink_with_miss_action`] builds the same
//! program with another miss action: with [`MissAction::Tx`], an empty map makes "ours"
//! return `XDP_TX` while "not ours" still returns `XDP_PASS`, so the tests observe the
//! classification through the real redirect call, and only the flags immediate differs
//! from production. The tests also put an AF_XDP socket in the map and check that the
//! production program then returns `XDP_REDIRECT`.
//!
//! # Safety
//!
//! The `unsafe` code is confined to `sys.rs`: the `bpf(2)` calls (each with a
//! `#[repr(C)]` prefix of `union bpf_attr` whose pointers borrow live Rust memory),
//! adopting the descriptors they return, and `if_nametoindex`/`if_indextoname`.

#![allow(unsafe_code)]

pub mod insn;
mod programs;
mod sys;

use std::ffi::{CStr, CString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use thiserror::Error;

pub use insn::{assemble, AsmError, Insn};
pub use programs::{MAX_SNAT_V4, MAX_SNAT_V6, MAX_UDP_PORTS, MAX_V4_PREFIXES, MAX_V6_PREFIXES};

/// `XDP_ABORTED`
pub const XDP_ABORTED: u32 = 0;
/// `XDP_DROP`
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`
pub const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`
pub const XDP_REDIRECT: u32 = 4;

/// WireGuard's registered UDP port.
pub const WIREGUARD_PORT: u16 = 51820;
/// VXLAN's IANA UDP port (RFC 7348 section 5).
pub const VXLAN_PORT: u16 = 4789;

/// `XDP_FLAGS_SKB_MODE`
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Size of the verifier log buffer used when a load is retried to explain a failure.
const VERIFIER_LOG_SIZE: usize = 4 << 20;
/// The tail of the verifier log kept in [`BpfError::Load`] (the reason is at the end).
const VERIFIER_LOG_KEEP: usize = 64 << 10;

/// A kernel error number, displayed with its description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// Everything that can go wrong creating, loading, attaching or running XDP objects.
#[derive(Debug, Error)]
pub enum BpfError {
    /// `BPF_MAP_CREATE` failed.
    #[error("creating BPF map {map} failed: {errno} (CAP_BPF and CAP_NET_ADMIN are needed)")]
    MapCreate {
        /// The map's name.
        map: &'static str,
        /// The kernel's error.
        errno: Errno,
    },
    /// `BPF_MAP_UPDATE_ELEM` or `BPF_MAP_DELETE_ELEM` on the XSKMAP failed.
    #[error("{op} of queue {queue} in XSKMAP {map_fd} failed: {errno}")]
    MapElem {
        /// `"set"` or `"remove"`.
        op: &'static str,
        /// The key.
        queue: u32,
        /// The map's descriptor.
        map_fd: RawFd,
        /// The kernel's error.
        errno: Errno,
    },
    /// The program did not assemble (a bug in the program builder).
    #[error("assembling XDP program {program} failed: {source}")]
    Assemble {
        /// Which program.
        program: &'static str,
        /// What the assembler found.
        source: AsmError,
    },
    /// `BPF_PROG_LOAD` failed; `log` is the verifier's explanation (its last 64 KiB).
    #[error("loading XDP program {program} ({slots} instructions) failed: {errno}; verifier log:\n{log}")]
    Load {
        /// Which program.
        program: &'static str,
        /// Its length in instruction slots.
        slots: usize,
        /// The kernel's error.
        errno: Errno,
        /// The verifier log at log level 1 (possibly empty, for example on EPERM).
        log: String,
    },
    /// `BPF_PROG_TEST_RUN` failed (frames shorter than 14 bytes are refused with EINVAL).
    #[error("test run of XDP program {program} on a {frame_len}-byte frame failed: {errno}")]
    TestRun {
        /// Which program.
        program: &'static str,
        /// Length of the frame given.
        frame_len: usize,
        /// The kernel's error.
        errno: Errno,
    },
    /// `BPF_LINK_CREATE` failed in every mode tried.
    #[error("attaching XDP program {program} to {interface} (ifindex {ifindex}) in {mode:?} mode failed: {errno}{}",
        native_errno.map(|e| format!(" (native mode failed first: {e})")).unwrap_or_default())]
    Attach {
        /// Which program.
        program: &'static str,
        /// The interface's name, or `?` if it has none in this namespace.
        interface: String,
        /// Its index.
        ifindex: u32,
        /// The mode asked for.
        mode: AttachMode,
        /// The error of the last attempt.
        errno: Errno,
        /// With [`AttachMode::NativeOrGeneric`], the error of the native attempt.
        native_errno: Option<Errno>,
    },
    /// `if_nametoindex` found no such interface in this network namespace.
    #[error("no network interface named {interface:?} in this network namespace: {errno}")]
    NoSuchInterface {
        /// The name asked for.
        interface: String,
        /// The error.
        errno: Errno,
    },
    /// The uplink filter has more entries than the program is built for.
    #[error("the uplink filter has {count} {what}, at most {max} are supported")]
    FilterTooLarge {
        /// What overflowed.
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A SNAT match with an empty port range.
    #[error("the SNAT port range {first}..={last} of {addr} is empty: the first port must not exceed the last")]
    SnatRange {
        /// The address of the match.
        addr: IpAddr,
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },
    /// `BPF_LINK_UPDATE` failed.
    #[error("replacing the XDP program of link {link_fd} with {program} failed: {errno}")]
    LinkUpdate {
        /// The new program.
        program: &'static str,
        /// The link's descriptor.
        link_fd: RawFd,
        /// The kernel's error.
        errno: Errno,
    },
    /// A prefix length beyond the address size.
    #[error("invalid prefix {prefix}: the length must be at most {max}")]
    PrefixLength {
        /// The prefix as written.
        prefix: String,
        /// 32 or 128.
        max: u8,
    },
}

impl BpfError {
    /// The kernel's error number, if this error came from a system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BpfError::MapCreate { errno, .. }
            | BpfError::MapElem { errno, .. }
            | BpfError::Load { errno, .. }
            | BpfError::TestRun { errno, .. }
            | BpfError::Attach { errno, .. }
            | BpfError::LinkUpdate { errno, .. }
            | BpfError::NoSuchInterface { errno, .. } => Some(errno.0),
            _ => None,
        }
    }
}

/// A `BPF_MAP_TYPE_XSKMAP`: receive queue index -> AF_XDP socket.
#[derive(Debug)]
pub struct XskMap {
    fd: OwnedFd,
    max_entries: u32,
}

impl XskMap {
    /// A map with room for queues `0..max_entries`.
    pub fn new(max_entries: u32) -> Result<XskMap, BpfError> {
        let fd = sys::map_create(sys::BPF_MAP_TYPE_XSKMAP, 4, 4, max_entries, "weir_xsks")
            .map_err(|e| BpfError::MapCreate {
                map: "weir_xsks",
                errno: Errno(e),
            })?;
        Ok(XskMap { fd, max_entries })
    }

    /// Frames received on `queue` go to the AF_XDP socket `xsk_fd` (replacing any other).
    pub fn set(&self, queue: u32, xsk_fd: RawFd) -> Result<(), BpfError> {
        // A negative descriptor becomes a huge u32 the kernel rejects with EBADF.
        sys::map_update_u32(self.fd(), queue, xsk_fd as u32)
            .map_err(|e| self.elem_error("set", queue, e))
    }

    /// Frames received on `queue` take the program's miss action again.
    pub fn remove(&self, queue: u32) -> Result<(), BpfError> {
        sys::map_delete_u32(self.fd(), queue).map_err(|e| self.elem_error("remove", queue, e))
    }

    /// The map's descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The number of queues the map holds.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    fn elem_error(&self, op: &'static str, queue: u32, errno: i32) -> BpfError {
        BpfError::MapElem {
            op,
            queue,
            map_fd: self.fd(),
            errno: Errno(errno),
        }
    }
}

/// A `BPF_MAP_TYPE_HASH` from interface index to XSKMAP slot: which socket the
/// [`XdpProgram::by_ifindex`] program gives each interface's frames.
#[derive(Debug)]
pub struct SlotMap {
    fd: OwnedFd,
    max_entries: u32,
}

impl SlotMap {
    /// A map with room for `max_entries` interfaces.
    pub fn new(max_entries: u32) -> Result<SlotMap, BpfError> {
        let fd = sys::map_create(sys::BPF_MAP_TYPE_HASH, 4, 4, max_entries, "weir_slots").map_err(
            |e| BpfError::MapCreate {
                map: "weir_slots",
                errno: Errno(e),
            },
        )?;
        Ok(SlotMap { fd, max_entries })
    }

    /// Frames from interface `ifindex` go to the socket in XSKMAP slot `slot`.
    pub fn set(&self, ifindex: u32, slot: u32) -> Result<(), BpfError> {
        sys::map_update_u32(self.fd(), ifindex, slot).map_err(|e| BpfError::MapElem {
            op: "set",
            queue: ifindex,
            map_fd: self.fd(),
            errno: Errno(e),
        })
    }

    /// Frames from interface `ifindex` pass to the kernel again.
    pub fn remove(&self, ifindex: u32) -> Result<(), BpfError> {
        sys::map_delete_u32(self.fd(), ifindex).map_err(|e| BpfError::MapElem {
            op: "remove",
            queue: ifindex,
            map_fd: self.fd(),
            errno: Errno(e),
        })
    }

    /// The map's descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The number of interfaces the map holds at most.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }
}

/// What the uplink program hands to weir: frames to these prefixes, UDP to these
/// destination ports (whatever the destination address), and the replies to source-NATed
/// flows ([`SnatMatch`]). Host bits of a prefix are ignored (`198.19.7.1/15` means
/// `198.18.0.0/15`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UplinkFilter {
    /// IPv4 prefixes (pod CIDRs), at most [`MAX_V4_PREFIXES`].
    pub v4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 prefixes (pod CIDRs), at most [`MAX_V6_PREFIXES`].
    pub v6: Vec<(Ipv6Addr, u8)>,
    /// UDP destination ports ([`WIREGUARD_PORT`], [`VXLAN_PORT`]), at most [`MAX_UDP_PORTS`].
    pub udp_ports: Vec<u16>,
    /// The node addresses pods' traffic is translated to, with the ports translated
    /// flows use: at most [`MAX_SNAT_V4`] IPv4 and [`MAX_SNAT_V6`] IPv6 entries.
    pub snat: Vec<SnatMatch>,
}

/// The replies to flows translated to `addr`: TCP or UDP to `addr` with a destination
/// port in `ports`, and ICMP echo replies (ICMPv4 type 0, ICMPv6 type 129) to `addr`
/// whose identifier is in `ports` (source NAT translates an echo identifier as it does a
/// port). Everything else to `addr` is the node's own traffic and goes to the kernel.
/// IPv6 packets with extension headers before the transport header go to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnatMatch {
    /// The node's address on the uplink.
    pub addr: IpAddr,
    /// The SNAT port range; must not be empty.
    pub ports: RangeInclusive<u16>,
}

/// What a program returns for a frame it would redirect when the receive queue has no
/// socket in the map (the low two bits of `bpf_redirect_map`'s flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissAction {
    /// Give the frame to the kernel (production: nothing is lost while sockets come up).
    #[default]
    Pass,
    /// Drop the frame.
    Drop,
    /// Bounce the frame out of the interface it came in on. Used by the tests to observe
    /// the classification with an empty map; nothing else should want this.
    Tx,
}

impl MissAction {
    /// The XDP action value.
    pub fn action(self) -> u32 {
        match self {
            MissAction::Pass => XDP_PASS,
            MissAction::Drop => XDP_DROP,
            MissAction::Tx => XDP_TX,
        }
    }
}

/// A loaded (verified) XDP program. Dropping it closes the descriptor; the kernel frees
/// the program when no link holds it either.
#[derive(Debug)]
pub struct XdpProgram {
    fd: OwnedFd,
    name: &'static str,
    slots: usize,
}

impl XdpProgram {
    /// Everything to the socket bound on the receiving queue:
    /// `bpf_redirect_map(map, ctx->rx_queue_index, XDP_PASS)`. For pod interfaces.
    pub fn redirect_all(map: &XskMap) -> Result<XdpProgram, BpfError> {
        XdpProgram::load(
            "weir_all",
            &programs::redirect_all(map.fd(), MissAction::Pass),
        )
    }

    /// Every frame of the interfaces `slots` lists to the socket in their XSKMAP slot:
    /// `bpf_redirect_map(xsks, slots[ctx->ingress_ifindex], XDP_PASS)`, and `XDP_PASS`
    /// for an interface it does not list. One program serves all of a worker's pod
    /// interfaces, so attaching one is two map updates and a link, not a program load
    /// (and the kernel's XDP dispatcher does not change).
    pub fn by_ifindex(slots: &SlotMap, xsks: &XskMap) -> Result<XdpProgram, BpfError> {
        XdpProgram::by_ifindex_with_miss_action(slots, xsks, MissAction::Pass)
    }

    /// [`XdpProgram::by_ifindex`] with another action for a slot without a socket (an
    /// unlisted interface still passes).
    pub fn by_ifindex_with_miss_action(
        slots: &SlotMap,
        xsks: &XskMap,
        miss: MissAction,
    ) -> Result<XdpProgram, BpfError> {
        XdpProgram::load(
            "weir_pods",
            &programs::by_ifindex(slots.fd(), xsks.fd(), miss),
        )
    }

    /// Only weir's traffic to the sockets: IPv4/IPv6 frames (untagged or behind one
    /// 802.1Q tag) whose destination is in one of the prefixes, or UDP to one of the
    /// ports; everything else `XDP_PASS`. A queue without a socket passes too.
    pub fn uplink(map: &XskMap, filter: &UplinkFilter) -> Result<XdpProgram, BpfError> {
        XdpProgram::uplink_with_miss_action(map, filter, MissAction::Pass)
    }

    /// [`XdpProgram::uplink`] with another action for a queue without a socket; see the
    /// module documentation for why the tests use [`MissAction::Tx`].
    pub fn uplink_with_miss_action(
        map: &XskMap,
        filter: &UplinkFilter,
        miss: MissAction,
    ) -> Result<XdpProgram, BpfError> {
        XdpProgram::load("weir_uplink", &programs::uplink(map.fd(), filter, miss)?)
    }

    /// Verifies and loads an arbitrary XDP program.
    pub fn load(name: &'static str, insns: &[Insn]) -> Result<XdpProgram, BpfError> {
        let raw = assemble(insns).map_err(|source| BpfError::Assemble {
            program: name,
            source,
        })?;
        let license: &CStr = c"Apache-2.0";
        let load = |log| {
            sys::prog_load(
                sys::BPF_PROG_TYPE_XDP,
                sys::BPF_XDP,
                &raw,
                license,
                name,
                log,
            )
        };
        // The first attempt runs without a log: at log level 1 the verifier records every
        // instruction it walks and fails with ENOSPC when that overflows the buffer,
        // even for a good program. Only a failure is retried with the log on.
        let fd = match load(None) {
            Ok(fd) => fd,
            Err(first) => {
                let mut buf = vec![0u8; VERIFIER_LOG_SIZE];
                match load(Some((&mut buf, 1))) {
                    Ok(fd) => fd,
                    Err(errno) => {
                        return Err(BpfError::Load {
                            program: name,
                            slots: raw.len(),
                            errno: Errno(if errno == libc::ENOSPC { first } else { errno }),
                            log: log_text(&buf),
                        })
                    }
                }
            }
        };
        Ok(XdpProgram {
            fd,
            name,
            slots: raw.len(),
        })
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (receive queue 0) and
    /// returns its XDP action ([`XDP_PASS`], [`XDP_REDIRECT`], ...). Nothing is
    /// transmitted or redirected. The kernel refuses frames shorter than an Ethernet
    /// header (14 bytes) with EINVAL.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, BpfError> {
        sys::prog_test_run(self.fd(), frame).map_err(|e| BpfError::TestRun {
            program: self.name,
            frame_len: frame.len(),
            errno: Errno(e),
        })
    }

    /// The program's descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The program's length in instruction slots as the kernel counts them (`insn_cnt`:
    /// the two-slot map load counts twice).
    pub fn instructions(&self) -> usize {
        self.slots
    }

    /// The name given to the kernel (`bpftool prog` shows it).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// How to attach an XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`); required for zero-copy AF_XDP.
    Native,
    /// After the skb is built (`XDP_FLAGS_SKB_MODE`); works on every interface, slower.
    Generic,
    /// Native if the driver supports it, generic otherwise.
    NativeOrGeneric,
}

/// An XDP program attached to an interface through a bpf_link. Dropping it closes the
/// link, which detaches the program; the kernel does the same when the process dies.
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    ifindex: u32,
    native: bool,
}

impl XdpLink {
    /// Attaches `prog` to interface `ifindex` of the calling thread's network namespace.
    pub fn attach(prog: &XdpProgram, ifindex: u32, mode: AttachMode) -> Result<XdpLink, BpfError> {
        let create = |flags| sys::link_create(prog.fd(), ifindex, sys::BPF_XDP, flags);
        let error = |errno: i32, native_errno: Option<i32>| BpfError::Attach {
            program: prog.name,
            interface: sys::if_indextoname(ifindex).unwrap_or_else(|| "?".to_owned()),
            ifindex,
            mode,
            errno: Errno(errno),
            native_errno: native_errno.map(Errno),
        };
        let (fd, native) = match mode {
            AttachMode::Native => (
                create(XDP_FLAGS_DRV_MODE).map_err(|e| error(e, None))?,
                true,
            ),
            AttachMode::Generic => (
                create(XDP_FLAGS_SKB_MODE).map_err(|e| error(e, None))?,
                false,
            ),
            AttachMode::NativeOrGeneric => match create(XDP_FLAGS_DRV_MODE) {
                Ok(fd) => (fd, true),
                Err(native) => (
                    create(XDP_FLAGS_SKB_MODE).map_err(|e| error(e, Some(native)))?,
                    false,
                ),
            },
        };
        Ok(XdpLink {
            fd,
            ifindex,
            native,
        })
    }

    /// Replaces the link's program with `prog` in one step (`BPF_LINK_UPDATE`): every
    /// frame meets either the old program or the new one, and the link keeps its mode.
    /// The caller keeps `prog` or not; the link holds its own reference.
    pub fn update(&self, prog: &XdpProgram) -> Result<(), BpfError> {
        sys::link_update(self.fd(), prog.fd()).map_err(|e| BpfError::LinkUpdate {
            program: prog.name,
            link_fd: self.fd(),
            errno: Errno(e),
        })
    }

    /// Whether the program runs in the driver (else generic/skb mode).
    pub fn native(&self) -> bool {
        self.native
    }

    /// The interface the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The link's descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32, BpfError> {
    let error = |errno| BpfError::NoSuchInterface {
        interface: name.to_owned(),
        errno: Errno(errno),
    };
    let c_name = CString::new(name).map_err(|_| error(libc::EINVAL))?;
    sys::if_nametoindex(&c_name).map_err(error)
}

/// The log up to its NUL, keeping the last [`VERIFIER_LOG_KEEP`] bytes.
fn log_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let start = end.saturating_sub(VERIFIER_LOG_KEEP);
    String::from_utf8_lossy(&buf[start..end]).into_owned()
}
