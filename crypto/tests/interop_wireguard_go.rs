//! Interoperability with the reference implementation (root; CI runs it): weir's peer
//! table on a UDP socket in one network namespace, `wireguard-go` configured with `wg` in
//! another, joined by a veth. weir plays a node whose pods are 198.18.1.0/24; the
//! wireguard-go side owns 198.18.2.1 on its TUN device.
//!
//! - weir pings 198.18.2.1 (weir initiates the handshake; the echo request waits in the
//!   peer's queue until it completes) and opens the kernel's echo reply;
//! - the wireguard-go side pings a weir pod (it initiates); weir answers the echo;
//! - a UDP datagram from a weir pod reaches a socket behind wireguard-go;
//! - wireguard-go restarted with the same key: its next ping re-handshakes and works.
//!
//! Names carry the process id; a guard removes the namespaces and stops wireguard-go.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_crypto::peers::{Opened, PeerConfig, Peers, Sealed};
use weir_crypto::{parse_public, NodeKey};
use weir_testkit::lab::{in_netns, ip, output, require_root, run, ChildGuard, NetnsGuard};

const WEIR_UNDERLAY: &str = "198.18.200.1";
const PEER_UNDERLAY: &str = "198.18.200.2";
const WEIR_POD: [u8; 4] = [198, 18, 1, 5];
const PEER_TUN: [u8; 4] = [198, 18, 2, 1];

struct Lab {
    weir_ns: String,
    peer_ns: String,
    wg_if: String,
    dir: std::path::PathBuf,
    /// wireguard-go, killed on drop (before the guard removes the namespaces).
    wg: Option<ChildGuard>,
    /// Removes the namespaces, the veth and the directory.
    guard: NetnsGuard,
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        let mut guard = NetnsGuard::new();
        let mut lab = Lab {
            weir_ns: format!("weir-wgi-w-{pid}"),
            peer_ns: format!("weir-wgi-p-{pid}"),
            wg_if: format!("wgi{pid}"),
            dir: guard.temp_dir("weir-wgi").unwrap(),
            wg: None,
            guard,
        };
        for ns in [&lab.weir_ns, &lab.peer_ns] {
            lab.guard.add_netns(ns).unwrap();
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]).unwrap();
        }
        lab.guard
            .veth(&lab.weir_ns, "u0", "u0", Some(&lab.peer_ns))
            .unwrap();
        for (ns, a) in [(&lab.weir_ns, WEIR_UNDERLAY), (&lab.peer_ns, PEER_UNDERLAY)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                "u0",
            ])
            .unwrap();
            run(&["ip", "-n", ns, "link", "set", "u0", "up"]).unwrap();
        }
        lab
    }

    /// Starts wireguard-go in the peer namespace with `key`, knowing weir's public key.
    fn start_wireguard_go(&mut self, key: &NodeKey, weir_public: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.peer_ns, "wireguard-go", &self.wg_if])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wireguard-go (Debian package wireguard-go)");
        self.wg = Some(ChildGuard::new(out));
        let deadline = Instant::now() + Duration::from_secs(10);
        while ip(&["-n", &self.peer_ns, "link", "show", &self.wg_if]).is_err() {
            assert!(Instant::now() < deadline, "wireguard-go made no interface");
            std::thread::sleep(Duration::from_millis(50));
        }
        let key_file = self.dir.join("peer.key");
        std::fs::write(&key_file, key.secret_base64()).unwrap();
        run(&[
            "ip",
            "netns",
            "exec",
            &self.peer_ns,
            "wg",
            "set",
            &self.wg_if,
            "private-key",
            key_file.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            weir_public,
            "endpoint",
            &format!("{WEIR_UNDERLAY}:51820"),
            "allowed-ips",
            "198.18.1.0/24",
        ])
        .unwrap();
        let tun = IpAddr::from(PEER_TUN).to_string();
        let _ = output(&[
            "ip",
            "-n",
            &self.peer_ns,
            "addr",
            "add",
            &format!("{tun}/24"),
            "dev",
            &self.wg_if,
        ]);
        run(&["ip", "-n", &self.peer_ns, "link", "set", &self.wg_if, "up"]).unwrap();
        // 198.18.1.0/24 (weir's pods) through the tunnel.
        let _ = output(&[
            "ip",
            "-n",
            &self.peer_ns,
            "route",
            "replace",
            "198.18.1.0/24",
            "dev",
            &self.wg_if,
        ]);
    }

    fn stop_wireguard_go(&mut self) {
        // Killed and reaped as its guard drops.
        self.wg.take();
        // Its TUN device goes with the process; wait until it has.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ip(&["-n", &self.peer_ns, "link", "show", &self.wg_if]).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A UDP socket bound inside namespace `ns` (the socket stays there; the thread returns).
fn socket_in(ns: &str, addr: &str) -> UdpSocket {
    let addr = addr.to_owned();
    in_netns(ns, move || UdpSocket::bind(addr).unwrap()).unwrap()
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet with protocol `proto` and `payload`.
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn icmp(kind: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"weir interop");
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// weir's side: the socket, the peer table, and a loop that sends what it seals and
/// hands every opened packet to `on_packet`, which may answer with a packet to seal.
struct Weir {
    sock: UdpSocket,
    peers: Peers,
    peer_addr: SocketAddr,
}

impl Weir {
    fn send_packet(&mut self, packet: &[u8]) {
        let id = self
            .peers
            .route(IpAddr::from([
                packet[16], packet[17], packet[18], packet[19],
            ]))
            .expect("route");
        let mut buf = vec![0u8; 2048];
        match self.peers.seal(id, packet, &mut buf) {
            Sealed::Message(m) | Sealed::Handshake(m) => {
                self.sock.send_to(m, self.peer_addr).unwrap();
            }
            Sealed::Queued => {}
            Sealed::NoPeer => panic!("no peer"),
        }
    }

    /// Serves for up to `limit`, until `done` says so after a delivered packet.
    fn serve(
        &mut self,
        limit: Duration,
        mut on_packet: impl FnMut(&[u8]) -> (Option<Vec<u8>>, bool),
    ) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 2048];
        let mut out = vec![0u8; 2048];
        let mut tick = Instant::now();
        self.sock
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        while Instant::now() < deadline {
            if tick.elapsed() > Duration::from_millis(100) {
                tick = Instant::now();
                let sock = &self.sock;
                self.peers.tick(&mut out, |_, to, m| {
                    let _ = sock.send_to(m, to);
                });
            }
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            match self.peers.open(from, &buf[..n], &mut out) {
                Opened::Reply { peer, to, message } => {
                    self.sock.send_to(message, to).unwrap();
                    if let Some(id) = peer {
                        while let Some(m) = self.peers.flush(id, &mut out) {
                            self.sock.send_to(m, to).unwrap();
                        }
                    }
                }
                Opened::Packet { packet, .. } => {
                    let packet = packet.to_vec();
                    let (answer, done) = on_packet(&packet);
                    if let Some(a) = answer {
                        self.send_packet(&a);
                    }
                    if done {
                        return true;
                    }
                }
                Opened::Nothing | Opened::Dropped(_) => {}
            }
        }
        false
    }
}

#[test]
fn weir_and_wireguard_go_exchange_traffic_both_ways_and_recover_from_a_restart() {
    require_root("the wireguard-go interop test (namespaces, TUN)");
    let mut lab = Lab::new();
    let weir_key = NodeKey::from_bytes([0x11; 32]);
    let peer_key = NodeKey::from_bytes([0x22; 32]);
    lab.start_wireguard_go(&peer_key, &weir_key.public_base64());
    let shown = run(&[
        "ip",
        "netns",
        "exec",
        &lab.peer_ns,
        "wg",
        "show",
        &lab.wg_if,
        "public-key",
    ])
    .unwrap();
    assert_eq!(
        parse_public(&shown).unwrap(),
        peer_key.public(),
        "wg agrees on the key"
    );

    let peer_addr: SocketAddr = format!("{PEER_UNDERLAY}:51820").parse().unwrap();
    let mut peers = Peers::new(weir_key, 100);
    peers
        .set_peers(vec![PeerConfig {
            name: "wireguard-go".into(),
            public_key: peer_key.public(),
            endpoint: peer_addr,
            allowed_ips: vec!["198.18.2.0/24".parse().unwrap()],
            persistent_keepalive: None,
        }])
        .unwrap();
    let mut weir = Weir {
        sock: socket_in(&lab.weir_ns, &format!("{WEIR_UNDERLAY}:51820")),
        peers,
        peer_addr,
    };

    // 1. weir pings the wireguard-go side: weir initiates.
    weir.send_packet(&ipv4(WEIR_POD, PEER_TUN, 1, &icmp(8, 7, 1)));
    let got_reply = weir.serve(Duration::from_secs(10), |p| {
        let reply = p[9] == 1 && p[20] == 0 && p[12..16] == PEER_TUN && p[16..20] == WEIR_POD;
        (None, reply)
    });
    assert!(got_reply, "echo reply from behind wireguard-go");

    // 2. The wireguard-go side pings a weir pod; weir answers the echo.
    let pod = IpAddr::from(WEIR_POD).to_string();
    let peer_ns = lab.peer_ns.clone();
    let pinger = std::thread::spawn(move || {
        Command::new("ip")
            .args([
                "netns", "exec", &peer_ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", &pod,
            ])
            .output()
            .unwrap()
    });
    let answer = |p: &[u8]| -> (Option<Vec<u8>>, bool) {
        if p[9] == 1 && p[20] == 8 {
            let mut msg = p[20..].to_vec();
            msg[0] = 0;
            msg[2..4].copy_from_slice(&[0, 0]);
            let c = checksum(&msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
            let src: [u8; 4] = p[16..20].try_into().unwrap();
            let dst: [u8; 4] = p[12..16].try_into().unwrap();
            return (Some(ipv4(src, dst, 1, &msg)), false);
        }
        (None, false)
    };
    weir.serve(Duration::from_secs(3), answer);
    let ping = pinger.join().unwrap();
    assert!(
        ping.status.success(),
        "ping from behind wireguard-go: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // 3. UDP from a weir pod to a socket behind wireguard-go.
    let listener = socket_in(&lab.peer_ns, &format!("{}:9999", IpAddr::from(PEER_TUN)));
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9999u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(8u16 + 5).to_be_bytes());
    udp.extend_from_slice(b"hello");
    weir.send_packet(&ipv4(WEIR_POD, PEER_TUN, 17, &udp));
    let mut got = [0u8; 64];
    let (n, from) = listener.recv_from(&mut got).expect("the datagram arrives");
    assert_eq!(&got[..n], b"hello");
    assert_eq!(from.ip(), IpAddr::from(WEIR_POD));

    // 4. wireguard-go restarts with the same key and no session: its ping re-handshakes.
    lab.stop_wireguard_go();
    let weir_public = weir.peers.public_key();
    lab.start_wireguard_go(&peer_key, &weir_crypto::keys::format_public(&weir_public));
    let pod = IpAddr::from(WEIR_POD).to_string();
    let peer_ns = lab.peer_ns.clone();
    let pinger = std::thread::spawn(move || {
        Command::new("ip")
            .args([
                "netns", "exec", &peer_ns, "ping", "-c", "2", "-i", "0.2", "-W", "3", &pod,
            ])
            .output()
            .unwrap()
    });
    weir.serve(Duration::from_secs(5), answer);
    let ping = pinger.join().unwrap();
    assert!(
        ping.status.success(),
        "ping after the restart: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let c = weir.peers.counters();
    // weir initiated the first session; the restarted wireguard-go initiated the second.
    assert_eq!(c.handshake_initiations, 1, "{c:?}");
    assert_eq!(c.handshake_responses, 1, "{c:?}");
    drop(lab);
}
