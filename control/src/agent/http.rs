//! The agent's HTTP endpoints, `/metrics`, `/healthz` and `/readyz`: a small blocking
//! server on a thread of its own, which looks at the stop flag between connections.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_workers::worker::WorkerReport;

use super::{control_metrics, metrics, AgentError, ControlStats};

/// Serves `listener` on a thread of its own until `stop`.
pub(super) fn start(
    listener: TcpListener,
    reports: &[Arc<Mutex<WorkerReport>>],
    control: &Arc<Mutex<ControlStats>>,
    ready: &Arc<AtomicBool>,
    stop: &'static AtomicBool,
) -> Result<(), AgentError> {
    let (reports, ready, control) = (reports.to_vec(), ready.clone(), control.clone());
    std::thread::Builder::new()
        .name("weir-http".into())
        .spawn(move || serve_http(&listener, &reports, &control, &ready, stop))
        .map_err(|e| AgentError::Worker(e.to_string()))?;
    Ok(())
}

fn serve_http(
    listener: &TcpListener,
    reports: &[Arc<Mutex<WorkerReport>>],
    control: &Mutex<ControlStats>,
    ready: &AtomicBool,
    stop: &AtomicBool,
) {
    // Non-blocking accept with a short sleep, so the thread notices a stop.
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).unwrap_or(0);
        let request = String::from_utf8_lossy(&buf[..n]);
        let path = request.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match path {
            "/healthz" => ("200 OK", "ok\n".to_owned()),
            "/readyz" if ready.load(Ordering::SeqCst) => ("200 OK", "ready\n".to_owned()),
            "/readyz" => ("503 Service Unavailable", "not ready\n".to_owned()),
            "/metrics" => {
                let stats = control.lock().map(|s| s.clone()).unwrap_or_default();
                ("200 OK", metrics(reports) + &control_metrics(&stats))
            }
            _ => ("404 Not Found", "not found\n".to_owned()),
        };
        let _ = write!(
            conn,
            "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}
