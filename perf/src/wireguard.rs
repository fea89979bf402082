//! The WireGuard benchmark, in memory (`weir-bench wireguard`): per core, for inner packets
//! of 64, 512 and 1420 bytes, how many packets per second
//!
//! - **weir's pipeline with encryption** does: batches of 256 frames from a pod to a pod of
//!   another node through the pipeline (parse, anti-spoof, route, policy, rewrite), then
//!   every frame routing flagged sealed by [`Tunnel::seal`], as the uplink's worker does;
//!   the harness restores each whole frame every round, which is counted in;
//! - **weir's seal path** alone does: the worker's [`Tunnel::seal`] on a frame as the
//!   pipeline leaves it (peer chosen by the destination's allowed IPs, the inner packet copied out,
//!   sealed by the peer's boringtun session straight into the frame, outer Ethernet, IPv4
//!   and UDP headers written in front), the frame rewound for the next round;
//! - **`ring` ChaCha20-Poly1305** seals in place with no protocol around it (the
//!   physical limit: WireGuard's AEAD and nothing else);
//! - **boringtun's `Tunn::encapsulate`** does in a tight loop from one buffer into another
//!   (the protocol library alone, without routing, copy or headers).
//!
//! All three run on the same pinned core, interleaved round by round; medians are
//! reported, weir's beside the raw seal rate (the goal is ≥ 90% of it at 1420 B) and
//! beside boringtun. Sessions come from a real handshake between two in-memory peers.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use weir_crypto::peers::{Opened, PeerConfig, Peers, Sealed};
use weir_crypto::NodeKey;
use weir_dataplane::node::output::{Action, OutputMap, Owner};
use weir_dataplane::snapshot::{NextHop, PeerSpec, PodSpec, Prefix, Tunnel as TunnelKind};
use weir_dataplane::{
    craft, Batch, Counters, Frame, FrameRegion, FreeList, Pipeline, Snapshot, SnapshotBuilder,
    BATCH_SIZE,
};
use weir_workers::wireguard::Tunnel;

use crate::report::BenchResult;

/// What to run.
#[derive(Debug, Clone)]
pub struct WireGuardBenchConfig {
    pub runs: usize,
    /// Inner packet sizes (bytes of IP packet).
    pub sizes: Vec<usize>,
    /// Time per measurement.
    pub duration: Duration,
}

const FRAME: u64 = 2048;
const HEADROOM: u64 = 256;
const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 250, 1);
const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 250, 2);

fn inner_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[198, 18, 10, 5]);
    p[16..20].copy_from_slice(&[198, 18, 11, 5]);
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// Two peer tables with a session between them (a has sealed and b opened once).
fn session_pair() -> Result<(Peers, Peers), String> {
    let (ka, kb) = (
        NodeKey::from_bytes([0x41; 32]),
        NodeKey::from_bytes([0x42; 32]),
    );
    let mut a = Peers::new(ka.clone(), 1000);
    let mut b = Peers::new(kb.clone(), 1000);
    let cfg = |name: &str, key: &NodeKey, ip: Ipv4Addr, pods: &str| PeerConfig {
        name: name.into(),
        public_key: key.public(),
        endpoint: SocketAddr::new(IpAddr::V4(ip), 51820),
        allowed_ips: vec![pods.parse().expect("CIDR")],
        persistent_keepalive: None,
    };
    a.set_peers(vec![cfg("b", &kb, B_UNDERLAY, "198.18.11.0/24")])
        .map_err(|e| e.to_string())?;
    b.set_peers(vec![cfg("a", &ka, A_UNDERLAY, "198.18.10.0/24")])
        .map_err(|e| e.to_string())?;
    let (from_a, from_b) = (
        SocketAddr::new(IpAddr::V4(A_UNDERLAY), 51820),
        SocketAddr::new(IpAddr::V4(B_UNDERLAY), 51820),
    );
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let init = match a.seal(0, &inner_packet(64), &mut buf) {
        Sealed::Handshake(m) => m.to_vec(),
        other => return Err(format!("expected a handshake, got {other:?}")),
    };
    let resp = match b.open(from_a, &init, &mut out) {
        Opened::Reply { message, .. } => message.to_vec(),
        other => return Err(format!("handshake response: {other:?}")),
    };
    let keepalive = match a.open(from_b, &resp, &mut out) {
        Opened::Reply { message, .. } => message.to_vec(),
        other => return Err(format!("keepalive: {other:?}")),
    };
    let _ = b.open(from_a, &keepalive, &mut out);
    while a.flush(0, &mut buf).is_some() {}
    Ok((a, b))
}

/// Rate (packets/s) of `op` over about `d`, checking the clock every 256 calls.
fn rate(d: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..256 {
            op();
        }
        n += 256;
        let t = start.elapsed();
        if t >= d {
            return n as f64 / t.as_secs_f64();
        }
    }
}

/// Runs the benchmark; returns results and notes.
pub fn run(cfg: &WireGuardBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    // weir: the tunnel of node a's uplink worker, over a snapshot with node b behind it.
    let (peers_a, _peers_b) = session_pair()?;
    let mut sb = SnapshotBuilder::new();
    let (pod_if, _) = sb
        .pod(PodSpec {
            namespace: "bench".into(),
            name: "pod-a".into(),
            interface: "veth-a".into(),
            gateway_mac: [0xee; 6],
            mac: POD_MAC,
            ipv4: Some(Ipv4Addr::new(198, 18, 10, 5)),
            ipv6: None,
            mtu: 1500,
        })
        .map_err(|e| e.to_string())?;
    let uplink = sb
        .uplink("up0", [2, 0, 0, 0, 0, 1], 1500)
        .map_err(|e| e.to_string())?;
    let node = sb.node("node-b", IpAddr::V4(B_UNDERLAY), Some([2, 0, 0, 0, 0, 2]));
    let prefix: Prefix = "198.18.11.0/24".parse().map_err(|e| format!("{e:?}"))?;
    sb.route(
        prefix,
        NextHop::Remote {
            node,
            tunnel: TunnelKind::WireGuard,
        },
    );
    sb.wireguard(SocketAddr::new(IpAddr::V4(A_UNDERLAY), 51820));
    sb.peer(PeerSpec {
        node,
        name: "b".into(),
        public_key: *NodeKey::from_bytes([0x42; 32]).public().as_bytes(),
        endpoint: SocketAddr::new(IpAddr::V4(B_UNDERLAY), 51820),
        allowed_ips: vec![prefix],
        persistent_keepalive: None,
    });
    let snapshot = sb.build(1).map_err(|e| e.to_string())?;
    let mut tunnel = Tunnel::with_peers(peers_a, HEADROOM as usize);
    tunnel.reconcile(&snapshot);
    let peer = snapshot
        .peers
        .of_node(node)
        .ok_or("the benchmark snapshot has no peer for node b")?;
    let _ = uplink;
    // boringtun alone: its own pair of sessions.
    let (mut tunn_a, _tunn_b) = tunn_pair()?;
    // ring alone.
    let key =
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).map_err(|_| "ring key")?);

    let mut samples: Vec<[Vec<f64>; 4]> = vec![Default::default(); cfg.sizes.len()];
    let mut pipeline = Pipeline::new();
    let mut area = vec![0u8; 2 * FRAME as usize];
    let mut dst = vec![0u8; 2048];
    let mut scratch = vec![0u8; 2048];
    for _ in 0..cfg.runs {
        for (k, &size) in cfg.sizes.iter().enumerate() {
            let inner = inner_packet(size);
            let len = (14 + size) as u32;
            // weir: the packet in frame 0, sealed into frame 1 (a free frame, as the
            // worker has them), frame 1 handed back after "sending".
            let mut sealed_ok = true;
            let mut free = FreeList::new(FRAME as usize);
            let mut counters = Counters::default();
            let r = rate(cfg.duration, || {
                area[HEADROOM as usize + 14..HEADROOM as usize + 14 + size].copy_from_slice(&inner);
                // Frame 1 free, frame 0 holds the packet (and comes back after sealing).
                while free.pop().is_some() {}
                free.push(FRAME);
                match tunnel.seal(
                    &snapshot,
                    &mut area,
                    &mut free,
                    peer,
                    HEADROOM,
                    len,
                    &mut counters,
                ) {
                    Some(f) => {
                        black_box(f);
                    }
                    None => sealed_ok = false,
                }
            });
            if !sealed_ok {
                return Err(format!("weir did not seal a {size}-byte packet"));
            }
            samples[k][0].push(r);
            // ring
            let mut counter = 0u64;
            let r = rate(cfg.duration, || {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_le_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut scratch[..size],
                    )
                    .map(|t| t.as_ref()[0]);
                black_box(tag.ok());
            });
            samples[k][1].push(r);
            // boringtun
            let r = rate(cfg.duration, || {
                if let TunnResult::WriteToNetwork(m) = tunn_a.encapsulate(&inner, &mut dst) {
                    black_box(m.len());
                }
            });
            samples[k][2].push(r);
            // weir: the pipeline, then sealing
            samples[k][3].push(pipeline_and_seal(
                &snapshot,
                &mut pipeline,
                &mut tunnel,
                pod_if,
                size,
                cfg.duration,
            )?);
        }
    }
    let mut out = Vec::new();
    for (k, &size) in cfg.sizes.iter().enumerate() {
        let [weir, raw, bt, piped] = &samples[k];
        let mpps = |v: &[f64]| v.iter().map(|x| x / 1e6).collect::<Vec<f64>>();
        let med = |v: &[f64]| crate::report::median_min_max(&mpps(v)).0;
        out.push(
            BenchResult::from_samples(
                format!("wireguard_{size}B_weir_pipeline_seal_mpps"),
                "Mpps",
                mpps(piped),
            )
            .with_anchor("ring_chacha20poly1305_seal", med(raw)),
        );
        out.push(
            BenchResult::from_samples(
                format!("wireguard_{size}B_weir_seal_mpps"),
                "Mpps",
                mpps(weir),
            )
            .with_anchor("ring_chacha20poly1305_seal", med(raw)),
        );
        out.push(
            BenchResult::from_samples(
                format!("wireguard_{size}B_weir_seal_mpps_vs_boringtun"),
                "Mpps",
                mpps(weir),
            )
            .with_anchor("boringtun_encapsulate", med(bt)),
        );
        let gbps = |v: &[f64]| {
            v.iter()
                .map(|x| x * size as f64 * 8.0 / 1e9)
                .collect::<Vec<f64>>()
        };
        out.push(BenchResult::from_samples(
            format!("wireguard_{size}B_weir_seal_gbps"),
            "Gbit/s",
            gbps(weir),
        ));
        out.push(BenchResult::from_samples(
            format!("wireguard_{size}B_ring_seal_mpps"),
            "Mpps",
            mpps(raw),
        ));
        out.push(BenchResult::from_samples(
            format!("wireguard_{size}B_boringtun_encapsulate_mpps"),
            "Mpps",
            mpps(bt),
        ));
    }
    let notes = vec![
        "sizes are inner IP packet bytes; weir's figure includes the peer's session (the \
         adjacency names the peer), the copy of the inner packet, the seal and the outer \
         Ethernet/IPv4/UDP headers from the peer's prebuilt template; the pipeline figure \
         adds every stage, the output stage's plan included"
            .to_string(),
        format!(
            "{} s per figure per round; ring seals in place with a fresh nonce each time; \
             boringtun seals from one buffer into another",
            cfg.duration.as_secs_f64()
        ),
    ];
    Ok((out, notes))
}

const POD_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];

/// Packets per second through the pipeline and the seal, batches of 256 frames from the
/// pod to pods of node b, each whole frame restored every round.
fn pipeline_and_seal(
    snapshot: &Snapshot,
    pipeline: &mut Pipeline,
    tunnel: &mut Tunnel,
    pod_if: u16,
    size: usize,
    duration: Duration,
) -> Result<f64, String> {
    let chunk = FRAME as usize;
    let templates: Vec<Vec<u8>> = (0..BATCH_SIZE)
        .map(|k| {
            craft::udp4(
                POD_MAC,
                [0xee; 6],
                Ipv4Addr::new(198, 18, 10, 5),
                Ipv4Addr::new(198, 18, 11, (k % 250 + 1) as u8),
                10000 + k as u16,
                5201,
                14 + size,
            )
        })
        .collect();
    // The batch's frames, then as many free frames for the sealed messages.
    let mut mem = vec![0u8; 2 * BATCH_SIZE * chunk];
    let spares: Vec<u64> = (BATCH_SIZE..2 * BATCH_SIZE)
        .map(|k| (k * chunk) as u64)
        .collect();
    let mut free = FreeList::new(chunk);
    let mut counters = Counters::default();
    // One worker that owns every interface and seals, as the uplink's worker does.
    let mut map = OutputMap::new();
    map.reset(snapshot.generation, snapshot.interfaces.len(), true);
    for i in 0..snapshot.interfaces.len() as u16 {
        map.set(i, Owner::Here { port: i });
    }
    let mut plan = Vec::with_capacity(BATCH_SIZE);
    let mut frames: Vec<Frame> = {
        let mut region = FrameRegion::new(&mut mem, chunk);
        templates
            .iter()
            .enumerate()
            .map(|(k, t)| region.fill((k * chunk) as u64, HEADROOM as usize, t))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{e:?}"))?
    };
    let mut batch = Batch::new();
    let mut to_seal: Vec<(u32, u64, u32)> = Vec::with_capacity(BATCH_SIZE);
    let (mut packets, mut sealed, mut now) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    loop {
        {
            let mut region = FrameRegion::new(&mut mem, chunk);
            for (mut f, t) in frames.drain(..).zip(&templates) {
                f.set_len(t.len(), chunk);
                region.data_mut(&f).copy_from_slice(t);
                batch
                    .push(f, pod_if)
                    .map_err(|_| "a batch holds BATCH_SIZE frames")?;
            }
            pipeline.process(snapshot, &mut region, &mut batch, now);
            pipeline.output(snapshot, &batch, &map, &mut plan);
            let mut i = 0;
            batch.drain(|f, _| {
                if let Some(Action::Seal { peer, .. }) = plan.get(i) {
                    to_seal.push((*peer, f.addr(), f.len() as u32));
                }
                i += 1;
                frames.push(f);
            });
        }
        // The worker's free list: the spare frames (the sent messages come back to it).
        while free.pop().is_some() {}
        for &s in &spares {
            free.push(s);
        }
        for (peer, addr, len) in to_seal.drain(..) {
            if tunnel
                .seal(
                    snapshot,
                    &mut mem,
                    &mut free,
                    peer,
                    addr,
                    len,
                    &mut counters,
                )
                .is_some()
            {
                sealed += 1;
            }
        }
        packets += BATCH_SIZE as u64;
        now += 1000;
        if packets % (64 * BATCH_SIZE as u64) == 0 && start.elapsed() >= duration {
            break;
        }
    }
    if sealed != packets {
        return Err(format!(
            "pipeline and seal: {sealed} of {packets} packets sealed ({:?})",
            pipeline.counters()
        ));
    }
    Ok(packets as f64 / start.elapsed().as_secs_f64())
}

/// Two boringtun tunnels with a session (a initiated).
fn tunn_pair() -> Result<(Tunn, Tunn), String> {
    let (ka, kb) = (
        NodeKey::from_bytes([0x51; 32]),
        NodeKey::from_bytes([0x52; 32]),
    );
    let sa = boringtun::x25519::StaticSecret::from([0x51; 32]);
    let sb = boringtun::x25519::StaticSecret::from([0x52; 32]);
    let mut a = Tunn::new(sa, kb.public(), None, None, 1, None);
    let mut b = Tunn::new(sb, ka.public(), None, None, 2, None);
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let init = match a.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(m) => m.to_vec(),
        _ => return Err("boringtun: no initiation".into()),
    };
    let resp = match b.decapsulate(None, &init, &mut out) {
        TunnResult::WriteToNetwork(m) => m.to_vec(),
        _ => return Err("boringtun: no response".into()),
    };
    match a.decapsulate(None, &resp, &mut out) {
        TunnResult::WriteToNetwork(_) => {}
        _ => return Err("boringtun: no keepalive".into()),
    }
    Ok((a, b))
}
