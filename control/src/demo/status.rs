//! `weir status`: a running agent's state in a few lines, read from its own `/readyz` and
//! `/metrics` (run it where the agent listens, e.g. inside the node's namespace).

use std::fmt::Write as _;
use std::time::Duration;

use super::cluster::{metric, metric_with};
use super::probe::http_get;

/// The summary, and whether the agent is ready.
pub fn render(port: u16) -> Result<(String, bool), String> {
    let timeout = Duration::from_secs(2);
    let (ready_status, _) = http_get(port, "/readyz", timeout)
        .map_err(|e| format!("no agent answers on 127.0.0.1:{port}: {e}"))?;
    let (status, metrics) = http_get(port, "/metrics", timeout)?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    Ok((summary(&metrics, ready_status == 200), ready_status == 200))
}

/// The summary of a `/metrics` text.
pub fn summary(m: &str, ready: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "agent:      {}, snapshot generation {}",
        if ready { "ready" } else { "NOT READY" },
        metric(m, "weir_snapshot_generation")
    );
    let _ = writeln!(
        out,
        "datastore:  {} changes applied, {} rejected, {} objects refused",
        metric(m, "weir_datastore_changes_applied_total"),
        metric(m, "weir_datastore_changes_rejected_total"),
        metric(m, "weir_datastore_objects_refused_total"),
    );
    let _ = writeln!(
        out,
        "packets:    {} received, {} sent",
        metric(m, "weir_rx_packets_total"),
        metric(m, "weir_tx_packets_total"),
    );
    let _ = writeln!(
        out,
        "wireguard:  {} sealed, {} opened, {} handshakes, {} without a peer",
        metric(m, "weir_wireguard_sealed_total"),
        metric(m, "weir_wireguard_opened_total"),
        metric(m, "weir_wireguard_handshakes_initiated_total")
            + metric(m, "weir_wireguard_handshakes_answered_total"),
        metric(m, "weir_wireguard_no_peer_total"),
    );
    let _ = writeln!(
        out,
        "services:   {} connections refused for want of endpoints, {} tables refused \
         (`weir services` lists them)",
        metric_with(m, "weir_drops_total", "reason=\"service_no_endpoints\""),
        metric(m, "weir_services_refused_total"),
    );
    let mut reasons: Vec<(String, u64)> = Vec::new();
    for line in m.lines().filter(|l| l.starts_with("weir_drops_total{")) {
        let Some(reason) = line
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        if reasons.iter().any(|(r, _)| r == reason) {
            continue;
        }
        let n = metric_with(m, "weir_drops_total", &format!("reason=\"{reason}\""));
        if n > 0 {
            reasons.push((reason.to_owned(), n));
        }
    }
    if reasons.is_empty() {
        out.push_str("drops:      none\n");
    } else {
        let list: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(out, "drops:      {}", list.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_sums_workers_and_lists_only_nonzero_drops() {
        let m = "weir_snapshot_generation 7\n\
                 weir_rx_packets_total{worker=\"0\"} 10\nweir_rx_packets_total{worker=\"1\"} 5\n\
                 weir_drops_total{worker=\"0\",reason=\"policy_denied_ingress\"} 2\n\
                 weir_drops_total{worker=\"1\",reason=\"policy_denied_ingress\"} 1\n\
                 weir_drops_total{worker=\"0\",reason=\"ttl_expired\"} 0\n\
                 weir_wireguard_sealed_total{worker=\"0\"} 4\n\
                 weir_drops_total{worker=\"1\",reason=\"service_no_endpoints\"} 6\n\
                 weir_services_refused_total 1\n";
        let s = summary(m, true);
        assert!(s.contains("ready, snapshot generation 7"), "{s}");
        assert!(s.contains("15 received"), "{s}");
        assert!(
            s.contains("drops:      policy_denied_ingress 3, service_no_endpoints 6\n"),
            "{s}"
        );
        assert!(!s.contains("ttl_expired"), "{s}");
        assert!(s.contains("4 sealed"), "{s}");
        assert!(
            s.contains("services:   6 connections refused for want of endpoints, 1 tables"),
            "{s}"
        );
        assert!(summary("", false).contains("NOT READY"));
    }
}
