//! Which worker holds which interface: dealt out at start, then reconciled with each new
//! snapshot as pods are attached and detached.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use weir_workers::worker::PortSpec;

/// Deals the ports out to `workers` workers: uplinks to the first worker, pod interfaces
/// round-robin in the order given (the first pod to the first worker).
pub fn spread(ports: &[PortSpec], workers: usize) -> Vec<Vec<PortSpec>> {
    let mut out = vec![Vec::new(); workers.max(1)];
    let (uplinks, pods): (Vec<&PortSpec>, Vec<&PortSpec>) =
        ports.iter().partition(|p| p.uplink_filter.is_some());
    for p in uplinks {
        out[0].push(p.clone());
    }
    let n = out.len();
    for (i, p) in pods.into_iter().enumerate() {
        out[i % n].push(p.clone());
    }
    out
}

/// Puts the interfaces in `wanted` that no worker holds on the worker holding fewest, and
/// takes off the ones no longer wanted. `held` maps interface to worker. An uplink that
/// stays is sent its filter again: the node's addresses (source NAT's match) may have
/// changed, and the worker swaps the program only when the filter did.
pub(super) fn reconcile_ports(
    control: &weir_workers::ports::PortControl,
    held: &mut BTreeMap<String, usize>,
    wanted: &[PortSpec],
) -> Result<(), String> {
    let mut problems = Vec::new();
    let names: BTreeSet<&str> = wanted.iter().map(|p| p.name.as_str()).collect();
    let gone: Vec<(String, usize)> = held
        .iter()
        .filter(|(n, _)| !names.contains(n.as_str()))
        .map(|(n, w)| (n.clone(), *w))
        .collect();
    for (name, w) in gone {
        match control.detach(w, &name, PORT_TIMEOUT) {
            Ok(()) => {
                held.remove(&name);
                eprintln!("weir agent: interface {name} detached from worker {w}");
            }
            Err(why) => problems.push(format!("detaching {name}: {why}")),
        }
    }
    for spec in wanted.iter().filter(|p| p.uplink_filter.is_some()) {
        if let Some(&w) = held.get(&spec.name) {
            if let Err(why) = control.refilter(w, spec, PORT_TIMEOUT) {
                problems.push(format!("updating the XDP filter of {}: {why}", spec.name));
            }
        }
    }
    let new: Vec<&PortSpec> = wanted
        .iter()
        .filter(|p| !held.contains_key(&p.name))
        .collect();
    // Each on the worker holding fewest, counting those placed here; then all attached
    // at once (the workers bind them side by side, off their forwarding loops).
    let mut load = vec![0usize; control.workers()];
    for w in held.values() {
        if let Some(l) = load.get_mut(*w) {
            *l += 1;
        }
    }
    let placed: Vec<(usize, &PortSpec)> = new
        .into_iter()
        .map(|spec| {
            let w = (0..load.len()).min_by_key(|&w| (load[w], w)).unwrap_or(0);
            if let Some(l) = load.get_mut(w) {
                *l += 1;
            }
            (w, spec)
        })
        .collect();
    let t = std::time::Instant::now();
    for (result, &(w, spec)) in control
        .attach_many(&placed, PORT_TIMEOUT)
        .into_iter()
        .zip(&placed)
    {
        match result {
            Ok(()) => {
                held.insert(spec.name.clone(), w);
                eprintln!(
                    "weir agent: interface {} attached to worker {w} ({} ms)",
                    spec.name,
                    t.elapsed().as_millis()
                );
            }
            Err(why) => problems.push(format!("attaching {}: {why}", spec.name)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// How long the control loop waits for a worker to attach or detach an interface.
const PORT_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use weir_workers::bpf::UplinkFilter;

    use super::*;

    fn port(name: &str, uplink: bool) -> PortSpec {
        PortSpec {
            name: name.into(),
            uplink_filter: uplink.then(|| UplinkFilter {
                v4: Vec::new(),
                v6: Vec::new(),
                udp_ports: vec![51820],
                snat: Vec::new(),
            }),
        }
    }

    #[test]
    fn ports_are_dealt_round_robin_with_the_uplink_on_the_first_worker() {
        let ports = [
            port("a", false),
            port("b", false),
            port("up", true),
            port("c", false),
        ];
        let names = |ws: &[Vec<PortSpec>]| -> Vec<Vec<String>> {
            ws.iter()
                .map(|w| w.iter().map(|p| p.name.clone()).collect())
                .collect()
        };
        assert_eq!(names(&spread(&ports, 2)), [vec!["up", "a", "c"], vec!["b"]]);
        assert_eq!(names(&spread(&ports, 1)), [vec!["up", "a", "b", "c"]]);
        let three = spread(&ports, 3);
        assert_eq!(three.iter().map(Vec::len).sum::<usize>(), 4);
    }
}
