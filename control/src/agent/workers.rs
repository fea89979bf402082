//! The workers: one thread pinned to each configured core, each holding its share of the
//! interfaces, joined by handoff lanes so that a frame reaches the worker that owns its
//! output interface.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use weir_crypto::NodeKey;
use weir_dataplane::{Publisher, Snapshot};
use weir_workers::ports::PortControl;
use weir_workers::worker::{PortSpec, Worker, WorkerConfig, WorkerReport};

use super::{spread, AgentConfig, AgentError};

/// The running workers, and what the control loop needs to move interfaces between them.
#[derive(Debug)]
pub(super) struct Workers {
    pub(super) handles: Vec<JoinHandle<()>>,
    /// Attaches and detaches interfaces on running workers.
    pub(super) port_control: PortControl,
    /// Which worker holds each interface, as interfaces come and go.
    pub(super) held: BTreeMap<String, usize>,
}

/// Starts one worker per core in `config` with `ports` dealt out among them (see
/// [`spread`]) and WireGuard with this node's key, if given, on the worker that holds the
/// uplink (its peers come with the snapshots); returns
/// once every worker has started. If one cannot start, the others are stopped (through
/// `stop`) and its error is returned.
pub(super) fn start(
    config: &AgentConfig,
    ports: &[PortSpec],
    publisher: &Publisher,
    snapshot: &Arc<Snapshot>,
    reports: &[Arc<Mutex<WorkerReport>>],
    mut wireguard: Option<NodeKey>,
    stop: &'static AtomicBool,
) -> Result<Workers, AgentError> {
    let workers = config.cores.len();
    let worker_config = WorkerConfig {
        umem: weir_workers::xsk::UmemConfig {
            frame_count: config.frames,
            ..weir_workers::xsk::UmemConfig::default()
        },
        // Pods attached at run time need fill frames of their own: plan for them.
        planned_ports: config.cni.as_ref().map_or(1, |c| c.ports_per_worker + 1),
        ..WorkerConfig::default()
    };
    let assigned = spread(ports, workers);
    // Which worker holds each interface, as interfaces come and go.
    let held: BTreeMap<String, usize> = assigned
        .iter()
        .enumerate()
        .flat_map(|(w, ps)| ps.iter().map(move |p| (p.name.clone(), w)))
        .collect();
    let owner: Vec<(String, usize)> = assigned
        .iter()
        .enumerate()
        .flat_map(|(w, ps)| ps.iter().map(move |p| (p.name.clone(), w)))
        .collect();
    let links = weir_workers::handoff::mesh(workers, HANDOFF_DEPTH, &owner)
        .map_err(|e| AgentError::Worker(format!("handoff wakers: {e}")))?;
    let port_control = PortControl::new(&links);
    let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for ((w, ports), links) in assigned.into_iter().enumerate().zip(links) {
        let port_mailbox = port_control.mailbox(w);
        let core = config.cores[w];
        let (reader, report, snapshot) = (publisher.reader(), reports[w].clone(), snapshot.clone());
        let (started_tx, worker_config) = (started_tx.clone(), worker_config.clone());
        // WireGuard runs on the worker that owns the uplink.
        let wg = if ports.iter().any(|p| p.uplink_filter.is_some()) {
            wireguard.take()
        } else {
            None
        };
        let handle = std::thread::Builder::new()
            .name(format!("weir-worker-{core}"))
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    eprintln!(
                        "weir agent: could not pin worker {w} to core {core}; running unpinned"
                    );
                }
                let built = Worker::new(&ports, &snapshot, worker_config).and_then(|mut worker| {
                    worker.connect(&snapshot, links)?;
                    worker.set_port_mailbox(port_mailbox);
                    if let Some(key) = wg {
                        worker.enable_wireguard(&snapshot, key)?;
                    }
                    Ok(worker)
                });
                let mut worker = match built {
                    Ok(worker) => worker,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("worker {w} (core {core}): {e}")));
                        return;
                    }
                };
                if let Some(warning) = worker.umem_warning() {
                    eprintln!("weir agent: warning: worker {w}: {warning}");
                }
                let _ = started_tx.send(Ok(()));
                worker.run(&reader, stop, &report);
            })
            .map_err(|e| AgentError::Worker(e.to_string()))?;
        handles.push(handle);
    }
    drop(started_tx);
    for _ in 0..workers {
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // The others stop with the flag; their sockets and programs go with them.
                stop.store(true, Ordering::SeqCst);
                for h in handles {
                    let _ = h.join();
                }
                return Err(AgentError::Worker(e));
            }
            Err(_) => return Err(AgentError::Worker("a worker thread ended".into())),
        }
    }
    Ok(Workers {
        handles,
        port_control,
        held,
    })
}

/// Buffers on each handoff lane between two workers.
const HANDOFF_DEPTH: usize = 1024;
