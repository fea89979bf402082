//! The UMEM: one anonymous mapping cut into equal frames, shared by every socket of a
//! worker.

use std::io;
use std::ptr::NonNull;

use super::XskError;

const HUGE_PAGE: usize = 2 << 20;

/// Size and ring dimensions of a UMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UmemConfig {
    /// Number of frames.
    pub frame_count: u32,
    /// Bytes per frame: 2048 or 4096 (aligned mode needs a power of two in
    /// 2048..=page size).
    pub frame_size: u32,
    /// Entries in each socket's fill ring (power of two).
    pub fill_size: u32,
    /// Entries in each socket's completion ring (power of two).
    pub comp_size: u32,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig {
            frame_count: 4096,
            frame_size: 2048,
            fill_size: 2048,
            comp_size: 2048,
        }
    }
}

/// The frame memory an AF_XDP socket shares with the kernel.
///
/// Frames are addressed by their offset from the start of the area (a `u64`, as in the
/// kernel's descriptors). The area is mapped with 2 MiB huge pages when the system has
/// them free, and otherwise on ordinary pages with a [`Umem::warning`] saying so.
///
/// Dropping a `Umem` while sockets still use it is memory-safe (the kernel pinned the
/// pages at `XDP_UMEM_REG` and releases them when the last socket closes) but the frames
/// can no longer be read from user space, so drop the sockets first.
#[derive(Debug)]
pub struct Umem {
    addr: NonNull<u8>,
    map_len: usize,
    len: usize,
    cfg: UmemConfig,
    huge_pages: bool,
    warning: Option<String>,
}

// SAFETY: `Umem` owns its private mapping outright; the raw pointer is never shared
// except through `&self`/`&mut self` borrows of the byte slice.
unsafe impl Send for Umem {}
// SAFETY: through `&Umem` the area is only read as `&[u8]`; writes need `&mut Umem`.
unsafe impl Sync for Umem {}

impl Umem {
    /// Maps the frame area: 2 MiB huge pages first, then ordinary pages.
    pub fn new(cfg: &UmemConfig) -> Result<Umem, XskError> {
        if cfg.frame_size != 2048 && cfg.frame_size != 4096 {
            return Err(XskError::InvalidConfig(format!(
                "UMEM frame size {} is not 2048 or 4096",
                cfg.frame_size
            )));
        }
        if cfg.frame_count == 0 {
            return Err(XskError::InvalidConfig(
                "UMEM frame count is 0; give it at least one frame".into(),
            ));
        }
        super::ring::check_ring_size("fill", cfg.fill_size)?;
        super::ring::check_ring_size("completion", cfg.comp_size)?;
        let len = (cfg.frame_count as usize)
            .checked_mul(cfg.frame_size as usize)
            .filter(|&l| l <= isize::MAX as usize / 2)
            .ok_or_else(|| {
                XskError::InvalidConfig(format!(
                    "UMEM of {} frames of {} bytes is too large",
                    cfg.frame_count, cfg.frame_size
                ))
            })?;

        let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let huge = map_anonymous(
            huge_len,
            libc::MAP_HUGETLB | libc::MAP_HUGE_2MB | libc::MAP_POPULATE,
        );
        let (addr, map_len, huge_pages, warning) = match huge {
            Ok(addr) => (addr, huge_len, true, None),
            Err(huge_err) => {
                let addr = map_anonymous(len, libc::MAP_POPULATE)
                    .map_err(|source| XskError::UmemMmap { len, source })?;
                let warning = format!(
                    "no free 2 MiB hugepages (mmap MAP_HUGETLB of {huge_len} bytes: {huge_err}; \
                     {}); UMEM on 4 KiB pages. Reserve hugepages with \
                     `sysctl vm.nr_hugepages=N` for better throughput",
                    hugepage_counts()
                );
                (addr, len, false, Some(warning))
            }
        };
        Ok(Umem {
            addr,
            map_len,
            len,
            cfg: *cfg,
            huge_pages,
            warning,
        })
    }

    /// Whether the area sits on 2 MiB huge pages.
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    /// Why the area is not on huge pages, if it is not.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// Bytes per frame.
    pub fn frame_size(&self) -> u32 {
        self.cfg.frame_size
    }

    /// Number of frames.
    pub fn frame_count(&self) -> u32 {
        self.cfg.frame_count
    }

    /// The configuration this UMEM was made with.
    pub fn config(&self) -> &UmemConfig {
        &self.cfg
    }

    /// Length of the frame area in bytes (`frame_count * frame_size`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a UMEM has at least one frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start of the area in this process, as registered with the kernel.
    pub fn as_ptr(&self) -> *const u8 {
        self.addr.as_ptr()
    }

    /// The whole frame area.
    pub fn region(&self) -> &[u8] {
        // SAFETY: `addr` is the start of a live private mapping of at least `len` bytes
        // owned by `self`; the kernel writes into it only into frames user space handed
        // it through the fill ring, which the frame-ownership protocol keeps apart.
        unsafe { std::slice::from_raw_parts(self.addr.as_ptr(), self.len) }
    }

    /// The whole frame area, writable.
    pub fn region_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `region`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.addr.as_ptr(), self.len) }
    }

    /// Every frame's base address (offset into the area), in ascending order.
    pub fn frames(&self) -> impl Iterator<Item = u64> {
        let size = u64::from(self.cfg.frame_size);
        (0..u64::from(self.cfg.frame_count)).map(move |i| i * size)
    }

    /// The base address of the frame holding `addr` (an RX descriptor's address points
    /// past the kernel's headroom; recycle the frame by its base).
    pub fn frame_base(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.cfg.frame_size) - 1)
    }

    /// The `len` bytes at `addr`, if they lie inside one frame.
    pub fn packet(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let range = self.packet_range(addr, len)?;
        self.region().get(range)
    }

    /// The `len` bytes at `addr`, writable, if they lie inside one frame.
    pub fn packet_mut(&mut self, addr: u64, len: u32) -> Option<&mut [u8]> {
        let range = self.packet_range(addr, len)?;
        self.region_mut().get_mut(range)
    }

    fn packet_range(&self, addr: u64, len: u32) -> Option<std::ops::Range<usize>> {
        let end = addr.checked_add(u64::from(len))?;
        let frame_end = self.frame_base(addr) + u64::from(self.cfg.frame_size);
        if end > frame_end || end > self.len as u64 {
            return None;
        }
        Some(addr as usize..end as usize)
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: `addr`/`map_len` are exactly the mapping made in `new`, owned by self.
        unsafe {
            libc::munmap(self.addr.as_ptr().cast(), self.map_len);
        }
    }
}

fn map_anonymous(len: usize, extra_flags: libc::c_int) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at an address the kernel picks; no existing
    // memory is affected.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

fn hugepage_counts() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "HugePages_Free {} of HugePages_Total {}",
        field("HugePages_Free:"),
        field("HugePages_Total:")
    )
}
