//! Telling running workers about interfaces that come and go.
//!
//! Each worker has a [`PortMailbox`]: a queue of [`PortCommand`]s behind a mutex, and an
//! atomic flag saying the queue is not empty. A running worker loads the flag once per
//! round and takes the lock only when it is set, so an empty mailbox costs one atomic
//! load per round and nothing per packet. Posting a command wakes the worker through its
//! handoff [`Waker`] if it sleeps in `poll(2)`, so it is served within a round rather
//! than after a sleep.
//!
//! [`PortControl`] is the agent's side: attach an interface to one worker, detach it, and
//! tell every worker which worker owns an interface now (so frames routed to it are
//! handed to that worker), waiting for the answer with a timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::bpf::UplinkFilter;
use crate::handoff::{Links, Waker};
use crate::worker::PortSpec;

/// What a worker answers to [`PortCommand::Attach`] and [`PortCommand::Detach`]: `Err`
/// carries the worker's error as text.
pub type PortReply = Sender<Result<(), String>>;

/// A command for one worker's ports.
#[derive(Debug)]
pub enum PortCommand {
    /// Attach this interface ([`crate::worker::Worker::attach_port`], against the
    /// snapshot the worker holds when it serves the command), then answer.
    Attach(PortSpec, PortReply),
    /// Give the attached interface of the spec's name the spec's uplink filter, if it
    /// changed ([`crate::worker::Worker::refilter_port`]), then answer.
    Refilter(PortSpec, PortReply),
    /// Detach the interface of this name ([`crate::worker::Worker::detach_port`]), then
    /// answer.
    Detach(String, PortReply),
    /// Interface `name` is now owned by `worker` (`None`: by nobody, it is gone); see
    /// [`crate::worker::Worker::set_owner`].
    SetOwner { name: String, worker: Option<usize> },
    /// A pod port a worker's helper thread bound (or failed to), handed back to that
    /// worker; posted by the worker's own helper, never by the agent.
    Bound(Box<BoundPort>),
}

/// A pod interface's socket and XDP link, made by a helper thread off the worker (the
/// bind and the link wait for the kernel's RTNL lock, which a burst of pod creations
/// holds for tens of milliseconds), with the attach it answers.
#[derive(Debug)]
pub struct BoundPort {
    pub(crate) spec: PortSpec,
    pub(crate) reply: PortReply,
    pub(crate) slot: u32,
    pub(crate) result:
        Result<(crate::xsk::XskSocket, crate::bpf::XdpLink), crate::worker::WorkerError>,
}

/// One worker's command queue.
#[derive(Debug)]
pub struct PortMailbox {
    /// Set while `commands` is not empty; changed only with the lock held.
    pending: AtomicBool,
    commands: Mutex<Vec<PortCommand>>,
    waker: Option<Arc<Waker>>,
}

impl PortMailbox {
    /// An empty mailbox; posts signal `waker` (the worker's handoff waker) when given.
    pub fn new(waker: Option<Arc<Waker>>) -> PortMailbox {
        PortMailbox {
            pending: AtomicBool::new(false),
            commands: Mutex::new(Vec::new()),
            waker,
        }
    }

    /// Queues `command` and wakes the worker if it sleeps.
    pub fn post(&self, command: PortCommand) {
        {
            let mut commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
            commands.push(command);
            // SeqCst, paired with the worker's: it says it sleeps, then looks here once
            // more; we say a command waits, then look whether it sleeps.
            self.pending.store(true, Ordering::SeqCst);
        }
        if let Some(w) = &self.waker {
            w.wake();
        }
    }

    /// Whether commands wait (one atomic load; no lock).
    #[inline]
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Every command waiting, oldest first; `None`, and the commands left waiting, while
    /// a poster holds the mailbox. What a worker calls: a poster preempted with the lock
    /// held (its CPU shared with busy processes) would otherwise stop the worker until it
    /// runs again, tens of milliseconds on a loaded node.
    pub fn try_take(&self) -> Option<Vec<PortCommand>> {
        let commands = match self.commands.try_lock() {
            Ok(c) => c,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.drain(commands))
    }

    /// Empties the mailbox it holds the lock of.
    fn drain(&self, mut commands: std::sync::MutexGuard<'_, Vec<PortCommand>>) -> Vec<PortCommand> {
        self.pending.store(false, Ordering::SeqCst);
        std::mem::take(&mut *commands)
    }

    /// Every command waiting, oldest first.
    pub fn take(&self) -> Vec<PortCommand> {
        self.drain(self.commands.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The agent's handle on every worker's ports. Cloning it is cheap; all clones post to
/// the same mailboxes.
#[derive(Debug, Clone)]
pub struct PortControl {
    mailboxes: Vec<Arc<PortMailbox>>,
    /// The uplink filter each attached interface last got (attach or refilter), so an
    /// unchanged filter costs no round trip to its worker.
    filters: Arc<Mutex<HashMap<String, Option<UplinkFilter>>>>,
}

impl PortControl {
    /// One mailbox per worker of the handoff mesh `links` (as [`crate::handoff::mesh`]
    /// returns it), each waking its worker. Give worker `w` its mailbox with
    /// [`crate::worker::Worker::set_port_mailbox`]`(control.mailbox(w))`.
    pub fn new(links: &[Links]) -> PortControl {
        PortControl {
            mailboxes: links
                .iter()
                .map(|l| Arc::new(PortMailbox::new(l.wakers.get(l.me).cloned())))
                .collect(),
            filters: Arc::default(),
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.mailboxes.len()
    }

    /// Worker `worker`'s mailbox.
    ///
    /// # Panics
    /// If `worker` is not below [`PortControl::workers`].
    pub fn mailbox(&self, worker: usize) -> Arc<PortMailbox> {
        self.mailboxes[worker].clone()
    }

    /// Attaches `spec` to worker `worker` and waits up to `timeout` for it to answer;
    /// on success, tells every worker that `worker` owns the interface. Publish the
    /// snapshot that names the interface before calling this.
    ///
    /// On a timeout the command stays queued: the worker (busy, or not running) may still
    /// attach the port later. Detach it to be sure it is gone.
    pub fn attach(&self, worker: usize, spec: &PortSpec, timeout: Duration) -> Result<(), String> {
        let name = spec.name.clone();
        self.ask(worker, timeout, |reply| {
            PortCommand::Attach(spec.clone(), reply)
        })?;
        self.remember(&name, Some(spec.uplink_filter.clone()));
        self.set_owner(&name, Some(worker));
        Ok(())
    }

    /// [`PortControl::attach`] for several interfaces at once: every command is posted
    /// first, then the answers are awaited (all within `timeout`), so workers bind the
    /// ports side by side rather than one after the other. Answers in the order given.
    pub fn attach_many(
        &self,
        ports: &[(usize, &PortSpec)],
        timeout: Duration,
    ) -> Vec<Result<(), String>> {
        let deadline = std::time::Instant::now() + timeout;
        let asked: Vec<Result<std::sync::mpsc::Receiver<Result<(), String>>, String>> = ports
            .iter()
            .map(|&(worker, spec)| {
                let mailbox = self.mailbox_of(worker)?;
                let (reply, answer) = channel();
                mailbox.post(PortCommand::Attach(spec.clone(), reply));
                Ok(answer)
            })
            .collect();
        asked
            .into_iter()
            .zip(ports)
            .map(|(answer, &(worker, spec))| {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let result = answer.and_then(|a| Self::wait(&a, worker, timeout, left));
                if result.is_ok() {
                    self.remember(&spec.name, Some(spec.uplink_filter.clone()));
                    self.set_owner(&spec.name, Some(worker));
                }
                result
            })
            .collect()
    }

    /// Asks worker `worker`, which holds `spec.name`, to run the XDP program for
    /// `spec.uplink_filter` on it, and waits up to `timeout` for the answer. A filter
    /// equal to the one the interface last got through this control is not sent at all.
    pub fn refilter(
        &self,
        worker: usize,
        spec: &PortSpec,
        timeout: Duration,
    ) -> Result<(), String> {
        let last = self
            .filters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&spec.name)
            .cloned();
        if last.as_ref() == Some(&spec.uplink_filter) {
            return Ok(());
        }
        self.ask(worker, timeout, |reply| {
            PortCommand::Refilter(spec.clone(), reply)
        })?;
        self.remember(&spec.name, Some(spec.uplink_filter.clone()));
        Ok(())
    }

    /// Records (`Some`) or forgets (`None`) the filter interface `name` runs.
    fn remember(&self, name: &str, filter: Option<Option<UplinkFilter>>) {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        match filter {
            Some(f) => filters.insert(name.to_owned(), f),
            None => filters.remove(name),
        };
    }

    /// Tells every worker that interface `name` has no owner any more, then detaches it
    /// from worker `worker` and waits up to `timeout` for the answer (detaching waits for
    /// TX completions up to [`crate::worker::DETACH_WAIT`], so give it more than that).
    pub fn detach(&self, worker: usize, name: &str, timeout: Duration) -> Result<(), String> {
        self.set_owner(name, None);
        self.remember(name, None);
        self.ask(worker, timeout, |reply| {
            PortCommand::Detach(name.to_owned(), reply)
        })
    }

    /// Tells every worker that interface `name` is owned by `worker` now (`None`: by
    /// none). Workers apply it on their next round; no answer is awaited.
    pub fn set_owner(&self, name: &str, worker: Option<usize>) {
        for m in &self.mailboxes {
            m.post(PortCommand::SetOwner {
                name: name.to_owned(),
                worker,
            });
        }
    }

    fn mailbox_of(&self, worker: usize) -> Result<&Arc<PortMailbox>, String> {
        self.mailboxes.get(worker).ok_or_else(|| {
            format!(
                "there is no worker {worker} (the node runs {})",
                self.mailboxes.len()
            )
        })
    }

    fn wait(
        answer: &std::sync::mpsc::Receiver<Result<(), String>>,
        worker: usize,
        timeout: Duration,
        left: Duration,
    ) -> Result<(), String> {
        match answer.recv_timeout(left) {
            Ok(result) => result.map_err(|e| format!("worker {worker}: {e}")),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "worker {worker} did not answer within {timeout:?} (busy, or not running)"
            )),
            Err(RecvTimeoutError::Disconnected) => {
                Err(format!("worker {worker} dropped the command (it stopped)"))
            }
        }
    }

    fn ask(
        &self,
        worker: usize,
        timeout: Duration,
        command: impl FnOnce(PortReply) -> PortCommand,
    ) -> Result<(), String> {
        let mailbox = self.mailbox_of(worker)?;
        let (reply, answer) = channel();
        mailbox.post(command(reply));
        Self::wait(&answer, worker, timeout, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_uplink_filter_is_not_sent_to_the_worker_again() {
        let links = crate::handoff::mesh(1, 1, &[]).unwrap();
        let control = PortControl::new(&links);
        let mailbox = control.mailbox(0);
        let stop = Arc::new(AtomicBool::new(false));
        let refilters = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // A stand-in worker: answers every command, counts the refilters it is sent.
        let worker = {
            let (stop, refilters) = (stop.clone(), refilters.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    for c in mailbox.take() {
                        match c {
                            PortCommand::Attach(_, r) | PortCommand::Detach(_, r) => {
                                let _ = r.send(Ok(()));
                            }
                            PortCommand::Refilter(_, r) => {
                                refilters.fetch_add(1, Ordering::SeqCst);
                                let _ = r.send(Ok(()));
                            }
                            PortCommand::SetOwner { .. } | PortCommand::Bound(_) => {}
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let t = Duration::from_secs(5);
        let spec = |port: u16| PortSpec {
            name: "up0".into(),
            uplink_filter: Some(UplinkFilter {
                udp_ports: vec![port],
                ..UplinkFilter::default()
            }),
        };
        control.attach(0, &spec(51820), t).unwrap();
        control.refilter(0, &spec(51820), t).unwrap();
        assert_eq!(refilters.load(Ordering::SeqCst), 0, "same as attached");
        control.refilter(0, &spec(4789), t).unwrap();
        assert_eq!(refilters.load(Ordering::SeqCst), 1, "changed");
        control.refilter(0, &spec(4789), t).unwrap();
        assert_eq!(refilters.load(Ordering::SeqCst), 1, "same as last refilter");
        control.detach(0, "up0", t).unwrap();
        control.refilter(0, &spec(4789), t).unwrap();
        assert_eq!(refilters.load(Ordering::SeqCst), 2, "forgotten at detach");
        stop.store(true, Ordering::SeqCst);
        worker.join().unwrap();
    }

    #[test]
    fn a_mailbox_is_pending_until_taken_and_keeps_order() {
        let m = PortMailbox::new(None);
        assert!(!m.pending());
        m.post(PortCommand::SetOwner {
            name: "a".into(),
            worker: Some(1),
        });
        m.post(PortCommand::SetOwner {
            name: "b".into(),
            worker: None,
        });
        assert!(m.pending());
        let got = m.take();
        assert!(!m.pending());
        let names: Vec<&str> = got
            .iter()
            .map(|c| match c {
                PortCommand::SetOwner { name, .. } => name.as_str(),
                _ => "?",
            })
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(m.take().is_empty());
    }

    #[test]
    #[allow(unsafe_code)] // poll(2) on the waker
    fn a_post_wakes_a_sleeping_worker() {
        let links = crate::handoff::mesh(2, 1, &[]).unwrap();
        let control = PortControl::new(&links);
        let waker = links[1].wakers[1].clone();
        let readable = || {
            let mut p = libc::pollfd {
                fd: waker.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no wait.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        waker.set_sleeping(true);
        control.set_owner("x", Some(0));
        assert!(readable());
        assert!(control.mailbox(1).pending() && control.mailbox(0).pending());
    }

    #[test]
    fn asking_a_worker_that_does_not_serve_times_out_and_one_that_does_answers() {
        let links = crate::handoff::mesh(1, 1, &[]).unwrap();
        let control = PortControl::new(&links);
        let spec = PortSpec {
            name: "p".into(),
            uplink_filter: None,
        };
        let e = control
            .attach(0, &spec, Duration::from_millis(10))
            .unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
        assert!(control.attach(3, &spec, Duration::ZERO).is_err());
        let mailbox = control.mailbox(0);
        mailbox.take();
        let server = std::thread::spawn(move || {
            for _ in 0..1000 {
                for c in mailbox.take() {
                    if let PortCommand::Detach(name, reply) = c {
                        let _ = reply.send(Err(format!("{name} is not here")));
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let e = control.detach(0, "p", Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("p is not here"), "{e}");
        server.join().unwrap();
    }
}
