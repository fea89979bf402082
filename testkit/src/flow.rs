//! A UDP flow between two network namespaces, timed: an echo answering on a socket in
//! one, a probe sending every few microseconds from the other and noting when answers
//! come. The longest silence between answers over a span is how long forwarding stood
//! still (the CNI burst scenario and `weir-bench attach` both ask). Everything stops on
//! drop, and every loop is bounded in time and count whatever happens.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lab::{in_netns, LabError};

/// The most a flow runs, and the most probes it sends.
const LIMIT: Duration = Duration::from_secs(300);
const MAX_PROBES: u64 = 4_000_000;

/// A socket bound in namespace `ns` (`addr` may be `0.0.0.0:0`: the namespace need not
/// have an address yet).
pub fn socket_in(ns: &str, addr: SocketAddr) -> Result<UdpSocket, LabError> {
    in_netns(ns, move || UdpSocket::bind(addr))?
        .map_err(|e| LabError::new(format!("a UDP socket on {addr} in {ns}: {e}")))
}

/// Answers every datagram on `addr` in namespace `ns` with itself; stopped on drop.
#[derive(Debug)]
pub struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Starts answering.
    pub fn start(ns: &str, addr: SocketAddr) -> Result<Echo, LabError> {
        let socket = socket_in(ns, addr)?;
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| LabError::new(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let until = Instant::now() + LIMIT;
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Ok(Echo {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a probe to an [`Echo`] every `every` from `socket` and notes when answers come;
/// stopped on drop.
#[derive(Debug)]
pub struct Flow {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Instant>>>,
    sent: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Flow {
    /// Starts probing `peer` from `socket` (opened in the sender's namespace).
    pub fn start(socket: UdpSocket, peer: SocketAddr, every: Duration) -> Result<Flow, LabError> {
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .map_err(|e| LabError::new(e.to_string()))?;
        let socket = Arc::new(socket);
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + LIMIT;
        let (tx, flag, count) = (Arc::clone(&socket), Arc::clone(&stop), Arc::clone(&sent));
        let sender = std::thread::spawn(move || {
            let mut seq = 0u64;
            while !flag.load(Ordering::Relaxed) && Instant::now() < until && seq < MAX_PROBES {
                seq += 1;
                if tx.send_to(&seq.to_be_bytes(), peer).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(every);
            }
        });
        let (flag, seen) = (Arc::clone(&stop), Arc::clone(&answers));
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                if socket.recv_from(&mut buf).is_ok() {
                    if let Ok(mut v) = seen.lock() {
                        v.push(Instant::now());
                    }
                }
            }
        });
        Ok(Flow {
            stop,
            answers,
            sent,
            threads: vec![sender, receiver],
        })
    }

    /// Answers so far.
    pub fn answered(&self) -> usize {
        self.answers.lock().map_or(0, |a| a.len())
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The longest time without an answer within `from..=to` (from `from` to the first
    /// answer, between answers, and from the last to `to`), and the answers in it.
    pub fn silence(&self, from: Instant, to: Instant) -> (Duration, usize) {
        let Ok(answers) = self.answers.lock() else {
            return (to.saturating_duration_since(from), 0);
        };
        let mut worst = Duration::ZERO;
        let mut last = from;
        let mut count = 0;
        for &t in answers.iter().filter(|&&t| t >= from && t <= to) {
            worst = worst.max(t - last);
            last = t;
            count += 1;
        }
        (worst.max(to.saturating_duration_since(last)), count)
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
