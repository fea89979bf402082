//! Frames: owned handles into a frame region (the UMEM in AF_XDP terms).
//!
//! A region is one contiguous byte area cut into equal chunks. A [`Frame`] names one chunk
//! and the window of packet bytes inside it (`head..head+len`, relative to the chunk start);
//! the bytes before `head` are headroom that encapsulation and ICMP error generation grow
//! into. A `Frame` is deliberately neither `Clone` nor `Copy`: "one live descriptor per
//! chunk" is then a property the compiler checks, not a comment.
//!
//! Drivers create frames from descriptors (`FrameRegion::frame`), which validates the
//! descriptor against the region in release builds too (a kernel-supplied address is
//! masked to its chunk and checked); after that, [`FrameRegion::data`] and
//! [`FrameRegion::data_mut`] cannot go out of bounds.

/// The default chunk size: one 2 KiB AF_XDP frame holds a 1500-byte packet plus headroom.
pub const DEFAULT_CHUNK_SIZE: usize = 2048;
/// Headroom a driver should leave before the packet when it fills a chunk: room for outer
/// Ethernet + IPv6 + UDP + WireGuard (or VXLAN) headers and ICMP error headers.
pub const DEFAULT_HEADROOM: usize = 256;

/// An owned handle to one chunk of a [`FrameRegion`] and the packet bytes inside it.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    chunk: u64,
    head: u16,
    len: u16,
}

impl Frame {
    /// Offset of the chunk in the region (the chunk's base address in UMEM terms).
    pub fn chunk(&self) -> u64 {
        self.chunk
    }

    /// Offset of the first packet byte in the region (the descriptor address).
    pub fn addr(&self) -> u64 {
        self.chunk + u64::from(self.head)
    }

    /// Packet length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the frame holds no packet bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the packet.
    pub fn headroom(&self) -> usize {
        usize::from(self.head)
    }

    /// Extends the packet `n` bytes to the front (into the headroom). Returns `false`, and
    /// changes nothing, when the headroom is smaller than `n`.
    pub fn push_head(&mut self, n: usize) -> bool {
        match u16::try_from(n) {
            Ok(n) if n <= self.head => {
                self.head -= n;
                self.len = self.len.saturating_add(n);
                true
            }
            _ => false,
        }
    }

    /// Shortens the packet to `len` bytes (no effect if it is already shorter).
    pub fn truncate(&mut self, len: usize) {
        if len < usize::from(self.len) {
            // len < self.len <= u16::MAX, so the cast is exact.
            self.len = len as u16;
        }
    }

    /// Sets the packet length, growing into the tailroom of a chunk of `chunk_size` bytes.
    /// Returns `false`, changing nothing, when the chunk is too small.
    pub fn set_len(&mut self, len: usize, chunk_size: usize) -> bool {
        if usize::from(self.head) + len <= chunk_size {
            if let Ok(l) = u16::try_from(len) {
                self.len = l;
                return true;
            }
        }
        false
    }
}

/// A contiguous byte area cut into `chunk_size` chunks: the memory that [`Frame`]s point
/// into. It borrows the bytes, so the same type serves an in-memory `Vec` and a mapped UMEM.
#[derive(Debug)]
pub struct FrameRegion<'a> {
    mem: &'a mut [u8],
    chunk_size: usize,
}

/// Why a descriptor could not become a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The address lies outside the region.
    #[error("descriptor address {addr:#x} is outside the frame region of {size} bytes")]
    OutOfRegion { addr: u64, size: usize },
    /// The packet would run past the end of its chunk.
    #[error("descriptor at {addr:#x} with length {len} runs past its {chunk_size}-byte chunk")]
    PastChunk {
        addr: u64,
        len: usize,
        chunk_size: usize,
    },
}

impl<'a> FrameRegion<'a> {
    /// A region over `mem`, cut into `chunk_size`-byte chunks.
    ///
    /// # Panics
    /// If `chunk_size` is not a power of two between 256 and 65536 (a configuration error,
    /// not a packet-time condition).
    pub fn new(mem: &'a mut [u8], chunk_size: usize) -> Self {
        assert!(
            chunk_size.is_power_of_two() && (256..=65536).contains(&chunk_size),
            "chunk size must be a power of two in 256..=65536, got {chunk_size}"
        );
        FrameRegion { mem, chunk_size }
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Number of whole chunks in the region.
    pub fn chunks(&self) -> usize {
        self.mem.len() / self.chunk_size
    }

    /// Makes a frame from a descriptor: `addr` is the offset of the first packet byte in the
    /// region, `len` the packet length. The chunk is `addr` rounded down to the chunk size.
    pub fn frame(&self, addr: u64, len: usize) -> Result<Frame, DescriptorError> {
        let size = self.chunks() * self.chunk_size;
        if addr >= size as u64 {
            return Err(DescriptorError::OutOfRegion { addr, size });
        }
        let chunk = addr & !(self.chunk_size as u64 - 1);
        let head = (addr - chunk) as usize;
        if head + len > self.chunk_size {
            return Err(DescriptorError::PastChunk {
                addr,
                len,
                chunk_size: self.chunk_size,
            });
        }
        // head < chunk_size <= 65536 and head + len <= chunk_size; a 65536-byte chunk with
        // head 0 and len 65536 is the one case that does not fit u16, refuse it.
        let (Ok(head), Ok(len)) = (u16::try_from(head), u16::try_from(len)) else {
            return Err(DescriptorError::PastChunk {
                addr,
                len,
                chunk_size: self.chunk_size,
            });
        };
        Ok(Frame { chunk, head, len })
    }

    /// The packet bytes of `frame`.
    pub fn data(&self, frame: &Frame) -> &[u8] {
        let start = frame.chunk as usize + usize::from(frame.head);
        &self.mem[start..start + usize::from(frame.len)]
    }

    /// The packet bytes of `frame`, writable.
    pub fn data_mut(&mut self, frame: &Frame) -> &mut [u8] {
        let start = frame.chunk as usize + usize::from(frame.head);
        &mut self.mem[start..start + usize::from(frame.len)]
    }

    /// Copies `bytes` into the chunk at `chunk` after `headroom` bytes and returns the frame.
    pub fn fill(
        &mut self,
        chunk: u64,
        headroom: usize,
        bytes: &[u8],
    ) -> Result<Frame, DescriptorError> {
        let frame = self.frame(chunk + headroom as u64, bytes.len())?;
        self.data_mut(&frame).copy_from_slice(bytes);
        Ok(frame)
    }
}

/// The free chunks of a region, kept as chunk bases. A chunk comes back with whatever
/// address it last had (a received descriptor points past the headroom, a TX completion
/// returns the address the packet was sent from); [`FreeList::push`] keeps its base, so no
/// caller computes `addr - addr % chunk_size` itself, and [`FreeList::pop`] always gives a
/// base.
#[derive(Debug, Clone)]
pub struct FreeList {
    bases: Vec<u64>,
    chunk_size: u64,
}

impl FreeList {
    /// An empty list for chunks of `chunk_size` bytes.
    ///
    /// # Panics
    /// If `chunk_size` is zero.
    pub fn new(chunk_size: usize) -> Self {
        assert!(chunk_size > 0, "a chunk has at least one byte");
        FreeList {
            bases: Vec::new(),
            chunk_size: chunk_size as u64,
        }
    }

    /// A list holding every chunk of a `chunks`-chunk region, the first one popped first.
    pub fn full(chunks: usize, chunk_size: usize) -> Self {
        let mut list = FreeList::new(chunk_size);
        list.bases = (0..chunks as u64)
            .rev()
            .map(|c| c * list.chunk_size)
            .collect();
        list
    }

    /// The chunk that holds `addr`: its base.
    #[inline]
    pub fn base(&self, addr: u64) -> u64 {
        addr - addr % self.chunk_size
    }

    /// Gives back the chunk that holds `addr`.
    #[inline]
    pub fn push(&mut self, addr: u64) {
        let base = self.base(addr);
        self.bases.push(base);
    }

    /// Takes a free chunk (its base).
    #[inline]
    pub fn pop(&mut self) -> Option<u64> {
        self.bases.pop()
    }

    /// Free chunks.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    /// Whether no chunk is free.
    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size as usize
    }

    /// The free chunks' bases, the next one to pop last.
    pub fn bases(&self) -> &[u64] {
        &self.bases
    }

    /// Keeps the first `len` chunks (for a ring that took the last ones).
    pub fn truncate(&mut self, len: usize) {
        self.bases.truncate(len);
    }

    /// Makes room for `n` more chunks.
    pub fn reserve(&mut self, n: usize) {
        self.bases.reserve(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_list_keeps_chunk_bases_whatever_address_comes_back() {
        let mut free = FreeList::full(3, 2048);
        assert_eq!(free.pop(), Some(0));
        free.push(256 + 14);
        free.push(2048 * 2 + 1999);
        assert_eq!(free.pop(), Some(4096));
        assert_eq!(free.pop(), Some(0));
        assert_eq!(free.pop(), Some(2048));
        assert_eq!(free.pop(), Some(4096));
        assert!(free.pop().is_none() && free.is_empty());
    }

    #[test]
    fn descriptors_are_checked_against_region_and_chunk() {
        let mut mem = vec![0u8; 4 * 2048];
        let region = FrameRegion::new(&mut mem, 2048);
        assert_eq!(region.chunks(), 4);
        let f = region.frame(2048 + 256, 100).unwrap();
        assert_eq!(
            (f.chunk(), f.headroom(), f.len(), f.addr()),
            (2048, 256, 100, 2304)
        );
        assert!(matches!(
            region.frame(4 * 2048, 1),
            Err(DescriptorError::OutOfRegion { .. })
        ));
        assert!(matches!(
            region.frame(2048 + 2000, 100),
            Err(DescriptorError::PastChunk { .. })
        ));
    }

    #[test]
    fn headroom_grows_and_shrinks() {
        let mut mem = vec![0u8; 2048];
        let mut region = FrameRegion::new(&mut mem, 2048);
        let mut f = region.fill(0, 64, &[1, 2, 3]).unwrap();
        assert!(f.push_head(64));
        assert!(!f.push_head(1));
        assert_eq!(f.len(), 67);
        assert_eq!(&region.data(&f)[64..], &[1, 2, 3]);
        f.truncate(10);
        assert_eq!(region.data(&f).len(), 10);
        assert!(f.set_len(2048, 2048));
        assert!(!f.set_len(2049, 2048));
        region.data_mut(&f)[2047] = 9;
    }
}
