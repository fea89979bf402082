//! One round's frame movements: receiving into the batch (WireGuard opened on the way in),
//! executing the output stage's plan (stage, seal, hand off, recycle), frames handed in by
//! other workers, sealing, and pushing what is staged into the TX rings. Decisions are the
//! pipeline's ([`weir_dataplane::node::output`]); this module only carries them out and
//! counts what happens when it does.

use weir_dataplane::node::output::{Action, HandIn};
use weir_dataplane::{DropReason, FrameRegion, Snapshot, BATCH_SIZE};

use super::{Worker, MAX_KICKS, STAGE_LIMIT};
use crate::wireguard::Inbound;
use crate::xsk::XDP_PACKET_HEADROOM;

impl Worker {
    /// Receives a burst from every port into the batch, up to its size; returns how many
    /// frames the kernel gave.
    pub(super) fn receive(&mut self, snapshot: &Snapshot) -> usize {
        let mut received = 0;
        for i in 0..self.ports.len() {
            let room = BATCH_SIZE - self.batch.len();
            if room == 0 {
                break;
            }
            self.rx.clear();
            let p = &mut self.ports[i];
            let n = p.socket.recv(&mut self.rx, room);
            p.lent_fill -= n.min(p.lent_fill);
            let ingress = p.index;
            received += n;
            if self.uplink_port == Some(i) {
                if let Some(tunnel) = self.tunnel.as_mut() {
                    let area = self.umem.region_mut();
                    let (free, counters) = (&mut self.free, self.pipeline.counters_mut());
                    let (control, flush) = (&mut self.control, &mut self.flush);
                    self.rx.retain_mut(|(addr, len)| {
                        match tunnel.receive(snapshot, area, free, *addr, *len, counters) {
                            Inbound::Pass => true,
                            Inbound::Deliver(n) => {
                                *len = n;
                                true
                            }
                            Inbound::Reply(a, l, peer) => {
                                control.push((a, l));
                                flush.extend(peer);
                                false
                            }
                            Inbound::Done => false,
                        }
                    });
                }
            }
            // The kernel wrote these headers on another core: touch the first line of
            // each before parsing any, so that the misses overlap instead of queueing
            // one behind the other in the pipeline.
            let area = self.umem.region();
            let mut touched = 0u8;
            for &(addr, _) in &self.rx {
                touched ^= area.get(addr as usize).copied().unwrap_or(0);
            }
            std::hint::black_box(touched);
            let frame_size = self.umem.frame_size() as usize;
            let region = FrameRegion::new(self.umem.region_mut(), frame_size);
            for &(addr, len) in &self.rx {
                let rejected = match region.frame(addr, len as usize) {
                    Ok(frame) => match self.batch.push(frame, ingress) {
                        Ok(()) => None,
                        // Cannot happen: the burst was sized to the batch's room.
                        Err(frame) => Some(frame.chunk()),
                    },
                    // The kernel gave a descriptor outside the area.
                    Err(_) => Some(addr),
                };
                if let Some(addr) = rejected {
                    let c = self.pipeline.counters_mut();
                    c.rx += 1;
                    c.drop(DropReason::BadDescriptor);
                    self.free.push(addr);
                }
            }
        }
        self.report.rx_frames += received as u64;
        received
    }

    /// Carries out the output stage's plan for the processed batch.
    pub(super) fn execute_plan(&mut self) {
        let (pipeline, ports, free, plan) = (
            &mut self.pipeline,
            &mut self.ports,
            &mut self.free,
            &self.plan,
        );
        let (area, links, handed, to_seal) = (
            self.umem.region(),
            &self.links,
            &mut self.handed,
            &mut self.to_seal,
        );
        let generation = self.map.generation();
        let mut i = 0;
        self.batch.drain(|frame, _| {
            let action = plan.get(i).copied().unwrap_or_default();
            i += 1;
            match action {
                Action::Send { port } => match ports.get_mut(usize::from(port)) {
                    Some(p) if p.staged.len() < STAGE_LIMIT => {
                        p.staged.push((frame.addr(), frame.len() as u32));
                    }
                    _ => {
                        pipeline.drop(DropReason::TxRingFull);
                        free.push(frame.chunk());
                    }
                },
                Action::Seal { peer, .. } => {
                    to_seal.push((peer, frame.addr(), frame.len() as u32));
                }
                Action::Handoff { worker, out, peer } => {
                    let w = usize::from(worker);
                    let start = frame.addr() as usize;
                    let sent = match (
                        links.outbound.get(w).and_then(Option::as_ref),
                        area.get(start..start + frame.len()),
                    ) {
                        (Some(lane), Some(bytes)) => lane.send_parcel(out, peer, generation, bytes),
                        _ => false,
                    };
                    if sent {
                        pipeline.counters_mut().handoff_out += 1;
                        if let Some(h) = handed.get_mut(w) {
                            *h = true;
                        }
                    } else {
                        pipeline.drop(DropReason::HandoffFull);
                    }
                    free.push(frame.chunk());
                }
                Action::Steer { worker, ingress } => {
                    let w = usize::from(worker);
                    let start = frame.addr() as usize;
                    let sent = match (
                        links.outbound.get(w).and_then(Option::as_ref),
                        area.get(start..start + frame.len()),
                    ) {
                        (Some(lane), Some(bytes)) => {
                            lane.send_to_pipeline(ingress, generation, bytes)
                        }
                        _ => false,
                    };
                    if sent {
                        pipeline.counters_mut().handoff_out += 1;
                        if let Some(h) = handed.get_mut(w) {
                            *h = true;
                        }
                    } else {
                        pipeline.drop(DropReason::HandoffFull);
                    }
                    free.push(frame.chunk());
                }
                Action::Drop => free.push(frame.chunk()),
            }
        });
    }

    /// Frames other workers handed over: each is copied into a free frame of ours and
    /// staged on its output port (or queued for sealing), or, for a flow this worker owns,
    /// put in the batch to run the pipeline on (before anything is received).
    pub(super) fn take_handoffs(&mut self) {
        let mut budget = BATCH_SIZE;
        // Taken out for the loop (the lanes are not touched otherwise), put back after.
        let inbound = std::mem::take(&mut self.links.inbound);
        for lane in &inbound {
            while budget > 0 {
                let Some(parcel) = lane.receive() else { break };
                budget -= 1;
                let len = usize::from(parcel.len);
                self.pipeline.counters_mut().handoff_in += 1;
                let outcome = self
                    .map
                    .hand_in(parcel.generation, parcel.run, parcel.out, parcel.seal)
                    .and_then(|plan| self.take_handed(plan, &parcel.bytes[..len]));
                if let Err(reason) = outcome {
                    self.pipeline.drop(reason);
                }
                lane.recycle(parcel.bytes);
            }
        }
        self.links.inbound = inbound;
    }

    /// Copies `bytes`, handed in by another worker, into a free frame and puts it where
    /// `plan` says: in the batch (to run the pipeline on), in a port's TX stage, or in the
    /// queue for sealing. Frames keep the usual headroom, which sealing writes outer headers
    /// into.
    fn take_handed(&mut self, plan: HandIn, bytes: &[u8]) -> Result<(), DropReason> {
        let frame_size = self.umem.frame_size() as usize;
        // Checked in the in-memory driver's order: size, free frame, room on the port.
        if XDP_PACKET_HEADROOM as usize + bytes.len() > frame_size {
            return Err(DropReason::TooBig);
        }
        let base = self.free.pop().ok_or(DropReason::FillStarved)?;
        if let HandIn::Send { port } = plan {
            if self.ports[usize::from(port)].staged.len() >= STAGE_LIMIT {
                self.free.push(base);
                return Err(DropReason::TxRingFull);
            }
        }
        let mut region = FrameRegion::new(self.umem.region_mut(), frame_size);
        let Ok(frame) = region.fill(base, XDP_PACKET_HEADROOM as usize, bytes) else {
            self.free.push(base);
            return Err(DropReason::TooBig);
        };
        match plan {
            HandIn::Pipeline { ingress } => {
                self.batch.push_handed(frame, ingress).map_err(|frame| {
                    self.free.push(frame.chunk());
                    DropReason::HandoffFull
                })
            }
            HandIn::Seal { peer } => {
                self.to_seal.push((peer, frame.addr(), frame.len() as u32));
                Ok(())
            }
            HandIn::Send { port } => {
                self.ports[usize::from(port)]
                    .staged
                    .push((frame.addr(), frame.len() as u32));
                Ok(())
            }
        }
    }

    /// Seals what waits in `to_seal`, flushes the peers whose handshake completed, and
    /// stages the results with the tunnel's control messages on the uplink.
    pub(super) fn seal_pending(&mut self, snapshot: &Snapshot) {
        let (Some(tunnel), Some(up)) = (self.tunnel.as_mut(), self.uplink_port) else {
            // Sealing was planned where no WireGuard runs (the uplink just moved): never
            // sent in clear.
            for (_, addr, _) in self.to_seal.drain(..) {
                self.free.push(addr);
                self.pipeline.drop(DropReason::TunnelUnavailable);
            }
            for (addr, _) in self.control.drain(..) {
                self.free.push(addr);
                self.pipeline.drop(DropReason::TunnelUnavailable);
            }
            self.flush.clear();
            return;
        };
        let area = self.umem.region_mut();
        let counters = self.pipeline.counters_mut();
        for (peer, addr, len) in self.to_seal.drain(..) {
            if let Some(f) = tunnel.seal(snapshot, area, &mut self.free, peer, addr, len, counters)
            {
                self.control.push(f);
            }
        }
        for id in self.flush.drain(..) {
            tunnel.flush(
                snapshot,
                area,
                &mut self.free,
                id,
                &mut self.control,
                counters,
            );
        }
        let port = &mut self.ports[up];
        for f in self.control.drain(..) {
            if port.staged.len() < STAGE_LIMIT {
                port.staged.push(f);
            } else {
                counters.drop(DropReason::TxRingFull);
                self.free.push(f.0);
            }
        }
    }

    /// Pushes what is staged into the TX rings and kicks the kernel.
    pub(super) fn transmit(&mut self) {
        for p in &mut self.ports {
            if !p.staged.is_empty() {
                let n = p.socket.send(&p.staged);
                if n < p.staged.len() {
                    self.report.tx_ring_full += 1;
                }
                p.staged.drain(..n);
                p.lent_tx += n;
                self.report.tx_frames += n as u64;
                self.pipeline.sent(n);
            }
            // Copy mode sends a small budget per wakeup: kick until the kernel has taken
            // what the ring holds (bounded). A kick that fails is retried on the next
            // round; the frames stay in the ring.
            for _ in 0..MAX_KICKS {
                if p.socket.tx_pending() == 0 || p.socket.kick().is_err() {
                    break;
                }
            }
        }
    }
}
