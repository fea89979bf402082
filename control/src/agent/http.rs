//! The agent's HTTP endpoints, `/healthz`, `/readyz` and `/metrics`, served by hyper on a
//! tokio runtime of their own, on a thread of their own (never pinned: it runs where the
//! control threads run, never on a worker core).
//!
//! Why so: kubelet kills the agent when `/healthz` does not answer in time, and the
//! DaemonSet listens on every address. A server that reads one connection at a time is
//! stalled by anyone who opens a socket and says nothing (five idle connections delayed
//! `/healthz` by ten seconds). Here every connection is a task of its own, a request's
//! header must arrive within [`HttpLimits::header_read_timeout`], a connection lives at
//! most [`HttpLimits::connection_lifetime`], and past [`HttpLimits::max_connections`] a new
//! connection is closed at once and counted (`weir_http_connections_refused_total`).
//!
//! - `/healthz`: 200 `ok` unless a worker's heartbeat (see `WorkerReport::heartbeat`) has
//!   stood still for [`WORKER_STALL`] once the workers run, or the control loop has been
//!   applying one batch of changes for [`CONTROL_STALL`]: then 503, a reason a line.
//! - `/readyz`: 503 until the first tables are published and the workers run, and while
//!   the latest datastore change could not be published (the last good tables serve on);
//!   200 `ready` otherwise.
//! - `/metrics`: see [`super::metrics`].
//! - `/services`: the service table the workers hold, as JSON (see
//!   [`crate::services::view`]; `weir services` prints it as a table).
//!
//! The same runtime takes the workers' policy log records every [`DRAIN_EVERY`] (see
//! [`LogDrain`]).

use std::convert::Infallible;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use weir_dataplane::SnapshotReader;
use weir_workers::worker::SharedReport;

use super::metrics::{AgentCounters, LogDrain, Metrics, CONTENT_TYPE};
use super::ControlStats;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Each worker's report, in worker order.
    pub reports: Vec<SharedReport>,
    /// The control loop's counters and state.
    pub control: Arc<Mutex<ControlStats>>,
    /// Set once the first tables are published and the workers run.
    pub ready: Arc<AtomicBool>,
    /// The published snapshots, for the names of the rules in log records.
    pub snapshots: SnapshotReader,
}

/// Bounds on what one client can hold.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once; more are closed at once and counted.
    pub max_connections: usize,
    /// From accepting a connection (or ending a response) to having a request's header.
    pub header_read_timeout: Duration,
    /// The longest a connection is kept, whatever it does.
    pub connection_lifetime: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(60),
        }
    }
}

/// A worker whose heartbeat stands still this long is stuck.
pub const WORKER_STALL: Duration = Duration::from_secs(5);

/// A control loop that applies one batch of changes this long is stuck (a calculation of
/// a large cluster takes seconds, not this).
pub const CONTROL_STALL: Duration = Duration::from_secs(30);

/// How often the policy log records are taken from the workers.
pub const DRAIN_EVERY: Duration = Duration::from_millis(250);

/// The running server; dropping it stops it (as does the agent's stop flag).
#[derive(Debug)]
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `listener` on a thread of its own until `stop` is set or the server is
    /// dropped.
    pub fn start(
        listener: TcpListener,
        endpoints: Endpoints,
        limits: HttpLimits,
        stop: &'static AtomicBool,
    ) -> std::io::Result<HttpServer> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let own_stop = Arc::new(AtomicBool::new(false));
        let stopped = own_stop.clone();
        let counters = Arc::new(AgentCounters::default());
        let shared = Arc::new(Shared {
            metrics: Metrics::new(
                endpoints.reports.clone(),
                endpoints.control.clone(),
                counters.clone(),
            ),
            liveness: Mutex::new(Liveness::default()),
            drain: Mutex::new(LogDrain::new(counters.clone())),
            counters,
            endpoints,
        });
        let thread = std::thread::Builder::new()
            .name("weir-http".into())
            .spawn(move || {
                runtime.block_on(serve(listener, shared, limits, move || {
                    stop.load(Ordering::Relaxed) || stopped.load(Ordering::Relaxed)
                }));
            })?;
        Ok(HttpServer {
            stop: own_stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What `/healthz` remembers between looks: each worker's last heartbeat and when it
/// last moved. The clock is passed in, so a test can play minutes in microseconds.
#[derive(Debug, Default)]
pub struct Liveness {
    seen: Vec<(u64, Instant)>,
}

impl Liveness {
    /// Notes the workers' `heartbeats` (in worker order, `None` when the workers do not run
    /// yet) and the control loop's busy mark as of `now`; returns what is stuck, a
    /// sentence each (empty: healthy).
    pub fn check(
        &mut self,
        heartbeats: Option<&[u64]>,
        control_busy_since: Option<Instant>,
        now: Instant,
    ) -> Vec<String> {
        let mut stuck = Vec::new();
        match heartbeats {
            None => self.seen.clear(),
            Some(beats) => {
                self.seen.resize(beats.len(), (u64::MAX, now));
                for (w, (&beat, seen)) in beats.iter().zip(self.seen.iter_mut()).enumerate() {
                    if seen.0 != beat {
                        *seen = (beat, now);
                        continue;
                    }
                    let still = now.saturating_duration_since(seen.1);
                    if still >= WORKER_STALL {
                        stuck.push(format!(
                            "worker {w}: its loop has not turned for {:.1} s",
                            still.as_secs_f64()
                        ));
                    }
                }
            }
        }
        if let Some(since) = control_busy_since {
            let busy = now.saturating_duration_since(since);
            if busy >= CONTROL_STALL {
                stuck.push(format!(
                    "control loop: applying one batch of datastore changes for {:.1} s",
                    busy.as_secs_f64()
                ));
            }
        }
        stuck
    }
}

/// What `/readyz` answers: `Ok` when ready, else why not.
pub fn readiness(ready: bool, stats: &ControlStats) -> Result<(), String> {
    if !ready {
        return Err(
            "not ready: waiting for the datastore's first full sync, the first tables and \
             the workers"
                .into(),
        );
    }
    match &stats.last_rejection {
        Some(why) => Err(format!(
            "not ready: the latest datastore change could not be published ({why}); the \
             last good tables keep serving"
        )),
        None => Ok(()),
    }
}

/// What the connection tasks share.
struct Shared {
    endpoints: Endpoints,
    metrics: Metrics,
    counters: Arc<AgentCounters>,
    liveness: Mutex<Liveness>,
    drain: Mutex<LogDrain>,
}

impl Shared {
    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        }
        match request.uri().path() {
            "/healthz" => {
                let stuck = self.stuck();
                if stuck.is_empty() {
                    text(StatusCode::OK, "ok\n".into())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("unhealthy:\n{}\n", stuck.join("\n")),
                    )
                }
            }
            "/readyz" => {
                let stats = self.control();
                match readiness(self.endpoints.ready.load(Ordering::SeqCst), &stats) {
                    Ok(()) => text(StatusCode::OK, "ready\n".into()),
                    Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }
            "/metrics" => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
                if let Ok(v) = CONTENT_TYPE.parse() {
                    response.headers_mut().insert(http::header::CONTENT_TYPE, v);
                }
                response
            }
            "/services" => {
                let snapshot = self.endpoints.snapshots.load();
                let stats = self.control();
                let view = crate::services::view::view(
                    snapshot.generation,
                    &snapshot.services,
                    stats.services_refused.as_deref(),
                );
                match serde_json::to_string_pretty(&view) {
                    Ok(json) => {
                        let mut response = Response::new(Full::new(Bytes::from(json + "\n")));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        response
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    fn control(&self) -> ControlStats {
        self.endpoints
            .control
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// What is stuck as of now.
    fn stuck(&self) -> Vec<String> {
        let beats: Option<Vec<u64>> = self.endpoints.ready.load(Ordering::SeqCst).then(|| {
            self.endpoints
                .reports
                .iter()
                .map(|r| r.lock().map(|r| r.heartbeat).unwrap_or(0))
                .collect()
        });
        let busy = self
            .endpoints
            .control
            .lock()
            .ok()
            .and_then(|s| s.busy_since);
        self.liveness
            .lock()
            .map(|mut l| l.check(beats.as_deref(), busy, Instant::now()))
            .unwrap_or_default()
    }

    /// Takes the workers' policy log records, named after the snapshot they were made
    /// with.
    fn drain_logs(&self) {
        let snapshot = self.endpoints.snapshots.load();
        if let Ok(mut drain) = self.drain.lock() {
            drain.learn(snapshot.generation, &snapshot.policy.rules);
            drain.drain(&self.endpoints.reports);
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Accepts connections until `stopped` says so, each served by a task of its own; drains
/// the log records and samples the heartbeats on the side.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: HttpLimits,
    stopped: impl Fn() -> bool,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("weir agent: metrics and health endpoints: {e}");
            return;
        }
    };
    let side = shared.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DRAIN_EVERY);
        loop {
            tick.tick().await;
            side.drain_logs();
            side.stuck();
        }
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    while !stopped() {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tokio::time::sleep(Duration::from_millis(100)) => continue,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors, or a connection reset before it was taken: go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared
                .counters
                .http_connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = shared.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.connection_lifetime, connection).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_whose_heartbeat_stands_still_is_stuck_and_one_that_moves_is_not() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        assert!(l.check(Some(&[1, 1]), None, at(0.0)).is_empty());
        assert!(l.check(Some(&[2, 1]), None, at(3.0)).is_empty());
        assert!(l.check(Some(&[3, 1]), None, at(4.9)).is_empty());
        let stuck = l.check(Some(&[4, 1]), None, at(5.5));
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert!(stuck[0].starts_with("worker 1: "), "{stuck:?}");
        // Worker 0 stopped at 4 (seen at 5.5): stuck only 5 s after that.
        assert_eq!(l.check(Some(&[4, 2]), None, at(10.0)).len(), 0);
        let stuck = l.check(Some(&[4, 2]), None, at(10.6));
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert!(stuck[0].starts_with("worker 0: "), "{stuck:?}");
        // It comes back.
        assert!(l.check(Some(&[5, 3]), None, at(11.0)).is_empty());
    }

    #[test]
    fn workers_that_do_not_run_yet_are_not_stuck_and_their_clock_starts_when_they_do() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        assert!(l.check(None, None, t0).is_empty());
        assert!(l.check(None, None, t0 + Duration::from_secs(60)).is_empty());
        let start = t0 + Duration::from_secs(61);
        assert!(l.check(Some(&[0]), None, start).is_empty());
        assert!(l
            .check(Some(&[0]), None, start + Duration::from_secs(4))
            .is_empty());
        assert_eq!(
            l.check(Some(&[0]), None, start + Duration::from_secs(6))
                .len(),
            1
        );
    }

    #[test]
    fn a_control_loop_busy_with_one_batch_too_long_is_stuck() {
        let mut l = Liveness::default();
        let since = Instant::now();
        assert!(l
            .check(None, Some(since), since + Duration::from_secs(29))
            .is_empty());
        let stuck = l.check(None, Some(since), since + CONTROL_STALL);
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert!(stuck[0].starts_with("control loop: "), "{stuck:?}");
        assert!(l
            .check(None, None, since + Duration::from_secs(300))
            .is_empty());
    }

    #[test]
    fn readiness_waits_for_the_first_tables_and_goes_away_while_a_change_is_refused() {
        let mut stats = ControlStats::default();
        let not = readiness(false, &stats).unwrap_err();
        assert!(not.contains("first full sync"), "{not}");
        assert_eq!(readiness(true, &stats), Ok(()));
        stats.last_rejection = Some("a snapshot with 70000 interfaces".into());
        let not = readiness(true, &stats).unwrap_err();
        assert!(not.contains("70000 interfaces"), "{not}");
        stats.last_rejection = None;
        assert_eq!(readiness(true, &stats), Ok(()));
    }
}
