//! Frames handed from one worker to another: a frame received by worker A whose output
//! interface belongs to worker B is copied into a buffer that travels to B over a bounded
//! lock-free queue; B copies it into one of its own UMEM frames and sends it. A frame of a
//! flow B owns (see `weir_dataplane::node::steer`) travels the same way, unprocessed, and
//! B runs the pipeline on it ([`Parcel::run`]).
//!
//! Each ordered pair of workers has its own [`Lane`], so each queue has one producer and
//! one consumer. A lane is two `crossbeam_queue::ArrayQueue`s: parcels going to B and
//! empty buffers coming back to A. Buffers are allocated once, when the lanes are made;
//! no lock and no allocation on the packet path. When A finds no empty buffer (B is
//! behind), the frame is dropped and counted (`handoff_full`), never queued without
//! bound.
//!
//! A worker that sleeps in `poll(2)` also watches its [`Waker`] (an eventfd), which a
//! producer signals after queueing parcels for it, so that handed-off frames never wait
//! for a sleep to time out.
//!
//! The copy is the price of one UMEM per worker (each worker's memory stays on its core,
//! and no frame is ever owned by two workers); pods are spread over workers so that most
//! traffic a worker receives leaves through its own sockets or the uplink.

#![allow(unsafe_code)] // eventfd: create, read, write

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

/// Bytes a parcel holds: the largest frame a 2 KiB UMEM frame carries.
pub const PARCEL_BYTES: usize = 2048;

/// A frame in transit: its output interface (snapshot index), its length, and its bytes.
#[derive(Debug)]
pub struct Parcel {
    /// The output interface; for a parcel to [`Parcel::run`], the interface it arrived on.
    pub out: u16,
    /// Not processed yet: the receiver runs the pipeline on it, as received on `out` (its
    /// flow is the receiver's). Otherwise it is processed and only to be sent.
    pub run: bool,
    /// The generation of the snapshot `out` indexes: indices move between snapshots, so
    /// the receiver uses `out` only if it maps the same generation, and drops the parcel
    /// otherwise (a few frames while workers move to a new snapshot, never a frame sent
    /// to the wrong interface).
    pub generation: u64,
    pub len: u16,
    /// Routed over WireGuard: the receiving worker (the uplink's) seals it for this peer
    /// (an index into the snapshot's peer table of `generation`).
    pub seal: Option<u32>,
    pub bytes: Box<[u8; PARCEL_BYTES]>,
}

/// One direction between two workers.
#[derive(Debug)]
pub struct Lane {
    full: ArrayQueue<Parcel>,
    empty: ArrayQueue<Box<[u8; PARCEL_BYTES]>>,
}

impl Lane {
    /// A lane with `depth` buffers.
    pub fn new(depth: usize) -> Lane {
        let depth = depth.max(1);
        let empty = ArrayQueue::new(depth);
        for _ in 0..depth {
            // Cannot fail: the queue has exactly `depth` slots.
            let _ = empty.push(Box::new([0u8; PARCEL_BYTES]));
        }
        Lane {
            full: ArrayQueue::new(depth),
            empty,
        }
    }

    /// Producer side: copies `frame` into an empty buffer and queues it for interface
    /// `out`. Returns false (nothing queued) when no buffer is free or the frame is larger
    /// than a parcel.
    pub fn send(&self, out: u16, frame: &[u8]) -> bool {
        self.send_parcel(out, None, 0, frame)
    }

    /// [`Lane::send`], saying which WireGuard peer the frame is to be sealed for (if any)
    /// and which snapshot generation `out` and the peer are indices of ([`Lane::send`]
    /// says 0).
    pub fn send_parcel(&self, out: u16, seal: Option<u32>, generation: u64, frame: &[u8]) -> bool {
        self.push(out, false, seal, generation, frame)
    }

    /// Producer side: queues an unprocessed `frame` received on interface `ingress` (an
    /// index of snapshot `generation`) for the receiver to run the pipeline on. Returns
    /// false as [`Lane::send`] does.
    pub fn send_to_pipeline(&self, ingress: u16, generation: u64, frame: &[u8]) -> bool {
        self.push(ingress, true, None, generation, frame)
    }

    fn push(&self, out: u16, run: bool, seal: Option<u32>, generation: u64, frame: &[u8]) -> bool {
        if frame.len() > PARCEL_BYTES {
            return false;
        }
        let Some(mut bytes) = self.empty.pop() else {
            return false;
        };
        bytes[..frame.len()].copy_from_slice(frame);
        let parcel = Parcel {
            out,
            run,
            generation,
            len: frame.len() as u16,
            seal,
            bytes,
        };
        // The lane has as many parcel slots as buffers, so this cannot be full.
        match self.full.push(parcel) {
            Ok(()) => true,
            Err(parcel) => {
                let _ = self.empty.push(parcel.bytes);
                false
            }
        }
    }

    /// Consumer side: the next parcel, if any. Give its buffer back with
    /// [`Lane::recycle`].
    pub fn receive(&self) -> Option<Parcel> {
        self.full.pop()
    }

    /// Consumer side: returns a parcel's buffer to the producer.
    pub fn recycle(&self, bytes: Box<[u8; PARCEL_BYTES]>) {
        let _ = self.empty.push(bytes);
    }

    /// Parcels waiting.
    pub fn waiting(&self) -> usize {
        self.full.len()
    }
}

/// Wakes a worker sleeping in `poll(2)`: an eventfd it polls, written only while it says
/// it sleeps.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    /// A new eventfd (non-blocking, close-on-exec).
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: AtomicBool::new(false),
        })
    }

    /// The descriptor to poll for `POLLIN`.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Consumer: about to sleep (true) or awake again (false). After setting true, check
    /// the lanes once more before sleeping: a producer that queued before it saw the flag
    /// did not signal.
    pub fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::SeqCst);
    }

    /// Producer: signals the worker if it sleeps.
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live local buffer to our eventfd. A full
            // counter (EAGAIN) already means "wake up".
            unsafe { libc::write(self.fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    /// Consumer: clears the signal after waking.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer; EAGAIN (nothing to
        // clear) is fine.
        unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// What one worker holds of the handoff mesh.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// This worker's number.
    pub me: usize,
    /// Lanes to every other worker, by worker number (`None` for itself).
    pub outbound: Vec<Option<Arc<Lane>>>,
    /// Lanes from every other worker.
    pub inbound: Vec<Arc<Lane>>,
    /// For every interface another worker owns: its name and that worker's number.
    pub remote: Vec<(String, usize)>,
    /// Every worker's waker, by worker number.
    pub wakers: Vec<Arc<Waker>>,
}

/// The lanes between `workers` workers, `depth` buffers each; `owner` lists every
/// interface with the worker that owns it. Returns each worker's [`Links`].
pub fn mesh(workers: usize, depth: usize, owner: &[(String, usize)]) -> io::Result<Vec<Links>> {
    let wakers: Vec<Arc<Waker>> = (0..workers)
        .map(|_| Waker::new().map(Arc::new))
        .collect::<io::Result<_>>()?;
    let lanes: Vec<Vec<Option<Arc<Lane>>>> = (0..workers)
        .map(|from| {
            (0..workers)
                .map(|to| (from != to).then(|| Arc::new(Lane::new(depth))))
                .collect()
        })
        .collect();
    Ok((0..workers)
        .map(|me| Links {
            me,
            outbound: lanes[me].clone(),
            inbound: (0..workers)
                .filter_map(|from| lanes[from][me].clone())
                .collect(),
            remote: owner.iter().filter(|(_, w)| *w != me).cloned().collect(),
            wakers: wakers.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_carries_frames_in_order_and_drops_when_its_buffers_are_out() {
        let lane = Lane::new(2);
        assert!(lane.send(3, &[1, 2, 3]));
        assert!(lane.send(4, &[9; 60]));
        assert!(!lane.send(5, &[0; 60]), "no buffer left: dropped");
        let p = lane.receive().unwrap();
        assert_eq!((p.out, p.len, &p.bytes[..3]), (3, 3, &[1u8, 2, 3][..]));
        lane.recycle(p.bytes);
        assert!(lane.send(5, &[7; 1514]), "a recycled buffer is reused");
        let p = lane.receive().unwrap();
        assert_eq!((p.out, p.len), (4, 60));
        let p2 = lane.receive().unwrap();
        assert_eq!((p2.out, p2.len, p2.bytes[1513]), (5, 1514, 7));
        assert!(lane.receive().is_none());
        assert!(!lane.send(1, &[0; PARCEL_BYTES + 1]), "too large");
    }

    #[test]
    fn the_mesh_links_every_pair_once_in_each_direction() {
        let owner = vec![
            ("a".to_string(), 0),
            ("b".to_string(), 1),
            ("c".to_string(), 2),
        ];
        let links = mesh(3, 4, &owner).unwrap();
        assert_eq!(links.len(), 3);
        for l in &links {
            assert_eq!(l.inbound.len(), 2);
            assert!(l.outbound[l.me].is_none());
            assert_eq!(l.remote.len(), 2);
            assert!(l.remote.iter().all(|(_, w)| *w != l.me));
        }
        // What 0 sends to 2 arrives on one of 2's inbound lanes.
        assert!(links[0].outbound[2].as_ref().unwrap().send(7, &[1]));
        let got: usize = links[2].inbound.iter().map(|l| l.waiting()).sum();
        assert_eq!(got, 1);
        let got1: usize = links[1].inbound.iter().map(|l| l.waiting()).sum();
        assert_eq!(got1, 0);
    }

    #[test]
    fn a_waker_signals_only_a_sleeper() {
        let w = Waker::new().unwrap();
        let readable = |w: &Waker| {
            let mut p = libc::pollfd {
                fd: w.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no wait.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        w.wake();
        assert!(!readable(&w), "an awake worker is not signalled");
        w.set_sleeping(true);
        w.wake();
        assert!(readable(&w));
        w.clear();
        w.set_sleeping(false);
        assert!(!readable(&w));
    }

    #[test]
    fn lanes_work_across_threads() {
        let lane = Arc::new(Lane::new(64));
        let producer = {
            let lane = lane.clone();
            std::thread::spawn(move || {
                let mut sent = 0u32;
                let mut n = 0u32;
                while sent < 10_000 && n < 10_000_000 {
                    n += 1;
                    if lane.send((sent % 100) as u16, &sent.to_le_bytes()) {
                        sent += 1;
                    }
                }
                sent
            })
        };
        let mut next = 0u32;
        let mut spins = 0u64;
        while next < 10_000 && spins < 100_000_000 {
            spins += 1;
            if let Some(p) = lane.receive() {
                let v = u32::from_le_bytes(p.bytes[..4].try_into().unwrap());
                assert_eq!(v, next, "in order, nothing lost or doubled");
                assert_eq!(p.out, (v % 100) as u16);
                lane.recycle(p.bytes);
                next += 1;
            }
        }
        assert_eq!(producer.join().unwrap(), 10_000);
        assert_eq!(next, 10_000);
    }
}
