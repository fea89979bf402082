//! The AF_XDP ring cursors against a FIFO model, over heap memory (no kernel, no root).
//!
//! Generated sequences of reserve / write / submit on the producer end and peek / read /
//! release on the consumer end, starting the shared indices near `u32::MAX` so that they
//! wrap. The consumer must see exactly what the producer submitted, in order, and never
//! more than the ring size may be outstanding.

use std::collections::VecDeque;

use proptest::prelude::*;
use weir_workers::xsk::{Consumer, Producer, RingMem};

#[derive(Clone, Debug)]
enum Op {
    Reserve(u32),
    Submit,
    Peek(u32),
    Release,
    /// What the producer reads back as not consumed (a fill ring taken back on detach).
    Unconsumed,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..20).prop_map(Op::Reserve),
        Just(Op::Submit),
        (0u32..20).prop_map(Op::Peek),
        Just(Op::Release),
        Just(Op::Unconsumed),
    ]
}

struct Model {
    size: u32,
    /// Submitted and not released (the peeked ones are at the front).
    fifo: VecDeque<u64>,
    /// Reserved and written, not submitted.
    pending: Vec<u64>,
    peeked: u32,
    next_value: u64,
}

fn run(size: u32, start: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let mem = RingMem::<u64>::heap(size, start).unwrap();
    let (mut p, mut c): (Producer<u64>, Consumer<u64>) = mem.split();
    let mut m = Model {
        size,
        fifo: VecDeque::new(),
        pending: Vec::new(),
        peeked: 0,
        next_value: 0,
    };
    for op in ops {
        match *op {
            Op::Reserve(n) => {
                let outstanding = m.fifo.len() as u32 + m.pending.len() as u32;
                let expected = n.min(m.size - outstanding);
                let before = p.reserved();
                let got = p.reserve(n);
                prop_assert_eq!(
                    got,
                    expected,
                    "reserve({}) with {} outstanding",
                    n,
                    outstanding
                );
                for k in 0..got {
                    let v = m.next_value;
                    m.next_value += 1;
                    p.write(before + k, v);
                    m.pending.push(v);
                }
                prop_assert_eq!(p.reserved() as usize, m.pending.len());
            }
            Op::Submit => {
                p.submit();
                m.fifo.extend(m.pending.drain(..));
                prop_assert_eq!(p.reserved(), 0);
            }
            Op::Peek(n) => {
                let expected = n.min(m.fifo.len() as u32 - m.peeked);
                let before = c.peeked();
                let got = c.peek(n);
                prop_assert_eq!(got, expected, "peek({})", n);
                for k in 0..got {
                    let idx = (before + k) as usize;
                    prop_assert_eq!(c.read(before + k), m.fifo[idx]);
                }
                m.peeked += got;
                prop_assert_eq!(c.peeked(), m.peeked);
            }
            Op::Release => {
                c.release();
                for _ in 0..m.peeked {
                    m.fifo.pop_front();
                }
                m.peeked = 0;
            }
            Op::Unconsumed => {
                // Submitted and not released, oldest first; reserved ones are not
                // published, and peeked ones are not consumed until released.
                let mut got = Vec::new();
                let n = p.unconsumed(&mut got);
                prop_assert_eq!(n as usize, got.len());
                prop_assert_eq!(&got[..], &m.fifo.iter().copied().collect::<Vec<_>>()[..]);
            }
        }
        let ring = p.mem();
        let outstanding = ring.producer_index().wrapping_sub(ring.consumer_index());
        prop_assert!(
            outstanding <= size,
            "{} outstanding in a ring of {}",
            outstanding,
            size
        );
        prop_assert_eq!(
            outstanding as usize,
            m.fifo.len(),
            "shared indices disagree with the model"
        );
        // Everything still readable in order.
        for k in 0..c.peeked() {
            prop_assert_eq!(c.read(k), m.fifo[k as usize]);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ring_matches_fifo_model(
        size_log2 in 0u32..6,
        start_back in 0u32..64,
        ops in prop::collection::vec(op(), 0..200),
    ) {
        let start = u32::MAX - start_back;
        run(1 << size_log2, start, &ops)?;
    }

    #[test]
    fn ring_matches_fifo_model_any_start(
        size_log2 in 0u32..6,
        start in any::<u32>(),
        ops in prop::collection::vec(op(), 0..100),
    ) {
        run(1 << size_log2, start, &ops)?;
    }
}

#[test]
fn producer_and_consumer_on_two_threads() {
    // A cross-thread smoke run: the Release/Acquire hand-over carries every value.
    let (mut p, mut c) = RingMem::<u64>::heap(64, u32::MAX - 10).unwrap().split();
    const N: u64 = 200_000;
    let producer = std::thread::spawn(move || {
        let mut next = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while next < N {
            assert!(std::time::Instant::now() < deadline, "producer stalled");
            let got = p.reserve(((N - next) as u32).min(16));
            for k in 0..got {
                p.write(k, next);
                next += 1;
            }
            p.submit();
            if got == 0 {
                std::thread::yield_now();
            }
        }
    });
    let mut expected = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while expected < N {
        assert!(std::time::Instant::now() < deadline, "consumer stalled");
        let got = c.peek(32);
        for k in 0..got {
            assert_eq!(c.read(k), expected);
            expected += 1;
        }
        c.release();
        if got == 0 {
            std::thread::yield_now();
        }
    }
    producer.join().unwrap();
}
