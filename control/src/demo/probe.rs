//! The demo's probes: a TCP and UDP echo server run inside each pod, and the clients that
//! reach it from inside another pod. `weir probe ...` (a hidden subcommand) runs them under
//! `ip netns exec`, so every probe is a real socket in the pod's own network namespace.
//!
//! Plain `std::net`: a probe is one connection or a few datagrams, nothing a library would
//! make simpler. Every wait is bounded by a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// What a probe carries, so an answer is known to come from the echo server.
const HELLO: &[u8] = b"weir-probe";

/// Serves TCP and UDP echo on `port` (every address) until `deadline` passes: one line of
/// TCP echoed back per connection, every UDP datagram echoed to its sender.
pub fn serve(port: u16, deadline: Duration) -> Result<(), String> {
    let tcp = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("TCP :{port}: {e}"))?;
    let udp = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("UDP :{port}: {e}"))?;
    let end = Instant::now() + deadline;
    let udp_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let _ = udp.set_read_timeout(Some(Duration::from_millis(200)));
        while Instant::now() < end {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }
    });
    tcp.set_nonblocking(true)
        .map_err(|e| format!("TCP :{port}: {e}"))?;
    while Instant::now() < end {
        match tcp.accept() {
            Ok((mut conn, _)) => {
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 256];
                    if let Ok(n) = conn.read(&mut buf) {
                        let _ = conn.write_all(&buf[..n]);
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("TCP :{port}: accept: {e}")),
        }
    }
    let _ = udp_thread.join();
    Ok(())
}

/// Whether a TCP connection to `to` opens and echoes within `timeout`.
pub fn tcp(to: SocketAddr, timeout: Duration) -> bool {
    let start = Instant::now();
    let Ok(mut conn) = TcpStream::connect_timeout(&to, timeout) else {
        return false;
    };
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1));
    if conn.set_read_timeout(Some(left)).is_err() || conn.write_all(HELLO).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(conn.read(&mut buf), Ok(n) if &buf[..n] == HELLO)
}

/// Round-trip times of `count` UDP echoes to `to`, each waited for at most `timeout`
/// (`None` for one that got no answer). Sequential: one datagram in flight.
pub fn udp_rtts(to: SocketAddr, count: usize, timeout: Duration) -> Vec<Option<Duration>> {
    let Ok(sock) = UdpSocket::bind(("0.0.0.0", 0)) else {
        return vec![None; count];
    };
    if sock.connect(to).is_err() {
        return vec![None; count];
    }
    let mut out = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for i in 0..count {
        let msg = [HELLO, &(i as u32).to_be_bytes()].concat();
        let sent = Instant::now();
        if sock.send(&msg).is_err() {
            out.push(None);
            continue;
        }
        let mut got = None;
        // Skip late answers to earlier datagrams.
        while got.is_none() {
            let left = timeout.saturating_sub(sent.elapsed());
            if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n] == msg[..] => got = Some(sent.elapsed()),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out.push(got);
    }
    out
}

/// Whether a UDP echo to `to` comes back within `timeout` (three tries within it).
pub fn udp(to: SocketAddr, timeout: Duration) -> bool {
    udp_rtts(to, 3, timeout / 3).iter().any(Option::is_some)
}

/// An HTTP/1.0 GET of `path` from `127.0.0.1:port`: the status code and body.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = TcpStream::connect_timeout(&to, timeout).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", text.lines().next()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_server_answers_tcp_and_udp_and_silence_is_a_failure() {
        // Port 0 is not usable for a server that binds TCP and UDP on the same port: find
        // a free one.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = std::thread::spawn(move || serve(port, Duration::from_secs(3)));
        std::thread::sleep(Duration::from_millis(100));
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(tcp(to, Duration::from_secs(1)));
        let rtts = udp_rtts(to, 5, Duration::from_millis(500));
        assert_eq!(rtts.len(), 5);
        assert!(rtts.iter().all(Option::is_some), "{rtts:?}");
        // Nothing listens on the next port.
        let closed = SocketAddr::from(([127, 0, 0, 1], free_port_other_than(port)));
        assert!(!tcp(closed, Duration::from_millis(300)));
        assert!(!udp(closed, Duration::from_millis(300)));
        server.join().unwrap().unwrap();
    }

    fn free_port_other_than(port: u16) -> u16 {
        loop {
            let p = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if p != port {
                return p;
            }
        }
    }

    #[test]
    fn http_get_reads_status_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let n = c.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /readyz HTTP/1.0"));
            c.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready\n")
                .unwrap();
        });
        let (status, body) = http_get(port, "/readyz", Duration::from_secs(1)).unwrap();
        assert_eq!((status, body.as_str()), (503, "not ready\n"));
        server.join().unwrap();
    }
}
