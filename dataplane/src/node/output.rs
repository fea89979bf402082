//! Stage `output`: where each finished packet's frame goes. The pipeline has decided that a
//! packet leaves through interface `out` (or is dropped); this stage decides how, from what
//! the worker owns: send it on one of this worker's ports, seal it for a WireGuard peer
//! first, hand it to the worker that owns `out`, or drop it because nobody owns `out`.
//!
//! - Reads: `next` (`Tx(out)`, `Steer(worker)` or `Drop`), `ingress`, `flags::ENCRYPT`, `nexthop` (the adjacency,
//!   which names the peer to seal for); the worker's [`OutputMap`].
//! - Writes: one [`Action`] per packet, the plan the driver executes. The stage counts the
//!   drops it decides; the driver counts what happens when it executes the plan
//!   (transmitted, handed off, a full TX queue or lane).
//! - Next: none: this is the last stage.
//! - Drops: the reason the pipeline chose for a `Drop`; `UnownedOutput` (no worker owns
//!   `out`: just detached, or its owner not announced yet); `TunnelUnavailable` (to be
//!   sealed on a worker that owns the uplink but runs no WireGuard: never sent in clear).
//!
//! Both drivers (AF_XDP and in-memory) execute the same plan, so the choice lives in one
//! place and is tested without a kernel.

use crate::batch::{flags, IfIndex, Meta, Next};
use crate::counters::{Counters, DropReason};
use crate::snapshot::{PeerIndex, Snapshot};

/// What the driver does with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Put it in the TX queue of this worker's port number `port`.
    Send { port: u16 },
    /// Seal it for WireGuard peer `peer`, then send the sealed frame on port `port` (the
    /// uplink).
    Seal { peer: PeerIndex, port: u16 },
    /// Copy it to worker `worker`, which owns the output (and seals it for `peer` first,
    /// when given).
    Handoff {
        worker: u16,
        out: IfIndex,
        peer: Option<PeerIndex>,
    },
    /// Copy it, as received, to worker `worker`, the owner of its flow (see
    /// [`super::steer`]), which runs the pipeline on it as received on `ingress`.
    Steer { worker: u16, ingress: IfIndex },
    /// Recycle the frame (the drop is already counted).
    #[default]
    Drop,
}

/// Who owns an interface, from one worker's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Owner {
    /// This worker, as its port number `port`.
    Here { port: u16 },
    /// Another worker.
    Worker(u16),
    /// No worker (yet, or any more).
    #[default]
    Nobody,
}

/// One worker's view of the interfaces of one snapshot generation: who owns each, and
/// whether this worker seals for WireGuard. Rebuilt by the driver when the generation (or
/// its ports) change; read per packet.
#[derive(Debug, Clone, Default)]
pub struct OutputMap {
    owners: Vec<Owner>,
    sealing: bool,
    generation: u64,
}

impl OutputMap {
    /// An empty map (nobody owns anything), for generation `u64::MAX` (none).
    pub fn new() -> Self {
        OutputMap {
            owners: Vec::new(),
            sealing: false,
            generation: u64::MAX,
        }
    }

    /// Starts over for `generation`, with `interfaces` entries all owned by nobody.
    pub fn reset(&mut self, generation: u64, interfaces: usize, sealing: bool) {
        self.owners.clear();
        self.owners.resize(interfaces, Owner::Nobody);
        self.sealing = sealing;
        self.generation = generation;
    }

    /// Records the owner of interface `at` (ignored when `at` is past the snapshot's
    /// interfaces).
    pub fn set(&mut self, at: IfIndex, owner: Owner) {
        if let Some(slot) = self.owners.get_mut(usize::from(at)) {
            *slot = owner;
        }
    }

    /// The owner of interface `at`.
    #[inline]
    pub fn owner(&self, at: IfIndex) -> Owner {
        self.owners
            .get(usize::from(at))
            .copied()
            .unwrap_or(Owner::Nobody)
    }

    /// Says whether this worker seals for WireGuard.
    pub fn set_sealing(&mut self, sealing: bool) {
        self.sealing = sealing;
    }

    /// The generation the map was built for.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What a worker does with a frame another worker handed it (see [`Action::Handoff`] and
/// [`Action::Steer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandIn {
    /// Run the pipeline on it, as received on `ingress` (a steered frame).
    Pipeline { ingress: IfIndex },
    /// Put it in the TX queue of this worker's port number `port`.
    Send { port: u16 },
    /// Seal it for WireGuard peer `peer`; the sealed frame leaves on the uplink.
    Seal { peer: PeerIndex },
}

impl OutputMap {
    /// Decides what to do with a frame handed in by another worker: steered to run the
    /// pipeline here (`run`), or finished, to leave through `out` (sealed for `seal` first
    /// when given). The indices were taken against snapshot generation `generation`.
    ///
    /// # Errors
    /// `HandoffStale` when the sender's generation is not this map's (an index of another
    /// snapshot may name another interface here); `UnownedOutput` when this worker does not
    /// own `out` (detached, or moved, since the sender looked); `TunnelUnavailable` for a
    /// frame to seal on a worker that runs no WireGuard.
    pub fn hand_in(
        &self,
        generation: u64,
        run: bool,
        out: IfIndex,
        seal: Option<PeerIndex>,
    ) -> Result<HandIn, DropReason> {
        if generation != self.generation {
            return Err(DropReason::HandoffStale);
        }
        if run {
            return Ok(HandIn::Pipeline { ingress: out });
        }
        match (self.owner(out), seal) {
            // Never sent in clear: as `run` decides for the frames of this worker's batch.
            (Owner::Here { .. }, Some(_)) if !self.sealing => Err(DropReason::TunnelUnavailable),
            (Owner::Here { .. }, Some(peer)) => Ok(HandIn::Seal { peer }),
            (Owner::Here { port }, None) => Ok(HandIn::Send { port }),
            _ => Err(DropReason::UnownedOutput),
        }
    }
}

/// Runs the stage: writes `plan[i]` for every packet of the batch.
///
/// # Panics
/// If a packet is not at `Tx`, `Steer` or `Drop` (the pipeline was not run over the batch: a driver
/// bug), or `plan` is shorter than `meta`.
pub fn run(
    meta: &[Meta],
    snapshot: &Snapshot,
    map: &OutputMap,
    plan: &mut [Action],
    counters: &mut Counters,
) {
    assert!(
        plan.len() >= meta.len(),
        "the plan is shorter than the batch"
    );
    for (m, action) in meta.iter().zip(plan.iter_mut()) {
        *action = match m.next {
            Next::Tx(out) => decide(m, out, snapshot, map, counters),
            Next::Steer(worker) => Action::Steer {
                worker,
                ingress: m.ingress,
            },
            Next::Drop(reason) => {
                counters.drop(reason);
                Action::Drop
            }
            other => panic!("packet left the pipeline unfinished at {other:?}"),
        };
    }
}

#[inline]
fn decide(
    m: &Meta,
    out: IfIndex,
    snapshot: &Snapshot,
    map: &OutputMap,
    counters: &mut Counters,
) -> Action {
    let peer = if m.has(flags::ENCRYPT) {
        // Set only by `forward`, from an `Encrypt` adjacency, which names its peer.
        snapshot
            .fib
            .adjacencies
            .get(m.nexthop as usize)
            .map(|a| a.peer)
    } else {
        None
    };
    match (map.owner(out), peer) {
        (Owner::Here { port }, None) => Action::Send { port },
        (Owner::Here { port }, Some(peer)) if map.sealing => Action::Seal { peer, port },
        (Owner::Here { .. }, Some(_)) => {
            counters.drop(DropReason::TunnelUnavailable);
            Action::Drop
        }
        (Owner::Worker(worker), peer) => Action::Handoff { worker, out, peer },
        (Owner::Nobody, _) => {
            counters.drop(DropReason::UnownedOutput);
            Action::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{NextHop, PeerSpec, Prefix, SnapshotBuilder, Tunnel};

    fn node_with_wireguard() -> Snapshot {
        let mut b = SnapshotBuilder::new();
        let up = b.uplink("up0", [2, 0, 0, 0, 0, 1], 1500).unwrap();
        assert_eq!(up, 0);
        let n = b.node("b", "198.18.0.2".parse().unwrap(), Some([2, 0, 0, 0, 0, 2]));
        b.wireguard("198.18.0.1:51820".parse().unwrap());
        b.peer(PeerSpec {
            node: n,
            name: "b".into(),
            public_key: [7; 32],
            endpoint: "198.18.0.2:51820".parse().unwrap(),
            allowed_ips: vec!["198.19.2.0/24".parse().unwrap()],
            persistent_keepalive: None,
        });
        let p: Prefix = "198.19.2.0/24".parse().unwrap();
        b.route(
            p,
            NextHop::Remote {
                node: n,
                tunnel: Tunnel::WireGuard,
            },
        );
        b.build(1).unwrap()
    }

    fn packet(next: Next, encrypt: bool, nexthop: u32) -> Meta {
        let mut m = Meta::new(0);
        m.next = next;
        m.nexthop = nexthop;
        if encrypt {
            m.flags |= flags::ENCRYPT;
        }
        m
    }

    #[test]
    fn each_owner_gets_its_action_and_the_drops_are_counted() {
        let s = node_with_wireguard();
        let encrypt = s
            .fib
            .adjacencies
            .iter()
            .position(|a| a.action == crate::snapshot::AdjacencyAction::Encrypt)
            .unwrap() as u32;
        let mut map = OutputMap::new();
        map.reset(s.generation, 3, true);
        map.set(0, Owner::Here { port: 4 });
        map.set(1, Owner::Worker(2));
        let meta = [
            packet(Next::Tx(0), false, 0),
            packet(Next::Tx(0), true, encrypt),
            packet(Next::Tx(1), true, encrypt),
            packet(Next::Tx(2), false, 0),
            packet(Next::Drop(DropReason::NoRoute), false, 0),
        ];
        let mut plan = [Action::default(); 5];
        let mut c = Counters::default();
        run(&meta, &s, &map, &mut plan, &mut c);
        assert_eq!(
            plan,
            [
                Action::Send { port: 4 },
                Action::Seal { peer: 0, port: 4 },
                Action::Handoff {
                    worker: 2,
                    out: 1,
                    peer: Some(0)
                },
                Action::Drop,
                Action::Drop,
            ]
        );
        assert_eq!(c.dropped(DropReason::UnownedOutput), 1);
        assert_eq!(c.dropped(DropReason::NoRoute), 1);

        // The same uplink on a worker without WireGuard: never sent in clear.
        map.reset(s.generation, 3, false);
        map.set(0, Owner::Here { port: 4 });
        let mut c = Counters::default();
        run(&meta[1..2], &s, &map, &mut plan, &mut c);
        assert_eq!(plan[0], Action::Drop);
        assert_eq!(c.dropped(DropReason::TunnelUnavailable), 1);
    }

    #[test]
    fn handed_in_frames_are_run_sent_sealed_or_dropped_by_name() {
        let mut map = OutputMap::new();
        map.reset(7, 3, true);
        map.set(1, Owner::Here { port: 4 });
        map.set(2, Owner::Worker(1));
        assert_eq!(
            map.hand_in(7, true, 2, None),
            Ok(HandIn::Pipeline { ingress: 2 })
        );
        assert_eq!(map.hand_in(7, false, 1, None), Ok(HandIn::Send { port: 4 }));
        assert_eq!(
            map.hand_in(7, false, 1, Some(9)),
            Ok(HandIn::Seal { peer: 9 })
        );
        assert_eq!(
            map.hand_in(7, false, 2, None),
            Err(DropReason::UnownedOutput)
        );
        assert_eq!(
            map.hand_in(7, false, 0, Some(9)),
            Err(DropReason::UnownedOutput)
        );
        assert_eq!(
            map.hand_in(7, false, 99, None),
            Err(DropReason::UnownedOutput)
        );
        assert_eq!(
            map.hand_in(6, false, 1, None),
            Err(DropReason::HandoffStale)
        );
        assert_eq!(map.hand_in(6, true, 1, None), Err(DropReason::HandoffStale));
        map.set_sealing(false);
        assert_eq!(
            map.hand_in(7, false, 1, Some(9)),
            Err(DropReason::TunnelUnavailable)
        );
        assert_eq!(map.hand_in(7, false, 1, None), Ok(HandIn::Send { port: 4 }));
    }

    #[test]
    fn a_node_without_a_peer_is_never_reached_in_clear() {
        let mut b = SnapshotBuilder::new();
        b.uplink("up0", [2, 0, 0, 0, 0, 1], 1500).unwrap();
        let n = b.node("c", "198.18.0.3".parse().unwrap(), Some([2, 0, 0, 0, 0, 3]));
        b.route(
            "198.19.3.0/24".parse().unwrap(),
            NextHop::Remote {
                node: n,
                tunnel: Tunnel::WireGuard,
            },
        );
        let s = b.build(1).unwrap();
        assert!(s
            .fib
            .adjacencies
            .iter()
            .any(|a| a.action == crate::snapshot::AdjacencyAction::NoPeer));
    }
}
