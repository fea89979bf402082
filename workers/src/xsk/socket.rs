//! One AF_XDP socket: setup (`socket`, ring sizes, `mmap`, `bind`) and the batched
//! ring operations a worker drives.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use super::ring::{check_ring_size, Consumer, Desc, Producer, RingMem};
use super::{interface_label, Umem, XskError};

/// Bind attempts while the queue answers EBUSY (a socket closed just before may still be
/// releasing it); the waits between them double from 10 ms to 160 ms.
const BIND_ATTEMPTS: u32 = 6;
const BIND_FIRST_WAIT: Duration = Duration::from_millis(10);

/// Ring sizes and bind options of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    /// RX ring entries (power of two).
    pub rx_size: u32,
    /// TX ring entries (power of two).
    pub tx_size: u32,
    /// Ask for zero-copy (`XDP_ZEROCOPY`); false forces copy mode (`XDP_COPY`), the only
    /// mode veth has.
    pub zero_copy: bool,
    /// Bind with `XDP_USE_NEED_WAKEUP`: the kernel says when it must be kicked.
    pub need_wakeup: bool,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            rx_size: 2048,
            tx_size: 2048,
            zero_copy: false,
            need_wakeup: true,
        }
    }
}

/// Counters the kernel keeps per socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Packets dropped for reasons other than an invalid descriptor.
    pub rx_dropped: u64,
    /// Invalid descriptors met on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors met on the TX ring.
    pub tx_invalid_descs: u64,
    /// Packets dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a packet arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// An AF_XDP socket bound to one queue of one interface.
///
/// It owns its four rings; the fill and completion rings are absent only on a socket
/// that shares the UMEM with a socket on the *same* interface and queue (the kernel then
/// uses that socket's rings, and [`XskSocket::fill`] / [`XskSocket::complete`] do
/// nothing here).
#[derive(Debug)]
pub struct XskSocket {
    rx: Consumer<Desc>,
    tx: Producer<Desc>,
    fill: Option<Producer<u64>>,
    comp: Option<Consumer<u64>>,
    ifindex: u32,
    queue: u32,
    need_wakeup: bool,
    zero_copy: bool,
    umem_start: usize,
    umem_len: u64,
    bad_descs: u64,
    // Declared last so that it is closed after the rings are unmapped.
    fd: OwnedFd,
}

/// What binding reads of a [`Umem`]: its place, size, frame size and ring sizes.
#[derive(Clone, Copy, Debug)]
pub struct UmemView {
    start: usize,
    len: usize,
    frame_size: u32,
    config: super::UmemConfig,
}

impl UmemView {
    /// The view of `umem`.
    pub fn of(umem: &Umem) -> UmemView {
        UmemView {
            start: umem.as_ptr() as usize,
            len: umem.len(),
            frame_size: umem.frame_size(),
            config: *umem.config(),
        }
    }
}

/// What binding reads of the socket whose UMEM a new one shares.
#[derive(Clone, Copy, Debug)]
pub struct SharedView {
    fd: RawFd,
    ifindex: u32,
    queue: u32,
    umem_start: usize,
    zero_copy: bool,
    need_wakeup: bool,
}

impl SharedView {
    fn of(s: &XskSocket) -> SharedView {
        SharedView {
            fd: s.fd(),
            ifindex: s.ifindex,
            queue: s.queue,
            umem_start: s.umem_start,
            zero_copy: s.zero_copy,
            need_wakeup: s.need_wakeup,
        }
    }
}

// SAFETY: a socket owns its descriptor and its ring mappings outright (nothing else
// points into them), so it may move to another thread as a whole; it is not `Sync`.
unsafe impl Send for XskSocket {}

impl XskSocket {
    /// Creates a socket, sets up its rings and binds it to `queue` of `ifindex` (in the
    /// calling thread's network namespace).
    ///
    /// The first socket of a UMEM registers it (`XDP_UMEM_REG`); later ones pass
    /// `shared = Some(&first)` (any socket already bound to this UMEM) and bind with
    /// `XDP_SHARED_UMEM`; such a socket inherits copy/zero-copy mode and `need_wakeup`
    /// from the UMEM's first socket, so `cfg` must ask for the same. A bind answered with EBUSY is retried with backoff (6 attempts,
    /// 10 to 160 ms apart).
    pub fn bind(
        umem: &Umem,
        ifindex: u32,
        queue: u32,
        cfg: &SocketConfig,
        shared: Option<&XskSocket>,
    ) -> Result<XskSocket, XskError> {
        // SAFETY: `umem` and `shared` are borrowed for the whole call.
        unsafe {
            XskSocket::bind_views(
                UmemView::of(umem),
                ifindex,
                queue,
                cfg,
                shared.map(SharedView::of),
            )
        }
    }

    /// [`XskSocket::bind`] from copies of what it reads of the UMEM and of the socket to
    /// share it with, so that another thread than the UMEM's owner can bind (the bind
    /// takes the kernel's RTNL lock, which a burst of interface changes holds for tens of
    /// milliseconds: a worker hands that wait to a helper and keeps forwarding).
    ///
    /// # Safety
    /// The UMEM `umem` was taken from, and the socket `shared` was taken from, must stay
    /// alive (mapped, open) until this returns.
    pub unsafe fn bind_views(
        umem: UmemView,
        ifindex: u32,
        queue: u32,
        cfg: &SocketConfig,
        shared: Option<SharedView>,
    ) -> Result<XskSocket, XskError> {
        check_ring_size("RX", cfg.rx_size)?;
        check_ring_size("TX", cfg.tx_size)?;
        let umem_start = umem.start;
        if let Some(first) = &shared {
            if first.umem_start != umem_start {
                return Err(XskError::InvalidConfig(format!(
                    "socket on interface {} queue {} shares a different UMEM than the one given",
                    interface_label(first.ifindex),
                    first.queue
                )));
            }
            // The kernel refuses mode flags with XDP_SHARED_UMEM (EINVAL): a sharing
            // socket inherits copy/zero-copy and need_wakeup from the UMEM's first socket.
            if first.zero_copy != cfg.zero_copy || first.need_wakeup != cfg.need_wakeup {
                return Err(XskError::InvalidConfig(format!(
                    "a socket sharing the UMEM of interface {} queue {} inherits its mode \
                     (zero_copy {}, need_wakeup {}); the config asks zero_copy {}, need_wakeup {}",
                    interface_label(first.ifindex),
                    first.queue,
                    first.zero_copy,
                    first.need_wakeup,
                    cfg.zero_copy,
                    cfg.need_wakeup
                )));
            }
        }
        let err = |syscall: &'static str, source: io::Error| XskError::Syscall {
            syscall,
            interface: interface_label(ifindex),
            queue,
            source,
        };

        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(err("socket(AF_XDP)", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        if shared.is_none() {
            let reg = libc::xdp_umem_reg {
                addr: umem_start as u64,
                len: umem.len as u64,
                chunk_size: umem.frame_size,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            set_opt(&fd, libc::XDP_UMEM_REG, &reg)
                .map_err(|e| err("setsockopt(XDP_UMEM_REG)", e))?;
        }
        // Same device and queue as the socket we share with: the kernel shares its buffer
        // pool, fill and completion rings, and refuses rings of our own (EINVAL).
        let own_fill_comp = shared
            .as_ref()
            .is_none_or(|s| s.ifindex != ifindex || s.queue != queue);
        let ucfg = umem.config;
        if own_fill_comp {
            set_opt(&fd, libc::XDP_UMEM_FILL_RING, &ucfg.fill_size)
                .map_err(|e| err("setsockopt(XDP_UMEM_FILL_RING)", e))?;
            set_opt(&fd, libc::XDP_UMEM_COMPLETION_RING, &ucfg.comp_size)
                .map_err(|e| err("setsockopt(XDP_UMEM_COMPLETION_RING)", e))?;
        }
        set_opt(&fd, libc::XDP_RX_RING, &cfg.rx_size)
            .map_err(|e| err("setsockopt(XDP_RX_RING)", e))?;
        set_opt(&fd, libc::XDP_TX_RING, &cfg.tx_size)
            .map_err(|e| err("setsockopt(XDP_TX_RING)", e))?;

        let off = mmap_offsets(&fd).map_err(|e| err("getsockopt(XDP_MMAP_OFFSETS)", e))?;
        let layout = |ring: &'static str| XskError::RingLayout {
            ring,
            interface: interface_label(ifindex),
            queue,
        };
        let rx = map_ring::<Desc>(&fd, libc::XDP_PGOFF_RX_RING, &off.rx, cfg.rx_size)
            .map_err(|e| err("mmap(RX ring)", e))?
            .ok_or_else(|| layout("RX"))?
            .into_consumer();
        let tx = map_ring::<Desc>(&fd, libc::XDP_PGOFF_TX_RING, &off.tx, cfg.tx_size)
            .map_err(|e| err("mmap(TX ring)", e))?
            .ok_or_else(|| layout("TX"))?
            .into_producer();
        let (fill, comp) = if own_fill_comp {
            let fill = map_ring::<u64>(
                &fd,
                libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
                &off.fr,
                ucfg.fill_size,
            )
            .map_err(|e| err("mmap(fill ring)", e))?
            .ok_or_else(|| layout("fill"))?
            .into_producer();
            let comp = map_ring::<u64>(
                &fd,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
                &off.cr,
                ucfg.comp_size,
            )
            .map_err(|e| err("mmap(completion ring)", e))?
            .ok_or_else(|| layout("completion"))?
            .into_consumer();
            (Some(fill), Some(comp))
        } else {
            (None, None)
        };

        let mut flags = if cfg.zero_copy {
            libc::XDP_ZEROCOPY
        } else {
            libc::XDP_COPY
        };
        if cfg.need_wakeup {
            flags |= libc::XDP_USE_NEED_WAKEUP;
        }
        let mut addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        if let Some(first) = &shared {
            addr.sxdp_flags = libc::XDP_SHARED_UMEM;
            addr.sxdp_shared_umem_fd = first.fd as u32;
        }
        bind_with_retry(&fd, &addr).map_err(|e| match e {
            BindFailure::Busy(attempts) => XskError::BindBusy {
                interface: interface_label(ifindex),
                queue,
                attempts,
            },
            BindFailure::Os(e) => err("bind", e),
        })?;

        Ok(XskSocket {
            rx,
            tx,
            fill,
            comp,
            ifindex,
            queue,
            need_wakeup: cfg.need_wakeup,
            zero_copy: cfg.zero_copy,
            umem_start,
            umem_len: umem.len as u64,
            bad_descs: 0,
            fd,
        })
    }

    /// What [`XskSocket::bind_views`] needs of this socket to share its UMEM.
    pub fn shared_view(&self) -> SharedView {
        SharedView::of(self)
    }

    /// The socket's file descriptor (for poll, or an XSKMAP entry).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The interface index this socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Moves as many frame addresses as fit from the end of `free` into the fill ring;
    /// returns how many moved.
    pub fn fill(&mut self, free: &mut impl FramePool) -> usize {
        self.fill_from(free, usize::MAX)
    }

    /// Moves up to `max` frame addresses from the end of `free` into the fill ring (as
    /// many as fit); returns how many moved.
    pub fn fill_from(&mut self, free: &mut impl FramePool, max: usize) -> usize {
        let Some(fill) = self.fill.as_mut() else {
            return 0;
        };
        let frames = free.frames();
        let want = u32::try_from(frames.len().min(max)).unwrap_or(u32::MAX);
        let n = fill.reserve(want);
        let start = frames.len() - n as usize;
        for (k, &addr) in frames[start..].iter().enumerate() {
            fill.write(k as u32, addr);
        }
        fill.submit();
        free.keep(start);
        n as usize
    }

    /// Appends to `out` the frame addresses still waiting in the fill ring (lent to the
    /// kernel and not taken yet), and returns how many. Call it on a socket that no XDP
    /// program redirects to any more, after its RX ring is drained, just before closing
    /// it: the kernel takes fill entries only to receive, so the answer is then exact
    /// and those frames are the caller's again once the socket is dropped. Addresses
    /// outside the UMEM are skipped and counted in [`XskSocket::bad_descs`].
    pub fn unfilled(&mut self, out: &mut Vec<u64>) -> usize {
        let Some(fill) = self.fill.as_ref() else {
            return 0;
        };
        let mut lent = Vec::new();
        fill.unconsumed(&mut lent);
        let start = out.len();
        for addr in lent {
            if addr < self.umem_len {
                out.push(addr);
            } else {
                self.bad_descs += 1;
            }
        }
        out.len() - start
    }

    /// Moves every address the completion ring holds (frames the kernel finished
    /// sending) into `free`; returns how many.
    pub fn complete(&mut self, free: &mut impl FramePool) -> usize {
        let Some(comp) = self.comp.as_mut() else {
            return 0;
        };
        let n = comp.peek(u32::MAX);
        free.reserve_frames(n as usize);
        let mut moved = 0;
        for k in 0..n {
            let addr = comp.read(k);
            if addr < self.umem_len {
                free.push_frame(addr);
                moved += 1;
            } else {
                self.bad_descs += 1;
            }
        }
        comp.release();
        moved
    }

    /// Appends `(addr, len)` of up to `max` received packets to `out`; returns how many.
    ///
    /// `addr` is the start of the packet data inside the UMEM: its frame base plus
    /// [`super::XDP_PACKET_HEADROOM`]. Recycle the frame with [`Umem::frame_base`].
    pub fn recv(&mut self, out: &mut Vec<(u64, u32)>, max: usize) -> usize {
        let n = self.rx.peek(u32::try_from(max).unwrap_or(u32::MAX));
        out.reserve(n as usize);
        let mut taken = 0;
        for k in 0..n {
            let d = self.rx.read(k);
            if d.addr.saturating_add(u64::from(d.len)) <= self.umem_len {
                out.push((d.addr, d.len));
                taken += 1;
            } else {
                self.bad_descs += 1;
            }
        }
        self.rx.release();
        taken
    }

    /// Queues as many `(addr, len)` frames as fit in the TX ring, in order; returns how
    /// many were accepted (the caller keeps the rest). Call [`XskSocket::kick`] after.
    pub fn send(&mut self, frames: &[(u64, u32)]) -> usize {
        let n = self
            .tx
            .reserve(u32::try_from(frames.len()).unwrap_or(u32::MAX));
        for (k, &(addr, len)) in frames[..n as usize].iter().enumerate() {
            self.tx.write(
                k as u32,
                Desc {
                    addr,
                    len,
                    options: 0,
                },
            );
        }
        self.tx.submit();
        n as usize
    }

    /// Wakes the kernel to transmit (`sendto` with `MSG_DONTWAIT`) when the TX ring asks
    /// for it, or always when the socket was bound without `need_wakeup`. EAGAIN, EBUSY,
    /// ENOBUFS and ENETDOWN mean "try again later" and are not errors.
    pub fn kick(&self) -> Result<(), XskError> {
        if self.need_wakeup && !self.tx.needs_wakeup() {
            return Ok(());
        }
        // SAFETY: sendto with no buffer and no address on a descriptor we own.
        let r = unsafe {
            libc::sendto(
                self.fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => Ok(()),
            _ => Err(self.syscall_error("sendto (TX wakeup)", e)),
        }
    }

    /// TX descriptors submitted that the kernel has not yet taken. In copy mode each wakeup
    /// takes at most a small budget (32 frames on current kernels), so a sender kicks
    /// again while this is not zero.
    pub fn tx_pending(&self) -> u32 {
        let mem = self.tx.mem();
        mem.producer_index().wrapping_sub(mem.consumer_index())
    }

    /// Wakes the kernel to refill from the fill ring (`recvfrom` with `MSG_DONTWAIT`),
    /// for when [`XskSocket::fill_needs_wakeup`] says so.
    pub fn wake_rx(&self) -> Result<(), XskError> {
        // SAFETY: recvfrom with no buffer and no address on a descriptor we own.
        let r = unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => Ok(()),
            _ => Err(self.syscall_error("recvfrom (fill wakeup)", e)),
        }
    }

    /// Waits up to `timeout` for received packets (`poll` for POLLIN); returns whether
    /// some are waiting.
    pub fn wait_rx(&self, timeout: Duration) -> Result<bool, XskError> {
        if self.rx_pending() {
            return Ok(true);
        }
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(self.rx_pending());
            }
            return Err(self.syscall_error("poll", e));
        }
        Ok(self.rx_pending())
    }

    /// Whether the kernel asked to be woken to use the fill ring.
    pub fn fill_needs_wakeup(&self) -> bool {
        self.fill.as_ref().is_some_and(Producer::needs_wakeup)
    }

    /// Whether the kernel asked to be woken to transmit.
    pub fn tx_needs_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    /// Whether received descriptors are waiting in the RX ring.
    pub fn rx_pending(&self) -> bool {
        self.rx.pending()
    }

    /// Free slots in the TX ring right now.
    pub fn tx_free(&mut self) -> u32 {
        self.tx.free(u32::MAX)
    }

    /// Descriptors from the kernel (RX, completion) that pointed outside the UMEM and
    /// were dropped. Always 0 unless the kernel misbehaves.
    pub fn bad_descs(&self) -> u64 {
        self.bad_descs
    }

    /// The kernel's counters for this socket (`getsockopt(XDP_STATISTICS)`).
    pub fn statistics(&self) -> Result<XdpStats, XskError> {
        let mut s = libc::xdp_statistics {
            rx_dropped: 0,
            rx_invalid_descs: 0,
            tx_invalid_descs: 0,
            rx_ring_full: 0,
            rx_fill_ring_empty_descs: 0,
            tx_ring_empty_descs: 0,
        };
        get_opt(&self.fd, libc::XDP_STATISTICS, &mut s)
            .map_err(|e| self.syscall_error("getsockopt(XDP_STATISTICS)", e))?;
        Ok(XdpStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    fn syscall_error(&self, syscall: &'static str, source: io::Error) -> XskError {
        XskError::Syscall {
            syscall,
            interface: interface_label(self.ifindex),
            queue: self.queue,
            source,
        }
    }
}

enum BindFailure {
    Busy(u32),
    Os(io::Error),
}

fn bind_with_retry(fd: &OwnedFd, addr: &libc::sockaddr_xdp) -> Result<(), BindFailure> {
    let mut wait = BIND_FIRST_WAIT;
    for attempt in 1..=BIND_ATTEMPTS {
        // SAFETY: `addr` is a valid sockaddr_xdp and the length passed is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (addr as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(BindFailure::Os(e));
        }
        if attempt < BIND_ATTEMPTS {
            std::thread::sleep(wait);
            wait *= 2;
        }
    }
    Err(BindFailure::Busy(BIND_ATTEMPTS))
}

fn set_opt<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// getsockopt into `value`; fails if the kernel returns more bytes than `T` holds would
/// be truncated (never) and accepts shorter answers (older kernels), leaving the rest.
fn get_opt<T>(fd: &OwnedFd, name: libc::c_int, value: &mut T) -> io::Result<libc::socklen_t> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live, writable `T` and `len` says its size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *mut T).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len)
}

fn mmap_offsets(fd: &OwnedFd) -> io::Result<libc::xdp_mmap_offsets> {
    let zero = libc::xdp_ring_offset {
        producer: 0,
        consumer: 0,
        desc: 0,
        flags: 0,
    };
    let mut off = libc::xdp_mmap_offsets {
        rx: zero,
        tx: zero,
        fr: zero,
        cr: zero,
    };
    let len = get_opt(fd, libc::XDP_MMAP_OFFSETS, &mut off)?;
    if len as usize != size_of::<libc::xdp_mmap_offsets>() {
        // Kernels before 5.4 answer without the flags offsets (no need_wakeup).
        return Err(io::Error::other(format!(
            "XDP_MMAP_OFFSETS answered {len} bytes, expected {}: kernel older than 5.4",
            size_of::<libc::xdp_mmap_offsets>()
        )));
    }
    Ok(off)
}

/// Maps one ring; `Ok(None)` when the kernel's offsets do not fit the mapping.
fn map_ring<T: Copy>(
    fd: &OwnedFd,
    pgoff: libc::off_t,
    off: &libc::xdp_ring_offset,
    size: u32,
) -> io::Result<Option<RingMem<T>>> {
    let len = off
        .desc
        .checked_add(u64::from(size) * size_of::<T>() as u64)
        .and_then(|l| usize::try_from(l).ok())
        .ok_or_else(|| io::Error::other("ring length overflows"))?;
    // SAFETY: a fresh shared mapping of the socket's ring at the kernel-defined page
    // offset; the result is checked before use.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            pgoff,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let Some(addr) = NonNull::new(addr) else {
        return Err(io::Error::other("mmap returned NULL"));
    };
    // SAFETY: `addr` is the start of the `len`-byte ring mapping just made, handed over
    // to the `RingMem`; the kernel lays the ring out as `off` says, with `size` entries
    // of `T` (u64 for fill/completion, xdp_desc for RX/TX).
    let ring = unsafe { RingMem::from_mmap(addr, len, off, size) };
    if ring.is_none() {
        // SAFETY: the mapping was not handed over; unmap it here.
        unsafe {
            libc::munmap(addr.as_ptr(), len);
        }
    }
    Ok(ring)
}

/// Where a socket takes fill frames from and gives completed ones back to: a plain
/// `Vec<u64>` of addresses, or a worker's [`weir_dataplane::FreeList`] (which keeps chunk
/// bases whatever address comes back).
pub trait FramePool {
    /// Gives back the frame that holds `addr`.
    fn push_frame(&mut self, addr: u64);
    /// The frames held, the next to hand out last.
    fn frames(&self) -> &[u64];
    /// Keeps the first `len` frames (the ring took the others).
    fn keep(&mut self, len: usize);
    /// Makes room for `n` more.
    fn reserve_frames(&mut self, n: usize);
}

impl FramePool for Vec<u64> {
    fn push_frame(&mut self, addr: u64) {
        self.push(addr);
    }
    fn frames(&self) -> &[u64] {
        self
    }
    fn keep(&mut self, len: usize) {
        self.truncate(len);
    }
    fn reserve_frames(&mut self, n: usize) {
        self.reserve(n);
    }
}

impl FramePool for weir_dataplane::FreeList {
    fn push_frame(&mut self, addr: u64) {
        self.push(addr);
    }
    fn frames(&self) -> &[u64] {
        self.bases()
    }
    fn keep(&mut self, len: usize) {
        self.truncate(len);
    }
    fn reserve_frames(&mut self, n: usize) {
        self.reserve(n);
    }
}
