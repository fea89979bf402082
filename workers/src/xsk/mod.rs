//! AF_XDP sockets: the UMEM, the four rings, and sockets sharing one UMEM.
//!
//! # Why this is hand-written
//!
//! The usual routes to AF_XDP from Rust go through libxdp (`xsk-rs` builds it inside the
//! cargo registry and needs m4, clang, libelf and zlib) or are unmaintained (`afxdp`).
//! This module speaks to the kernel with `libc` alone, so `cargo build` works on a fresh
//! machine with no C toolchain, and it lets us shape the ring API around batches: a
//! worker reserves, writes and submits a whole burst with one shared atomic store, and
//! reads the other side's index only when its cached copy runs short (see [`ring`]).
//! xsk-rs stays useful as a reference and a cross-check, not as the production path.
//!
//! # Shape
//!
//! - [`Umem`]: the frame area, on 2 MiB huge pages when available, else on ordinary
//!   pages with a warning.
//! - [`XskSocket`]: one AF_XDP socket bound to an (interface, queue), owning its RX and TX
//!   rings and, since Linux 5.10 lets sockets on other devices or queues share a UMEM
//!   with rings of their own, its fill and completion rings too. The first socket of a
//!   UMEM registers it (`XDP_UMEM_REG`); later ones bind with `XDP_SHARED_UMEM`.
//! - [`ring`]: the producer and consumer cursors, which also run over heap memory so the
//!   index logic is tested without a kernel.
//!
//! # Addresses
//!
//! Every address is an offset from the start of the UMEM. The UMEM is registered in
//! aligned mode with a headroom of 0. Per `Documentation/networking/af_xdp.rst`, in
//! aligned mode "the kernel will mask the incoming addr" of the fill ring down to its
//! chunk, and it writes a received packet at `XDP_PACKET_HEADROOM` (256 bytes) plus the
//! UMEM headroom past the chunk start, so [`XskSocket::recv`] returns
//! `(frame base + 256, length)` for each packet. Give the frame back with
//! [`Umem::frame_base`] of that address. TX descriptors may point anywhere inside a
//! frame, as long as the packet does not cross the frame's end.
//!
//! # Safety
//!
//! `unsafe` here is confined to mmap/munmap, the raw socket calls, and the slot and
//! index accesses of the rings, each with its reason beside it. Addresses the kernel
//! hands back (RX, completion) are checked against the UMEM length in release builds
//! too; a bad one is counted ([`XskSocket::bad_descs`]) and dropped, never followed.

#![allow(unsafe_code)]

pub mod ring;
mod socket;
mod umem;

use std::io;

pub use ring::{Consumer, Desc, Producer, RingMem};
pub use socket::{FramePool, SharedView, SocketConfig, UmemView, XdpStats, XskSocket};
pub use umem::{Umem, UmemConfig};

/// Bytes the kernel keeps in front of every received packet in a UMEM frame (aligned
/// mode, UMEM headroom 0): an RX descriptor's address is its frame base plus this.
pub const XDP_PACKET_HEADROOM: u64 = 256;

/// What went wrong setting up or driving an AF_XDP socket.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// A size or option that the kernel would refuse, caught before asking it.
    #[error("invalid AF_XDP configuration: {0}")]
    InvalidConfig(String),
    /// The UMEM area could not be mapped at all (not even on ordinary pages).
    #[error("cannot map a UMEM of {len} bytes (mmap: {source}); lower frame_count or free memory")]
    UmemMmap {
        /// Bytes asked for.
        len: usize,
        /// The errno from mmap.
        source: io::Error,
    },
    /// A system call on an AF_XDP socket failed.
    #[error("AF_XDP socket on interface {interface} queue {queue}: {syscall} failed: {source}")]
    Syscall {
        /// The call and its option, e.g. `setsockopt(XDP_UMEM_REG)`.
        syscall: &'static str,
        /// Interface name and index, e.g. `eth0 (ifindex 2)`.
        interface: String,
        /// Queue id.
        queue: u32,
        /// The errno.
        source: io::Error,
    },
    /// `bind` kept answering EBUSY: another socket or program holds this queue.
    #[error(
        "AF_XDP bind to interface {interface} queue {queue} still EBUSY after {attempts} \
         attempts; another AF_XDP socket (or a zero-copy user) holds this queue"
    )]
    BindBusy {
        /// Interface name and index.
        interface: String,
        /// Queue id.
        queue: u32,
        /// How many binds were tried.
        attempts: u32,
    },
    /// The kernel's ring offsets (`XDP_MMAP_OFFSETS`) do not fit the mapped ring.
    #[error("AF_XDP socket on interface {interface} queue {queue}: kernel offsets for the {ring} ring do not fit its mapping")]
    RingLayout {
        /// Which ring.
        ring: &'static str,
        /// Interface name and index.
        interface: String,
        /// Queue id.
        queue: u32,
    },
}

/// `name (ifindex N)`, or `ifindex N` when the index names no interface in this
/// network namespace.
pub(crate) fn interface_label(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    format!("{} (ifindex {ifindex})", name.to_string_lossy())
}
