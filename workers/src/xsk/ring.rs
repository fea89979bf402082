//! Single-producer / single-consumer ring cursors over shared memory.
//!
//! An AF_XDP ring is an array of `size` entries (a power of two) plus two free-running
//! `u32` indices, `producer` and `consumer`, and a `flags` word. The producer writes
//! entries at `producer & mask` and then publishes them with a `Release` store of the new
//! producer index; the consumer sees them after an `Acquire` load of that index, reads
//! them, and hands the slots back with a `Release` store of the consumer index. The
//! indices wrap around `u32::MAX`; all arithmetic here is wrapping, so `producer -
//! consumer` is the number of entries outstanding, never more than `size`.
//!
//! Each cursor keeps a cached copy of the other side's index and reads the shared one
//! only when the cache says there is not enough room (producer) or not enough entries
//! (consumer), as libxdp's `xsk_prod_nb_free` / `xsk_cons_nb_avail` do. Work is shaped
//! around batches: [`Producer::reserve`] then [`Producer::write`] per entry then one
//! [`Producer::submit`]; [`Consumer::peek`] then [`Consumer::read`] per entry then one
//! [`Consumer::release`]. There is one shared atomic store per batch, not per entry.
//!
//! The same code runs over a ring the kernel mapped for an AF_XDP socket and over plain
//! heap memory ([`RingMem::heap`]), so that the index logic is tested without a kernel.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::XskError;

/// An RX or TX ring entry (`struct xdp_desc` in `linux/if_xdp.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// Offset of the packet data from the start of the UMEM.
    pub addr: u64,
    /// Length of the packet data in bytes.
    pub len: u32,
    /// Descriptor options (`XDP_PKT_CONTD` for multi-buffer; always 0 here).
    pub options: u32,
}

const _: () = assert!(std::mem::size_of::<Desc>() == 16);
const _: () = assert!(std::mem::size_of::<Desc>() == std::mem::size_of::<libc::xdp_desc>());

/// The memory of one ring: two indices, a flags word and `size` entries of `T`.
///
/// It owns what it points into (a kernel mapping or a heap allocation) and releases it on
/// drop. Turn it into cursors with [`RingMem::split`] (both ends, for tests) or, for a
/// kernel ring, the one end that user space drives.
#[derive(Debug)]
pub struct RingMem<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    size: u32,
    backing: Backing<T>,
}

#[derive(Debug)]
enum Backing<T> {
    Heap {
        header: NonNull<HeapHeader>,
        descs: NonNull<[T]>,
    },
    Mmap {
        addr: NonNull<libc::c_void>,
        len: usize,
    },
}

#[repr(C)]
#[derive(Debug)]
struct HeapHeader {
    producer: AtomicU32,
    consumer: AtomicU32,
    flags: AtomicU32,
}

// SAFETY: `RingMem` owns its memory (heap allocation or mapping) outright; the indices
// and flags are only touched through atomics, and each entry slot is accessed by exactly
// one side at a time as the ring protocol hands it over (enforced by there being exactly
// one `Producer` and one `Consumer` per `RingMem`, both created by value from it).
unsafe impl<T: Send> Send for RingMem<T> {}
// SAFETY: see `Send`: shared access is through atomics, and slot access follows the
// producer/consumer hand-over published with Release/Acquire on the indices.
unsafe impl<T: Send> Sync for RingMem<T> {}

impl<T: Copy + Default> RingMem<T> {
    /// A ring in heap memory with both indices starting at `start` (use a value near
    /// `u32::MAX` to exercise wrap-around). `size` must be a non-zero power of two.
    pub fn heap(size: u32, start: u32) -> Result<Self, XskError> {
        check_ring_size("heap", size)?;
        let header = Box::new(HeapHeader {
            producer: AtomicU32::new(start),
            consumer: AtomicU32::new(start),
            flags: AtomicU32::new(0),
        });
        let header = NonNull::from(Box::leak(header));
        let descs: Box<[T]> = vec![T::default(); size as usize].into_boxed_slice();
        let descs = NonNull::from(Box::leak(descs));
        // SAFETY: `header` points to a live, leaked `HeapHeader`; taking field addresses
        // with `addr_of_mut!` creates no intermediate references.
        let (producer, consumer, flags) = unsafe {
            let h = header.as_ptr();
            (
                NonNull::new_unchecked(std::ptr::addr_of_mut!((*h).producer)),
                NonNull::new_unchecked(std::ptr::addr_of_mut!((*h).consumer)),
                NonNull::new_unchecked(std::ptr::addr_of_mut!((*h).flags)),
            )
        };
        Ok(RingMem {
            producer,
            consumer,
            flags,
            descs: descs.cast::<T>(),
            size,
            backing: Backing::Heap { header, descs },
        })
    }
}

impl<T: Copy> RingMem<T> {
    /// Wraps a ring the kernel mapped for an AF_XDP socket.
    ///
    /// # Safety
    ///
    /// `addr` must be the start of a live `MAP_SHARED` mapping of `len` bytes that this
    /// `RingMem` takes ownership of (it is unmapped on drop), and it must be a ring of
    /// `size` entries of `T` laid out as the kernel's `off` says. The offsets are checked
    /// against `len` and alignment here; the caller vouches for the rest.
    pub(super) unsafe fn from_mmap(
        addr: NonNull<libc::c_void>,
        len: usize,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> Option<Self> {
        let entries_end = (size as u64)
            .checked_mul(std::mem::size_of::<T>() as u64)?
            .checked_add(off.desc)?;
        let in_bounds = |o: u64, width: u64, align: u64| o % align == 0 && o + width <= len as u64;
        if !(in_bounds(off.producer, 4, 4)
            && in_bounds(off.consumer, 4, 4)
            && in_bounds(off.flags, 4, 4)
            && off.desc % std::mem::align_of::<T>() as u64 == 0
            && entries_end <= len as u64)
        {
            return None;
        }
        let base = addr.as_ptr().cast::<u8>();
        // SAFETY: every offset was checked above to lie inside the `len`-byte mapping
        // starting at `base`, with the alignment of the type it is cast to.
        unsafe {
            Some(RingMem {
                producer: NonNull::new_unchecked(base.add(off.producer as usize).cast()),
                consumer: NonNull::new_unchecked(base.add(off.consumer as usize).cast()),
                flags: NonNull::new_unchecked(base.add(off.flags as usize).cast()),
                descs: NonNull::new_unchecked(base.add(off.desc as usize).cast()),
                size,
                backing: Backing::Mmap { addr, len },
            })
        }
    }

    /// Both cursors over this memory: the producer end and the consumer end.
    pub fn split(self) -> (Producer<T>, Consumer<T>) {
        let mem = Arc::new(self);
        (Producer::new(mem.clone()), Consumer::new(mem))
    }

    /// The producer end only (the kernel is the consumer: fill and TX rings).
    pub(super) fn into_producer(self) -> Producer<T> {
        Producer::new(Arc::new(self))
    }

    /// The consumer end only (the kernel is the producer: RX and completion rings).
    pub(super) fn into_consumer(self) -> Consumer<T> {
        Consumer::new(Arc::new(self))
    }

    /// Number of entries.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The shared producer index as it is now.
    pub fn producer_index(&self) -> u32 {
        self.producer().load(Ordering::Acquire)
    }

    /// The shared consumer index as it is now.
    pub fn consumer_index(&self) -> u32 {
        self.consumer().load(Ordering::Acquire)
    }

    /// The shared flags word (`XDP_RING_NEED_WAKEUP`) as it is now.
    pub fn flags(&self) -> u32 {
        self.flags_word().load(Ordering::Acquire)
    }

    /// Sets the flags word, standing in for the kernel in tests.
    pub fn set_flags(&self, flags: u32) {
        self.flags_word().store(flags, Ordering::Release);
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into memory this `RingMem` owns for its whole life, 4-aligned
        // (checked at construction); all access to it is atomic, on both sides.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags_word(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }
    }

    fn slot(&self, index: u32) -> *mut T {
        let i = (index & (self.size - 1)) as usize;
        // SAFETY: `i < size` and the entry array holds `size` entries of `T`.
        unsafe { self.descs.as_ptr().add(i) }
    }
}

impl<T> Drop for RingMem<T> {
    fn drop(&mut self) {
        match self.backing {
            Backing::Heap { header, descs } => {
                // SAFETY: both were leaked from `Box`es in `heap` and are freed only here.
                unsafe {
                    drop(Box::from_raw(header.as_ptr()));
                    drop(Box::from_raw(descs.as_ptr()));
                }
            }
            Backing::Mmap { addr, len } => {
                // SAFETY: `addr`/`len` describe a mapping this value owns (the contract of
                // `from_mmap`); no cursor outlives the `Arc` holding this value. A failing
                // munmap leaves nothing we could repair, so its result is ignored.
                unsafe {
                    libc::munmap(addr.as_ptr(), len);
                }
            }
        }
    }
}

/// The producer end of a ring.
#[derive(Debug)]
pub struct Producer<T> {
    mem: Arc<RingMem<T>>,
    /// Next index to write: published entries plus those reserved but not submitted.
    cached_prod: u32,
    /// Index up to which we may write: the consumer index plus `size`, as last read.
    cached_limit: u32,
    /// Entries reserved and not yet submitted.
    reserved: u32,
}

impl<T: Copy> Producer<T> {
    fn new(mem: Arc<RingMem<T>>) -> Self {
        let prod = mem.producer().load(Ordering::Relaxed);
        let limit = mem
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(mem.size);
        Producer {
            mem,
            cached_prod: prod,
            cached_limit: limit,
            reserved: 0,
        }
    }

    /// Free entries, reading the consumer index only if the cache shows fewer than
    /// `wanted`.
    pub fn free(&mut self, wanted: u32) -> u32 {
        let free = self.cached_limit.wrapping_sub(self.cached_prod);
        if free >= wanted {
            return free;
        }
        self.cached_limit = self
            .mem
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.mem.size);
        self.cached_limit.wrapping_sub(self.cached_prod)
    }

    /// Reserves up to `n` entries after any already reserved; returns how many were
    /// reserved. Fill them with [`Producer::write`], publish them with
    /// [`Producer::submit`].
    pub fn reserve(&mut self, n: u32) -> u32 {
        let granted = n.min(self.free(n));
        self.cached_prod = self.cached_prod.wrapping_add(granted);
        self.reserved += granted;
        granted
    }

    /// Entries reserved and not yet submitted.
    pub fn reserved(&self) -> u32 {
        self.reserved
    }

    /// Writes the `k`-th reserved entry (0 is the oldest unsubmitted one).
    ///
    /// # Panics
    ///
    /// If `k` is not below [`Producer::reserved`]: writing outside a reservation would
    /// race with the consumer.
    pub fn write(&mut self, k: u32, value: T) {
        assert!(k < self.reserved, "ring write outside the reservation");
        let index = self.cached_prod.wrapping_sub(self.reserved).wrapping_add(k);
        // SAFETY: the slot lies in the reserved window, which the consumer will not read
        // before `submit` publishes it; we are the only producer.
        unsafe { self.mem.slot(index).write(value) }
    }

    /// Publishes every reserved entry to the consumer (one `Release` store).
    pub fn submit(&mut self) {
        if self.reserved == 0 {
            return;
        }
        self.mem
            .producer()
            .store(self.cached_prod, Ordering::Release);
        self.reserved = 0;
    }

    /// Appends to `out` every entry published and not yet consumed: those between the
    /// shared consumer index (as it is now) and the last submitted producer index, oldest
    /// first; returns how many. Reserved, unsubmitted entries are not included.
    ///
    /// This is how frames lent to a fill ring are taken back before its socket closes.
    /// The answer is exact only once the consumer has stopped (for a fill ring: no XDP
    /// program redirects to the socket any more); while it still runs, some entries read
    /// here may be consumed at the same moment.
    pub fn unconsumed(&self, out: &mut Vec<T>) -> u32 {
        let published = self.cached_prod.wrapping_sub(self.reserved);
        let consumer = self.mem.consumer().load(Ordering::Acquire);
        // A consumer index ahead of ours, or more than a ring apart, is not one a
        // well-behaved consumer writes: read nothing rather than garbage.
        let n = published.wrapping_sub(consumer);
        if n > self.mem.size {
            return 0;
        }
        out.reserve(n as usize);
        for k in 0..n {
            // SAFETY: the slot lies between the consumer index and our published producer
            // index: written by us before `submit` and not written since (we are the only
            // producer, and we write only reserved slots past `published`). The consumer
            // only reads slots, so reading it here races with no write.
            out.push(unsafe { self.mem.slot(consumer.wrapping_add(k)).read() });
        }
        n
    }

    /// Whether the consumer asked to be woken (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        self.mem.flags() & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// The ring memory, for inspection.
    pub fn mem(&self) -> &RingMem<T> {
        &self.mem
    }
}

/// The consumer end of a ring.
#[derive(Debug)]
pub struct Consumer<T> {
    mem: Arc<RingMem<T>>,
    /// Next index to read: released entries plus those peeked but not released.
    cached_cons: u32,
    /// The producer index as last read.
    cached_prod: u32,
    /// Entries peeked and not yet released.
    peeked: u32,
}

impl<T: Copy> Consumer<T> {
    fn new(mem: Arc<RingMem<T>>) -> Self {
        let cons = mem.consumer().load(Ordering::Relaxed);
        let prod = mem.producer().load(Ordering::Acquire);
        Consumer {
            mem,
            cached_cons: cons,
            cached_prod: prod,
            peeked: 0,
        }
    }

    /// Entries available beyond those peeked, reading the producer index only if the
    /// cache shows fewer than `wanted`.
    pub fn available(&mut self, wanted: u32) -> u32 {
        let avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail >= wanted {
            return avail;
        }
        self.cached_prod = self.mem.producer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Whether entries are waiting, without touching the cache (one `Acquire` load).
    pub fn pending(&self) -> bool {
        self.mem.producer().load(Ordering::Acquire) != self.cached_cons
    }

    /// Takes up to `n` more entries after any already peeked; returns how many. Read
    /// them with [`Consumer::read`], hand the slots back with [`Consumer::release`].
    pub fn peek(&mut self, n: u32) -> u32 {
        let granted = n.min(self.available(n));
        self.cached_cons = self.cached_cons.wrapping_add(granted);
        self.peeked += granted;
        granted
    }

    /// Entries peeked and not yet released.
    pub fn peeked(&self) -> u32 {
        self.peeked
    }

    /// Reads the `k`-th peeked entry (0 is the oldest unreleased one).
    ///
    /// # Panics
    ///
    /// If `k` is not below [`Consumer::peeked`].
    pub fn read(&self, k: u32) -> T {
        assert!(k < self.peeked, "ring read outside the peeked window");
        let index = self.cached_cons.wrapping_sub(self.peeked).wrapping_add(k);
        // SAFETY: the slot lies in the peeked window, published by the producer (Acquire
        // load in `available`) and not handed back yet, so the producer will not write it.
        unsafe { self.mem.slot(index).read() }
    }

    /// Hands every peeked slot back to the producer (one `Release` store).
    pub fn release(&mut self) {
        if self.peeked == 0 {
            return;
        }
        self.mem
            .consumer()
            .store(self.cached_cons, Ordering::Release);
        self.peeked = 0;
    }

    /// The ring memory, for inspection.
    pub fn mem(&self) -> &RingMem<T> {
        &self.mem
    }
}

pub(super) fn check_ring_size(ring: &'static str, size: u32) -> Result<(), XskError> {
    if size == 0 || !size.is_power_of_two() {
        return Err(XskError::InvalidConfig(format!(
            "{ring} ring size {size} is not a non-zero power of two"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_across_wrap() {
        let (mut p, mut c) = RingMem::<u64>::heap(4, u32::MAX - 1).unwrap().split();
        for round in 0..5u64 {
            assert_eq!(p.reserve(8), 4);
            for k in 0..4 {
                p.write(k, round * 10 + u64::from(k));
            }
            assert_eq!(p.reserve(1), 0);
            p.submit();
            assert_eq!(c.peek(8), 4);
            for k in 0..4 {
                assert_eq!(c.read(k), round * 10 + u64::from(k));
            }
            c.release();
        }
        assert_eq!(p.mem().producer_index(), (u32::MAX - 1).wrapping_add(20));
    }

    #[test]
    fn unconsumed_entries_are_read_back_in_order_across_wrap() {
        let (mut p, mut c) = RingMem::<u64>::heap(8, u32::MAX - 2).unwrap().split();
        let mut out = Vec::new();
        assert_eq!(p.unconsumed(&mut out), 0);
        assert_eq!(p.reserve(6), 6);
        for k in 0..6 {
            p.write(k, 100 + u64::from(k));
        }
        p.submit();
        assert_eq!(c.peek(2), 2);
        // Peeked but not released: still unconsumed as far as the producer can see.
        assert_eq!(p.unconsumed(&mut out), 6);
        c.release();
        out.clear();
        assert_eq!(p.reserve(1), 1);
        p.write(0, 999);
        assert_eq!(
            p.unconsumed(&mut out),
            4,
            "a reserved entry is not published"
        );
        assert_eq!(out, [102, 103, 104, 105]);
        p.submit();
        out.clear();
        assert_eq!(p.unconsumed(&mut out), 5);
        assert_eq!(out, [102, 103, 104, 105, 999]);
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(RingMem::<u64>::heap(0, 0).is_err());
        assert!(RingMem::<u64>::heap(3, 0).is_err());
    }

    #[test]
    fn needs_wakeup_follows_flags() {
        let (p, _c) = RingMem::<Desc>::heap(2, 0).unwrap().split();
        assert!(!p.needs_wakeup());
        p.mem().set_flags(libc::XDP_RING_NEED_WAKEUP);
        assert!(p.needs_wakeup());
    }
}
