//! Service churn in the control plane: what one EndpointSlice change costs the agent at
//! 10k services, the way the agent does it, beside the way it did it before.
//!
//! The cluster is [`ServiceSet::generate`]'s (`n` services × `endpoints` endpoints, in
//! EndpointSlices), loaded into the agent's calculator. Each change flips the `ready`
//! condition of one endpoint of one slice (a pod failing or passing its readiness probe,
//! the most frequent change a cluster makes to its services), picked at random; then,
//! each timed alone:
//!
//! - **in place** (weir, the agent's path): the change applied to the calculator, then
//!   `ServiceState::refresh` + `commit`, with a snapshot holding the published table as the
//!   agent's does: only the touched Service is derived, and replaced in the spare table
//!   ([`weir_control::services::ServiceState`]);
//! - **rebuild** (anchor, the agent's path before): every service port derived from the
//!   model (`node_services`) and `ServiceTable::build` of every spec, sharing the unchanged
//!   Maglev tables with the published table; `derive` is the first half alone.
//!
//! Every change is checked: the endpoint's new condition is in the published table (a
//! ready endpoint is in the set new connections take, a non-ready one is not, when others
//! are ready), and the in-place table looks up like the rebuilt one for the changed
//! service.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use weir_control::calc::{Calculator, Change};
use weir_control::policy::load::{load_documents, Object, Resource};
use weir_control::services::{node_services, ServiceState};
use weir_dataplane::service::ServiceTable;
use weir_dataplane::FlowKey;

use super::datastore::services_yaml;
use super::model::{ServiceSet, NAMESPACE};
use crate::report::{percentile, BenchResult};
use crate::rng::SplitMix64 as Rng;

/// The node whose table is measured.
const NODE: &str = "node-0";

/// What to run.
#[derive(Debug, Clone)]
pub struct ChurnBenchConfig {
    pub services: usize,
    pub endpoints: usize,
    /// Changes per round.
    pub changes: usize,
    pub runs: usize,
}

/// Runs the benchmark: per round, `changes` changes; the figures are medians over rounds
/// of each round's percentile.
pub fn run(cfg: &ChurnBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    if cfg.services < 2 || cfg.endpoints < 2 || cfg.changes == 0 || cfg.runs == 0 {
        return Err("churn needs at least 2 services of 2 endpoints, 1 change, 1 run".into());
    }
    let set = ServiceSet::generate(
        cfg.services,
        cfg.endpoints,
        (Ipv4Addr::new(198, 18, 9, 2), 9),
    );
    let yaml = services_yaml(&set, NODE, "sink");
    let objects = load_documents(&yaml, "churn.yaml")
        .map_err(|e| format!("loading the generated services: {e:?}"))?;
    let mut rng = Rng(0xC4_0245);
    let (mut derive, mut in_place, mut rebuild) = (Vec::new(), Vec::new(), Vec::new());
    let mut copies = Vec::new();
    for _ in 0..cfg.runs {
        let mut calc = Calculator::new(NODE);
        for o in &objects {
            let refused = calc.apply(Change::Upsert(o.clone()));
            if !refused.is_empty() {
                return Err(format!("the generated services were refused: {refused:?}"));
            }
        }
        // The slices a change can flip an endpoint of.
        let mut slices: Vec<Object> = objects
            .iter()
            .filter(|o| matches!(&o.resource, Resource::EndpointSlice(s) if s.endpoints.len() >= 2))
            .cloned()
            .collect();
        let mut state = ServiceState::default();
        let first = state.refresh(&mut calc, NODE, &[]);
        let mut snapshot = Arc::clone(first.table());
        state.commit(first);
        let (mut d, mut p, mut r) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cfg.changes {
            let k = rng.below(slices.len() as u64) as usize;
            let Resource::EndpointSlice(slice) = &mut slices[k].resource else {
                return Err("a listed slice is not a slice".into());
            };
            let e = rng.below(slice.endpoints.len() as u64) as usize;
            slice.endpoints[e].ready = !slice.endpoints[e].ready;
            let (addr, ready) = (slice.endpoints[e].addresses[0], slice.endpoints[e].ready);
            let service = slice.service.clone().ok_or("a slice without its service")?;
            let change = Change::Upsert(slices[k].clone());

            let previous = Arc::clone(&snapshot);
            let t = Instant::now();
            calc.apply(change);
            let change = state.refresh(&mut calc, NODE, &[]);
            let published = Arc::clone(change.table());
            state.commit(change);
            p.push(t.elapsed().as_secs_f64() * 1e6);
            // The new snapshot replaces the old one.
            snapshot = published;

            let t = Instant::now();
            let specs = node_services(calc.cluster(), NODE, &[]);
            let derived = t.elapsed();
            let rebuilt =
                ServiceTable::build(specs, Some(&previous)).map_err(|e| format!("rebuild: {e}"))?;
            r.push(t.elapsed().as_secs_f64() * 1e6);
            d.push(derived.as_secs_f64() * 1e6);
            drop(previous);
            check(&snapshot, &rebuilt, &set, &service, addr, ready)?;
        }
        copies.push(state.copies() as f64);
        derive.push(d);
        in_place.push(p);
        rebuild.push(r);
    }
    let per_round = |rounds: &[Vec<f64>], q: f64| -> Vec<f64> {
        rounds.iter().map(|r| percentile(r, q)).collect()
    };
    let n = crate::report::count_label(cfg.services);
    let mut out = Vec::new();
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        let anchor = crate::report::median_min_max(&per_round(&rebuild, q)).0;
        out.push(
            BenchResult::from_samples(
                format!("services_change_in_place_{n}_{label}_us"),
                "us",
                per_round(&in_place, q),
            )
            .with_anchor(format!("rebuild_{label}_us"), anchor),
        );
        out.push(BenchResult::from_samples(
            format!("services_change_rebuild_{n}_{label}_us"),
            "us",
            per_round(&rebuild, q),
        ));
        out.push(BenchResult::from_samples(
            format!("services_change_derive_{n}_{label}_us"),
            "us",
            per_round(&derive, q),
        ));
    }
    out.push(BenchResult::from_samples(
        format!("services_change_copies_{n}"),
        "copies",
        copies,
    ));
    let notes = vec![format!(
        "services_change_*: {} services × {} endpoints in EndpointSlices, {} changes per round \
         (one endpoint's ready condition flipped); in_place: the change applied to the \
         calculator, ServiceState::refresh + commit (the agent's path: only the touched \
         Service derived and replaced in the spare table); rebuild (anchor, the agent's path \
         before): every spec derived from the model and ServiceTable::build of them all, \
         sharing unchanged Maglev tables; derive: that derivation alone; copies: tables made \
         by copying (the first; the first change after it, when the first held more than \
         64 Services: a copy costs less than catching the spare up; and any change made \
         while a snapshot held the spare)",
        cfg.services, cfg.endpoints, cfg.changes
    )];
    Ok((out, notes))
}

/// The changed endpoint is where its condition says in the published table, and the
/// service looks up the same in both tables.
fn check(
    published: &ServiceTable,
    rebuilt: &ServiceTable,
    set: &ServiceSet,
    service: &str,
    addr: IpAddr,
    ready: bool,
) -> Result<(), String> {
    let s = set
        .services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| format!("service {service} is not generated"))?;
    let vip = FlowKey::map_v4(s.cluster_ip.octets());
    let look = |t: &ServiceTable| {
        t.frontend(&vip, s.port, s.protocol)
            .and_then(|f| f.port())
            .map(|p| (p.spec.clone(), p.cluster.backends.clone()))
    };
    let (Some((spec, backends)), Some(other)) = (look(published), look(rebuilt)) else {
        return Err(format!(
            "{NAMESPACE}/{service}: no frontend at {}",
            s.cluster_ip
        ));
    };
    if (spec.clone(), backends.clone()) != other {
        return Err(format!(
            "{NAMESPACE}/{service}: the in-place table differs from a rebuild"
        ));
    }
    let in_set = backends.iter().any(|b| b.0 == FlowKey::map_ip(addr));
    let any_ready = spec.backends.iter().any(|b| b.ready);
    if any_ready && in_set != ready {
        return Err(format!(
            "{NAMESPACE}/{service}: endpoint {addr} ready={ready} but in the set: {in_set}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_checked_and_every_figure_is_reported() {
        let cfg = ChurnBenchConfig {
            services: 40,
            endpoints: 4,
            changes: 30,
            runs: 2,
        };
        let (results, notes) = run(&cfg).unwrap();
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        for what in ["in_place", "rebuild", "derive"] {
            for q in ["p50", "p99"] {
                let name = format!("services_change_{what}_40_{q}_us");
                assert!(names.contains(&name.as_str()), "{name} in {names:?}");
            }
        }
        let copies = results
            .iter()
            .find(|r| r.name == "services_change_copies_40")
            .unwrap();
        assert_eq!(
            copies.value, 1.0,
            "only the first table is made from scratch"
        );
        assert_eq!(notes.len(), 1);
    }
}
