//! The traffic engine of `weir-bench forward`: one thread, pinned to its own core, that
//! writes UDP frames into the generator namespace's `eth0` through an AF_XDP socket and
//! reads them back from the sink namespace's `eth0` through another, taking the send time
//! out of each payload for the latency histogram.
//!
//! Built on weir's own AF_XDP layer (`weir_workers::xsk`): it is the fastest generator on
//! this topology (trafgen and `pktgen` go through the qdisc layer, testpmd's `txonly`
//! cannot also receive and timestamp in the same process), and it lets one thread both
//! send and receive, so that both timestamps come from the same clock on the same core.
//!
//! Payload of every frame (after the 42 bytes of Ethernet, IPv4 and UDP headers):
//! a 16-bit trial tag, the 64-bit sequence number and the 64-bit send time
//! (`CLOCK_MONOTONIC`, ns), which fills a 60-byte frame (64 B on the wire with the FCS)
//! exactly. Frames of another trial, and foreign frames, are not counted as delivered.
//!
//! The sink checks the answer, not only the arrival: a frame of the trial counts as
//! delivered only with the source address the trial expects ([`Target::sink_src`]: the
//! generator's own, or the node's behind source NAT) and a valid IPv4 header checksum.
//! A frame that still carries the generator's address where the node's was expected is
//! counted as *untranslated*; one with any other source or a broken header checksum as
//! *mangled*. Neither counts towards the rate.
//!
//! Every trial is bounded in time and in packets, and the engine stops when its
//! [`Traffic`] handle drops.

use std::net::Ipv4Addr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use weir_workers::bpf::{self, AttachMode, XdpLink, XdpProgram, XskMap};
use weir_workers::xsk::{SocketConfig, Umem, UmemConfig, XskSocket};

use super::lab::{Mac, POD_IF};
use weir_testkit::lab::setns;

/// The UDP destination port of the benchmark traffic (discard).
pub const UDP_PORT: u16 = 9;
/// The shortest frame the engine sends: 60 bytes, 64 on the wire with the FCS.
pub const MIN_FRAME: usize = 60;
/// The longest: a 1500-byte IP packet in its Ethernet header.
pub const MAX_FRAME: usize = 1514;

const PAYLOAD: usize = 42;
const TAG_AT: usize = PAYLOAD;
const SEQ_AT: usize = PAYLOAD + 2;
const TS_AT: usize = PAYLOAD + 10;
const BATCH: usize = 64;
const FRAMES: u32 = 4096;
/// Latencies above this are clamped into the histogram's top bucket.
const MAX_LATENCY_NS: u64 = 10_000_000_000;

/// The one flow (with `flows` source ports) the generator sends; its destination is the
/// trial's ([`Target`]).
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub src_mac: Mac,
    /// The next hop's MAC: the node-side interface of the generator's veth.
    pub dst_mac: Mac,
    pub src_ip: Ipv4Addr,
    /// Number of UDP source ports the sequence numbers cycle through (from 1024).
    pub flows: u16,
}

/// Where a trial's frames go, and what the sink expects of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The destination address the generator writes.
    pub dst_ip: Ipv4Addr,
    /// The UDP destination port the generator writes ([`UDP_PORT`] unless a service
    /// translates it to that).
    pub dst_port: u16,
    /// The source address a correctly forwarded frame has at the sink: the generator's
    /// own, or the node's when the forwarder translates.
    pub sink_src: Ipv4Addr,
    /// The destination address a correctly forwarded frame has at the sink: `dst_ip`, or
    /// the backend's when the forwarder translates a service address. The destination port
    /// at the sink is always [`UDP_PORT`].
    pub sink_dst: Ipv4Addr,
}

impl Target {
    /// Straight to `dst` on [`UDP_PORT`], from `src`, untranslated.
    pub fn direct(src: Ipv4Addr, dst: Ipv4Addr) -> Target {
        Target {
            dst_ip: dst,
            dst_port: UDP_PORT,
            sink_src: src,
            sink_dst: dst,
        }
    }
}

/// One trial: where to, frame size, offered rate (`None`: as fast as the generator goes),
/// and its bounds.
#[derive(Debug, Clone, Copy)]
pub struct TrialSpec {
    pub target: Target,
    pub frame_len: usize,
    pub rate_pps: Option<f64>,
    pub duration: Duration,
    pub max_packets: u64,
}

/// What a trial saw.
#[derive(Debug)]
pub struct TrialOutcome {
    /// Frames the generator's TX ring accepted.
    pub sent: u64,
    /// Frames of this trial that reached the sink with the expected source address and a
    /// valid IPv4 header checksum.
    pub delivered: u64,
    /// Frames of this trial that reached the sink with the generator's source address
    /// where the trial expected another (the node's, behind source NAT).
    pub untranslated: u64,
    /// Frames of this trial that reached the sink with any other source address, or a
    /// broken IPv4 header checksum.
    pub mangled: u64,
    /// Frames of other trials or other senders that reached the sink.
    pub foreign: u64,
    /// Seconds the generator sent for.
    pub send_seconds: f64,
    /// Sending rounds in which the generator could not send all it wanted: too few free
    /// frames (completions lagged) or a full TX ring (the kernel had not taken them).
    pub out_of_frames: u64,
    /// Sending rounds in all.
    pub rounds: u64,
    /// One-way latency, generator TX to sink RX, in ns.
    pub latency_ns: Histogram<u64>,
}

impl TrialOutcome {
    /// Frames per second the generator offered.
    pub fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.send_seconds.max(1e-9)
    }

    /// Frames per second delivered to the sink.
    pub fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.send_seconds.max(1e-9)
    }

    /// Share of the sending rounds that were short of frames, in percent.
    pub fn stalled_pct(&self) -> f64 {
        100.0 * self.out_of_frames as f64 / self.rounds.max(1) as f64
    }

    /// Share of the sent frames that never arrived, in percent.
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * self.sent.saturating_sub(self.delivered) as f64 / self.sent as f64
    }
}

enum Cmd {
    Trial(TrialSpec, Sender<Result<TrialOutcome, String>>),
}

/// The running engine; dropping it stops its thread and detaches the sink's program.
#[derive(Debug)]
pub struct Traffic {
    cmd: Option<Sender<Cmd>>,
    handle: Option<JoinHandle<()>>,
}

impl Traffic {
    /// Starts the engine thread on `cpu`, with its sockets in namespaces `gen_ns` and
    /// `sink_ns` (on their `eth0`).
    pub fn start(gen_ns: &str, sink_ns: &str, cpu: usize, flow: Flow) -> Result<Traffic, String> {
        let (cmd_tx, cmd_rx) = channel::<Cmd>();
        let (ready_tx, ready_rx) = channel::<Result<(), String>>();
        let (gen_ns, sink_ns) = (gen_ns.to_owned(), sink_ns.to_owned());
        let handle = std::thread::Builder::new()
            .name("weir-bench-traffic".into())
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    let _ = ready_tx.send(Err(format!("cannot pin the generator to CPU {cpu}")));
                    return;
                }
                let mut engine = match Engine::new(&gen_ns, &sink_ns, flow) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                serve(&mut engine, &cmd_rx);
            })
            .map_err(|e| format!("generator thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Traffic {
                cmd: Some(cmd_tx),
                handle: Some(handle),
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err("the generator thread ended before it was ready".into())
            }
        }
    }

    /// Runs one trial and waits for its outcome.
    pub fn trial(&self, spec: TrialSpec) -> Result<TrialOutcome, String> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&spec.frame_len) {
            return Err(format!(
                "frame size {} B is outside {MIN_FRAME}..={MAX_FRAME}",
                spec.frame_len
            ));
        }
        let (tx, rx) = channel();
        self.cmd
            .as_ref()
            .ok_or("generator stopped")?
            .send(Cmd::Trial(spec, tx))
            .map_err(|_| "the generator thread is gone")?;
        rx.recv().map_err(|_| "the generator thread is gone")?
    }

    /// Sends a slow trickle to `target` until a frame reaches the sink as expected (the
    /// forwarder is up), at most `timeout`. Returns whether one did.
    pub fn wait_for_path(
        &self,
        target: Target,
        frame_len: usize,
        timeout: Duration,
    ) -> Result<bool, String> {
        let started = std::time::Instant::now();
        while started.elapsed() < timeout {
            let probe = self.trial(TrialSpec {
                target,
                frame_len,
                rate_pps: Some(10_000.0),
                duration: Duration::from_millis(100),
                max_packets: 1_000,
            })?;
            if probe.delivered > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        // Closing the channel ends the engine's loop.
        self.cmd.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(engine: &mut Engine, cmds: &Receiver<Cmd>) {
    while let Ok(cmd) = cmds.recv() {
        match cmd {
            Cmd::Trial(spec, reply) => {
                let _ = reply.send(engine.trial(&spec));
            }
        }
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// Field order is drop order: sockets close before their UMEMs are unmapped, and the
// sink's program is detached first.
struct Engine {
    _link: XdpLink,
    _program: XdpProgram,
    gen: XskSocket,
    sink: XskSocket,
    _map: XskMap,
    gen_umem: Umem,
    sink_umem: Umem,
    gen_free: Vec<u64>,
    sink_free: Vec<u64>,
    flow: Flow,
    trials: u16,
    descs: Vec<(u64, u32)>,
    rx: Vec<(u64, u32)>,
}

impl Engine {
    fn new(gen_ns: &str, sink_ns: &str, flow: Flow) -> Result<Engine, String> {
        let umem_cfg = UmemConfig {
            frame_count: FRAMES,
            ..UmemConfig::default()
        };
        let sock_cfg = SocketConfig::default();
        setns(gen_ns)?;
        let gen_umem = Umem::new(&umem_cfg).map_err(|e| format!("generator UMEM: {e}"))?;
        let gen_if = bpf::ifindex(POD_IF).map_err(|e| format!("{gen_ns}: {e}"))?;
        let gen = XskSocket::bind(&gen_umem, gen_if, 0, &sock_cfg, None)
            .map_err(|e| format!("generator socket: {e}"))?;
        setns(sink_ns)?;
        let sink_umem = Umem::new(&umem_cfg).map_err(|e| format!("sink UMEM: {e}"))?;
        let sink_if = bpf::ifindex(POD_IF).map_err(|e| format!("{sink_ns}: {e}"))?;
        let mut sink = XskSocket::bind(&sink_umem, sink_if, 0, &sock_cfg, None)
            .map_err(|e| format!("sink socket: {e}"))?;
        let map = XskMap::new(1).map_err(|e| format!("sink map: {e}"))?;
        map.set(0, sink.fd())
            .map_err(|e| format!("sink map: {e}"))?;
        let program = XdpProgram::redirect_all(&map).map_err(|e| format!("sink program: {e}"))?;
        let link = XdpLink::attach(&program, sink_if, AttachMode::NativeOrGeneric)
            .map_err(|e| format!("sink program: {e}"))?;
        let mut sink_free: Vec<u64> = sink_umem.frames().collect();
        sink.fill(&mut sink_free);
        let gen_free = gen_umem.frames().collect();
        Ok(Engine {
            _link: link,
            _program: program,
            gen,
            sink,
            _map: map,
            gen_umem,
            sink_umem,
            gen_free,
            sink_free,
            flow,
            trials: 0,
            descs: Vec::with_capacity(BATCH),
            rx: Vec::with_capacity(256),
        })
    }

    fn trial(&mut self, spec: &TrialSpec) -> Result<TrialOutcome, String> {
        self.trials = self.trials.wrapping_add(1);
        let tag = self.trials;
        let len = spec.frame_len;
        // Every generator frame must be back before the template is rewritten.
        let waited = now_ns();
        while self.gen_free.len() < FRAMES as usize {
            self.gen.complete(&mut self.gen_free);
            let _ = self.gen.kick();
            if now_ns() - waited > 2_000_000_000 {
                return Err(format!(
                    "{} generator frames still in the kernel's hands after 2 s",
                    FRAMES as usize - self.gen_free.len()
                ));
            }
        }
        let template = frame_template(&self.flow, spec.target.dst_ip, spec.target.dst_port, len);
        for &addr in &self.gen_free {
            let frame = self
                .gen_umem
                .packet_mut(addr, len as u32)
                .ok_or("generator frame outside the UMEM")?;
            frame.copy_from_slice(&template);
            frame[TAG_AT..TAG_AT + 2].copy_from_slice(&tag.to_be_bytes());
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3)
            .map_err(|e| format!("histogram: {e}"))?;
        let mut seen = Seen::default();
        let mut sent = 0u64;
        let (mut out_of_frames, mut rounds) = (0u64, 0u64);
        let start = now_ns();
        let deadline = start + spec.duration.as_nanos() as u64;
        let mut end = start;
        loop {
            let t = now_ns();
            if t >= deadline || sent >= spec.max_packets {
                end = end.max(t);
                break;
            }
            self.gen.complete(&mut self.gen_free);
            let due = match spec.rate_pps {
                None => BATCH as u64,
                Some(rate) => {
                    let owed = ((t - start) as f64 * rate / 1e9) as u64;
                    owed.saturating_sub(sent).min(BATCH as u64)
                }
            }
            .min(spec.max_packets - sent) as usize;
            if due > 0 {
                rounds += 1;
                let n = due.min(self.gen_free.len());
                if n < due {
                    out_of_frames += 1;
                }
                self.descs.clear();
                for k in 0..n {
                    let addr = self.gen_free[self.gen_free.len() - 1 - k];
                    let seq = sent + k as u64;
                    let frame = self
                        .gen_umem
                        .packet_mut(addr, len as u32)
                        .ok_or("generator frame outside the UMEM")?;
                    let sport = 1024 + (seq % u64::from(self.flow.flows.max(1))) as u16;
                    frame[34..36].copy_from_slice(&sport.to_be_bytes());
                    frame[SEQ_AT..SEQ_AT + 8].copy_from_slice(&seq.to_le_bytes());
                    frame[TS_AT..TS_AT + 8].copy_from_slice(&t.to_le_bytes());
                    self.descs.push((addr, len as u32));
                }
                let accepted = self.gen.send(&self.descs);
                if accepted < n && n == due {
                    // Frames there, but the TX ring full: the kernel has not taken them.
                    out_of_frames += 1;
                }
                let keep = self.gen_free.len() - accepted;
                self.gen_free.truncate(keep);
                sent += accepted as u64;
            }
            self.push_out();
            self.receive(tag, spec.target, &mut hist, &mut seen);
        }
        // Drain: until nothing arrives for 50 ms (at most 1 s).
        let drain_start = now_ns();
        let mut last_seen = drain_start;
        loop {
            let before = seen.total();
            self.gen.complete(&mut self.gen_free);
            let _ = self.gen.kick();
            self.receive(tag, spec.target, &mut hist, &mut seen);
            let t = now_ns();
            if seen.total() > before {
                last_seen = t;
            }
            if t - last_seen > 50_000_000 || t - drain_start > 1_000_000_000 {
                break;
            }
        }
        Ok(TrialOutcome {
            sent,
            delivered: seen.delivered,
            untranslated: seen.untranslated,
            mangled: seen.mangled,
            foreign: seen.foreign,
            send_seconds: (end - start) as f64 / 1e9,
            out_of_frames,
            rounds,
            latency_ns: hist,
        })
    }

    /// Kicks until the kernel has taken the TX ring or stops taking (copy mode sends 32
    /// frames per wakeup; a kick that takes nothing means the kernel pushes back).
    fn push_out(&mut self) {
        for _ in 0..(BATCH / 32 + 2) {
            let before = self.gen.tx_pending();
            if before == 0 || self.gen.kick().is_err() || self.gen.tx_pending() == before {
                break;
            }
        }
    }

    fn receive(&mut self, tag: u16, target: Target, hist: &mut Histogram<u64>, seen: &mut Seen) {
        self.rx.clear();
        let n = self.sink.recv(&mut self.rx, 256);
        if n > 0 {
            let now = now_ns();
            let gen_src = self.flow.src_ip;
            for &(addr, len) in &self.rx {
                let arrival = self
                    .sink_umem
                    .packet(addr, len)
                    .map_or(Arrival::Foreign, |p| arrival(p, tag, target, gen_src));
                match arrival {
                    Arrival::Delivered(sent_at) => {
                        seen.delivered += 1;
                        hist.saturating_record(
                            now.saturating_sub(sent_at).clamp(1, MAX_LATENCY_NS),
                        );
                    }
                    Arrival::Untranslated => seen.untranslated += 1,
                    Arrival::Mangled => seen.mangled += 1,
                    Arrival::Foreign => seen.foreign += 1,
                }
                self.sink_free.push(self.sink_umem.frame_base(addr));
            }
        }
        self.sink.fill(&mut self.sink_free);
        if self.sink.fill_needs_wakeup() {
            let _ = self.sink.wake_rx();
        }
    }
}

/// What the sink counted in one trial.
#[derive(Debug, Default)]
struct Seen {
    delivered: u64,
    untranslated: u64,
    mangled: u64,
    foreign: u64,
}

impl Seen {
    fn total(&self) -> u64 {
        self.delivered + self.untranslated + self.mangled + self.foreign
    }
}

/// What one frame at the sink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// A frame of the trial, as expected; its send time.
    Delivered(u64),
    /// A frame of the trial with the generator's address where another was expected, or
    /// still addressed to the destination the generator wrote where a translation to
    /// another was expected.
    Untranslated,
    /// A frame of the trial with another source or destination, or a broken IPv4 header
    /// checksum.
    Mangled,
    /// Not a frame of this trial.
    Foreign,
}

/// Sorts a frame at the sink: a benchmark frame of trial `tag` (Ethernet, IPv4 without
/// options, UDP, the tag in the payload) is checked against `target` (source, destination
/// address, and destination port [`UDP_PORT`]); `gen_src` is the generator's own address.
fn arrival(p: &[u8], tag: u16, target: Target, gen_src: Ipv4Addr) -> Arrival {
    if p.len() < MIN_FRAME
        || p[12..14] != [0x08, 0x00]
        || p[23] != 17
        || p[TAG_AT..TAG_AT + 2] != tag.to_be_bytes()
    {
        return Arrival::Foreign;
    }
    let src = Ipv4Addr::new(p[26], p[27], p[28], p[29]);
    let dst = Ipv4Addr::new(p[30], p[31], p[32], p[33]);
    let dport = u16::from_be_bytes([p[36], p[37]]);
    if src == gen_src && target.sink_src != gen_src {
        return Arrival::Untranslated;
    }
    let sent_to = (target.dst_ip, target.dst_port);
    if (dst, dport) == sent_to && sent_to != (target.sink_dst, UDP_PORT) {
        return Arrival::Untranslated;
    }
    if src != target.sink_src
        || dst != target.sink_dst
        || dport != UDP_PORT
        || p[14] != 0x45
        || header_sum(&p[14..34]) != 0xffff
    {
        return Arrival::Mangled;
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&p[TS_AT..TS_AT + 8]);
    Arrival::Delivered(u64::from_le_bytes(at))
}

/// The one's complement sum of an IPv4 header (RFC 1071), folded to 16 bits: 0xffff when
/// its checksum is right.
fn header_sum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in header.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// An Ethernet + IPv4 + UDP frame of `len` bytes for `flow` to `dst_ip`:`dst_port`, payload
/// zeroed; the UDP checksum is 0 (none, legal over IPv4), so the per-frame fields need no
/// checksum update.
pub fn frame_template(flow: &Flow, dst_ip: Ipv4Addr, dst_port: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&flow.dst_mac);
    f[6..12].copy_from_slice(&flow.src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[20..22].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&flow.src_ip.octets());
    f[30..34].copy_from_slice(&dst_ip.octets());
    let sum = header_sum(&f[14..34]);
    f[24..26].copy_from_slice(&(!sum).to_be_bytes());
    f[34..36].copy_from_slice(&1024u16.to_be_bytes());
    f[36..38].copy_from_slice(&dst_port.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(198, 18, 9, 1),
            flows: 4,
        }
    }

    const SINK: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 2);

    #[test]
    fn the_template_parses_as_ipv4_udp_with_a_valid_header_checksum() {
        for len in [MIN_FRAME, 512, MAX_FRAME] {
            let f = frame_template(&flow(), SINK, UDP_PORT, len);
            let ip = smoltcp::wire::Ipv4Packet::new_checked(&f[14..]).unwrap();
            assert!(ip.verify_checksum(), "{len}");
            assert_eq!(usize::from(ip.total_len()), len - 14);
            let udp = smoltcp::wire::UdpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(udp.dst_port(), UDP_PORT);
            assert_eq!(usize::from(udp.len()), len - 34);
        }
    }

    #[test]
    fn only_frames_of_the_current_trial_are_counted() {
        let plain = Target::direct(flow().src_ip, SINK);
        let gen = flow().src_ip;
        let mut f = frame_template(&flow(), SINK, UDP_PORT, MIN_FRAME);
        f[TAG_AT..TAG_AT + 2].copy_from_slice(&7u16.to_be_bytes());
        f[TS_AT..TS_AT + 8].copy_from_slice(&1234u64.to_le_bytes());
        assert_eq!(arrival(&f, 7, plain, gen), Arrival::Delivered(1234));
        assert_eq!(arrival(&f, 8, plain, gen), Arrival::Foreign);
        assert_eq!(arrival(&f[..59], 7, plain, gen), Arrival::Foreign);
        f[23] = 6;
        assert_eq!(arrival(&f, 7, plain, gen), Arrival::Foreign);
    }

    /// Rewrites the source address as a NAT would, the header checksum with it.
    fn translate(f: &mut [u8], src: Ipv4Addr) {
        f[26..30].copy_from_slice(&src.octets());
        f[24..26].copy_from_slice(&[0, 0]);
        let sum = header_sum(&f[14..34]);
        f[24..26].copy_from_slice(&(!sum).to_be_bytes());
    }

    #[test]
    fn behind_source_nat_only_translated_frames_with_a_valid_header_are_delivered() {
        let node = Ipv4Addr::new(198, 18, 10, 1);
        let world = Ipv4Addr::new(198, 18, 100, 1);
        let snat = Target {
            dst_ip: world,
            dst_port: UDP_PORT,
            sink_src: node,
            sink_dst: world,
        };
        let gen = flow().src_ip;
        let mut f = frame_template(&flow(), world, UDP_PORT, MIN_FRAME);
        f[TAG_AT..TAG_AT + 2].copy_from_slice(&3u16.to_be_bytes());
        f[TS_AT..TS_AT + 8].copy_from_slice(&99u64.to_le_bytes());
        assert_eq!(arrival(&f, 3, snat, gen), Arrival::Untranslated);
        translate(&mut f, node);
        assert_eq!(arrival(&f, 3, snat, gen), Arrival::Delivered(99));
        // Translated, but the header checksum left as it was.
        f[24] ^= 0x01;
        assert_eq!(arrival(&f, 3, snat, gen), Arrival::Mangled);
        translate(&mut f, Ipv4Addr::new(198, 18, 10, 9));
        assert_eq!(arrival(&f, 3, snat, gen), Arrival::Mangled);
        assert_eq!(arrival(&f, 4, snat, gen), Arrival::Foreign);
    }

    /// Rewrites the destination as a service DNAT would, the header checksum with it.
    fn dnat(f: &mut [u8], dst: Ipv4Addr, port: u16) {
        f[30..34].copy_from_slice(&dst.octets());
        f[36..38].copy_from_slice(&port.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let sum = header_sum(&f[14..34]);
        f[24..26].copy_from_slice(&(!sum).to_be_bytes());
    }

    #[test]
    fn through_a_service_only_frames_translated_to_the_backend_are_delivered() {
        let gen = flow().src_ip;
        let vip = Ipv4Addr::new(198, 19, 0, 1);
        let svc = Target {
            dst_ip: vip,
            dst_port: 80,
            sink_src: gen,
            sink_dst: SINK,
        };
        let mut f = frame_template(&flow(), vip, 80, MIN_FRAME);
        f[TAG_AT..TAG_AT + 2].copy_from_slice(&5u16.to_be_bytes());
        f[TS_AT..TS_AT + 8].copy_from_slice(&42u64.to_le_bytes());
        assert_eq!(arrival(&f, 5, svc, gen), Arrival::Untranslated);
        dnat(&mut f, SINK, UDP_PORT);
        assert_eq!(arrival(&f, 5, svc, gen), Arrival::Delivered(42));
        // The address translated but not the port, or another backend: wrong answers.
        dnat(&mut f, SINK, 80);
        assert_eq!(arrival(&f, 5, svc, gen), Arrival::Mangled);
        dnat(&mut f, Ipv4Addr::new(198, 18, 9, 3), UDP_PORT);
        assert_eq!(arrival(&f, 5, svc, gen), Arrival::Mangled);
        // Straight to the sink, a frame that was translated is mangled too.
        let plain = Target::direct(gen, SINK);
        dnat(&mut f, SINK, 80);
        assert_eq!(arrival(&f, 5, plain, gen), Arrival::Mangled);
    }
}
