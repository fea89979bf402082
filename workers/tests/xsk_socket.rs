//! AF_XDP sockets on a veth pair in a network namespace of their own (needs root).
//!
//! The namespace and the veth names carry the process id; a guard deletes the namespace
//! (and the veth pair inside it) even when the test fails. The frame sent uses the local
//! experimental EtherType 0x88B5 and carries no IP address at all, so nothing but the
//! peer veth can take it. Every wait is bounded by a deadline of a few seconds.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use weir_testkit::lab::{ifindex, ip, require_root, setns, NetnsGuard};
use weir_workers::xsk::{SocketConfig, Umem, UmemConfig, XskError, XskSocket};

const ETHERTYPE_LOCAL_EXPERIMENTAL: u16 = 0x88B5;

#[test]
fn xsk_socket_veth_root() {
    require_root(
        "xsk_socket_veth_root (network namespaces, veth, AF_XDP, AF_PACKET; \
         `cargo test -p weir-workers --test xsk_socket`)",
    );
    let pid = std::process::id();
    let ns = format!("weir-xsk-{pid}");
    let (a, b) = (format!("wx{pid}a"), format!("wx{pid}b"));
    let mut guard = NetnsGuard::new();
    guard.add_netns(&ns).unwrap();
    guard.veth(&ns, &a, &b, None).unwrap();
    ip(&["-n", &ns, "link", "set", &a, "up"]).unwrap();
    ip(&["-n", &ns, "link", "set", &b, "up"]).unwrap();

    let worker = std::thread::spawn(move || {
        setns(&ns).unwrap();
        socket_scenario(&ns, &a, &b, pid);
    });
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

fn socket_scenario(ns: &str, a: &str, b: &str, pid: u32) {
    let ucfg = UmemConfig {
        frame_count: 64,
        frame_size: 2048,
        fill_size: 32,
        comp_size: 32,
    };
    let mut umem = Umem::new(&ucfg).expect("UMEM");
    match umem.warning() {
        Some(w) => {
            assert!(!umem.huge_pages());
            assert!(w.contains("4 KiB"), "warning: {w}");
            eprintln!("UMEM warning: {w}");
        }
        None => assert!(umem.huge_pages()),
    }
    assert_eq!(umem.region().len(), 64 * 2048);
    assert_eq!(umem.frames().count(), 64);
    assert_eq!(umem.frame_base(5 * 2048 + 256), 5 * 2048);

    let (ia, ib) = (ifindex(ns, a).unwrap(), ifindex(ns, b).unwrap());
    let cfg = SocketConfig {
        rx_size: 32,
        tx_size: 32,
        ..SocketConfig::default()
    };
    let mut sa = XskSocket::bind(&umem, ia, 0, &cfg, None).expect("bind socket A");
    let mut sb = XskSocket::bind(&umem, ib, 0, &cfg, Some(&sa)).expect("bind socket B (shared)");
    assert_eq!((sa.ifindex(), sa.queue()), (ia, 0));
    assert_eq!((sb.ifindex(), sb.queue()), (ib, 0));
    assert_ne!(sa.fd(), sb.fd());

    // A second socket on A's queue without sharing the UMEM: the queue is taken, so bind
    // keeps answering EBUSY and gives up with a clear error after its retries.
    let other_umem = Umem::new(&ucfg).expect("second UMEM");
    let started = Instant::now();
    match XskSocket::bind(&other_umem, ia, 0, &cfg, None) {
        Err(e @ XskError::BindBusy { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(a) && msg.contains("EBUSY"), "{msg}");
            assert!(started.elapsed() >= Duration::from_millis(300));
        }
        other => panic!("expected BindBusy, got {other:?}"),
    }
    // No such interface: the error names the syscall and the errno.
    match XskSocket::bind(&other_umem, 999_999, 0, &cfg, None) {
        Err(e @ XskError::Syscall { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("bind") && msg.contains("ifindex 999999"),
                "{msg}"
            );
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    drop(other_umem);

    // Sharing on the same interface and queue: the kernel shares A's buffer pool and
    // fill/completion rings, so this socket has none of its own.
    let mut same_queue: Vec<u64> = Vec::new();
    {
        let mut sc =
            XskSocket::bind(&umem, ia, 0, &cfg, Some(&sa)).expect("bind socket C (same queue)");
        let mut probe = vec![0u64];
        assert_eq!(sc.fill(&mut probe), 0);
        assert_eq!(sc.complete(&mut same_queue), 0);
        let zc = SocketConfig {
            zero_copy: true,
            ..cfg
        };
        match XskSocket::bind(&umem, ib, 0, &zc, Some(&sa)) {
            Err(XskError::InvalidConfig(msg)) => assert!(msg.contains("inherits"), "{msg}"),
            other => panic!("expected a config error for a mode mismatch, got {other:?}"),
        }
    }

    // Frame accounting: every frame is in `free` or lent to the kernel through a fill
    // ring. Lend 8 frames to each socket's own fill ring.
    let mut free: Vec<u64> = umem.frames().collect();
    let mut lend = free.split_off(free.len() - 8);
    assert_eq!(sa.fill(&mut lend), 8);
    assert!(lend.is_empty());
    let mut lend = free.split_off(free.len() - 8);
    assert_eq!(sb.fill(&mut lend), 8);
    let lent = 16;
    assert_eq!(free.len() + lent, 64);
    assert!(!sa.rx_pending() && !sb.rx_pending());

    let sniffer = PacketSocket::bind(ib);

    let mut frame = vec![0u8; 60];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame[12..14].copy_from_slice(&ETHERTYPE_LOCAL_EXPERIMENTAL.to_be_bytes());
    let marker = format!("weir-xsk {pid}");
    frame[14..14 + marker.len()].copy_from_slice(marker.as_bytes());

    let tx_addr = free.pop().unwrap();
    umem.packet_mut(tx_addr, frame.len() as u32)
        .expect("frame in UMEM")
        .copy_from_slice(&frame);
    assert_eq!(sa.send(&[(tx_addr, frame.len() as u32)]), 1);
    sa.kick().expect("kick");

    let deadline = Instant::now() + Duration::from_secs(3);
    let mut completed = 0;
    while completed == 0 {
        assert!(Instant::now() < deadline, "TX frame never completed");
        completed = sa.complete(&mut free);
        if completed == 0 {
            sa.kick().expect("kick");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(completed, 1);
    assert_eq!(free.last(), Some(&tx_addr));
    assert_eq!(free.len() + lent, 64, "every frame accounted for");
    assert_eq!(sb.complete(&mut free), 0);

    let seen = sniffer.wait_for(&frame[..14 + marker.len()], Duration::from_secs(3));
    assert!(seen, "the frame sent on {a} never reached {b}");

    // Without an XDP program on B the frame goes to B's kernel stack, not to its RX ring.
    let mut rx = Vec::new();
    assert_eq!(sb.recv(&mut rx, 16), 0);

    let stats = sa.statistics().expect("statistics");
    assert_eq!(stats.tx_invalid_descs, 0, "{stats:?}");
    assert_eq!(sa.bad_descs(), 0);
    sb.statistics().expect("statistics of the shared socket");

    // A burst larger than the TX ring: only what fits is accepted.
    let burst: Vec<(u64, u32)> = free.iter().map(|&f| (f, 60)).take(40).collect();
    for &(addr, _) in &burst {
        umem.packet_mut(addr, 60).unwrap().copy_from_slice(&frame);
    }
    let accepted = sa.send(&burst);
    assert_eq!(accepted, 32, "TX ring holds 32");
    let sent: Vec<u64> = burst[..accepted].iter().map(|&(a, _)| a).collect();
    free.retain(|f| !sent.contains(f));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut back = 0;
    while back < accepted {
        assert!(
            Instant::now() < deadline,
            "only {back} of {accepted} completed"
        );
        sa.kick().expect("kick");
        back += sa.complete(&mut free);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(back, accepted);
    assert_eq!(
        free.len() + lent,
        64,
        "every frame accounted for after the burst"
    );
    let mut sorted = free.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), free.len(), "no frame returned twice");
}

/// An AF_PACKET socket that sees every frame arriving on one interface.
struct PacketSocket(OwnedFd);

impl PacketSocket {
    fn bind(ifindex: u32) -> PacketSocket {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket call, result checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: `tv` is a valid timeval and the length is its size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(r, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        PacketSocket(fd)
    }

    /// Whether a frame starting with `prefix` arrives before `timeout` runs out.
    fn wait_for(&self, prefix: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: `buf` is writable for its full length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && buf[..n as usize].starts_with(prefix) {
                return true;
            }
        }
        false
    }
}
