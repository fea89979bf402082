//! `weir policy eval`: what would the dataplane decide for these connections?
//!
//! The objects are loaded and compiled exactly as the agent does, and every probe is
//! decided by [`PolicyTables::evaluate`](weir_dataplane::policy::PolicyTables::evaluate),
//! the function the workers' policy stage calls: there is no second evaluator to drift
//! from the first.
//!
//! Probes are JSON: `[{"from": "ns/pod", "to": "ns/pod", "port": 80, "protocol": "TCP"}]`.
//! `from` and `to` may also be IP addresses, for traffic from or to outside the cluster;
//! `protocol` defaults to TCP and may be a name (TCP, UDP, SCTP, ICMP, ICMPv6) or a number;
//! `srcPort` (default 40000) sets the source port. For ICMP, `port` is the ICMP type and
//! `code` the code.

use std::net::IpAddr;

use serde::Deserialize;
use weir_dataplane::flow::FlowKey;
use weir_dataplane::policy::{Decision, Direction, PathDecision, PolicyTables, Verdict};
use weir_dataplane::snapshot::EndpointId;

use super::compile::{compile, Compiled};
use super::load::Cluster;
use super::model::{IpFamily, NamespacedName, Protocol};

/// One probe as written in the probes file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// `namespace/pod`, or an IP address outside the cluster.
    pub from: String,
    /// `namespace/pod`, or an IP address outside the cluster.
    pub to: String,
    /// Destination port (ICMP: the type).
    #[serde(default)]
    pub port: Option<u32>,
    /// Source port; 40000 if absent.
    #[serde(default)]
    pub src_port: Option<u32>,
    /// ICMP code.
    #[serde(default)]
    pub code: Option<u32>,
    /// Protocol name or number; TCP if absent.
    #[serde(default)]
    pub protocol: Option<serde_json::Value>,
}

/// The answer: one verdict and one explanation per probe, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub verdicts: Vec<&'static str>,
    pub explanations: Vec<String>,
}

/// A probe that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: probes[{index}].{field}: {message}")]
pub struct ProbeError {
    pub source_name: String,
    pub index: usize,
    pub field: &'static str,
    pub message: String,
}

/// Parses a probes file.
pub fn parse_probes(json: &str, source_name: &str) -> Result<Vec<Probe>, String> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        format!("{source_name}: {path}: {}", e.inner())
    })
}

/// One side of a probe, resolved.
struct Side {
    ip: IpAddr,
    endpoint: Option<EndpointId>,
    name: String,
}

/// Evaluates probes against a cluster.
pub fn evaluate(
    cluster: &Cluster,
    probes: &[Probe],
    family: IpFamily,
    source_name: &str,
) -> Result<Report, ProbeError> {
    let compiled = compile(cluster);
    evaluate_compiled(cluster, &compiled, probes, family, source_name)
}

/// Evaluates probes against an already compiled cluster.
pub fn evaluate_compiled(
    cluster: &Cluster,
    compiled: &Compiled,
    probes: &[Probe],
    family: IpFamily,
    source_name: &str,
) -> Result<Report, ProbeError> {
    let mut report = Report {
        verdicts: Vec::with_capacity(probes.len()),
        explanations: Vec::with_capacity(probes.len()),
    };
    for (index, probe) in probes.iter().enumerate() {
        let err = |field: &'static str, message: String| ProbeError {
            source_name: source_name.to_owned(),
            index,
            field,
            message,
        };
        let from = side(cluster, compiled, &probe.from, family).map_err(|m| err("from", m))?;
        let to = side(cluster, compiled, &probe.to, family).map_err(|m| err("to", m))?;
        if IpFamily::of(from.ip) != IpFamily::of(to.ip) {
            return Err(err(
                "to",
                format!("{} and {} are of different IP families", from.ip, to.ip),
            ));
        }
        let protocol = protocol(probe.protocol.as_ref()).map_err(|m| err("protocol", m))?;
        let number = |v: Option<u32>, field: &'static str, default: u16, max: u32| match v {
            None => Ok(default),
            Some(n) if n <= max => Ok(n as u16),
            Some(n) => Err(err(field, format!("{n} is out of range (0 to {max})"))),
        };
        let icmp = matches!(protocol, Protocol::ICMP | Protocol::ICMPV6);
        let (src_port, dst_port) = if icmp {
            let ty = number(probe.port, "port", 8, 255)?;
            let code = number(probe.code, "code", 0, 255)?;
            // The flow key carries ICMP type and code in the source port (see `flow`).
            ((ty << 8) | code, 0)
        } else {
            if !protocol.has_ports() && probe.port.is_some() {
                return Err(err("port", format!("{protocol} has no ports")));
            }
            (
                number(probe.src_port, "srcPort", 40000, 65535)?,
                number(probe.port, "port", 0, 65535)?,
            )
        };
        let key = FlowKey {
            src: FlowKey::map_ip(from.ip),
            dst: FlowKey::map_ip(to.ip),
            src_port,
            dst_port,
            proto: protocol.number(),
        };
        let decision = compiled.tables.evaluate(from.endpoint, to.endpoint, &key);
        report.verdicts.push(match decision.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        });
        report
            .explanations
            .push(explain(&compiled.tables, &from, &to, &decision));
    }
    Ok(report)
}

fn side(
    cluster: &Cluster,
    compiled: &Compiled,
    text: &str,
    family: IpFamily,
) -> Result<Side, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        // An address may still be a pod's: traffic to a pod's IP is traffic to the pod.
        let owner = cluster
            .pods
            .iter()
            .find(|(_, p)| !p.host_network && p.ips.contains(&ip));
        return Ok(Side {
            ip,
            endpoint: owner.and_then(|(n, _)| compiled.endpoint(n)),
            name: owner.map_or_else(|| ip.to_string(), |(n, _)| n.to_string()),
        });
    }
    let Some((ns, name)) = text.split_once('/') else {
        return Err(format!(
            "\"{text}\" is neither namespace/pod nor an IP address"
        ));
    };
    let id = NamespacedName::new(ns, name);
    let pod = cluster
        .pods
        .get(&id)
        .ok_or_else(|| format!("there is no pod {id}"))?;
    if pod.host_network {
        return Err(format!(
            "pod {id} is on the host network; policy does not apply to it"
        ));
    }
    let ip = pod
        .ip(family)
        .ok_or_else(|| format!("pod {id} has no {family} address in status.podIPs"))?;
    Ok(Side {
        ip,
        endpoint: compiled.endpoint(&id),
        name: id.to_string(),
    })
}

fn protocol(value: Option<&serde_json::Value>) -> Result<Protocol, String> {
    match value {
        None => Ok(Protocol::TCP),
        Some(serde_json::Value::String(s)) => Protocol::from_name(s).ok_or_else(|| {
            format!("\"{s}\" is not a protocol: use TCP, UDP, SCTP, ICMP, ICMPv6 or a number")
        }),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .and_then(Protocol::from_number)
            .ok_or_else(|| format!("{n} is not a protocol number (1 to 255)")),
        Some(other) => Err(format!("{other} is not a protocol")),
    }
}

/// One line saying what decided: the rule, or the end of a tier, or that nothing applied.
fn explain(tables: &PolicyTables, from: &Side, to: &Side, d: &PathDecision) -> String {
    if from.endpoint.is_some() && from.endpoint == to.endpoint {
        return format!("allow: {} reaches itself (always allowed)", from.name);
    }
    let side = |direction: Direction, who: &Side, decision: Option<Decision>| -> String {
        let dir = match direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        if who.endpoint.is_none() {
            return format!("{dir} of {}: outside the cluster, no policy", who.name);
        }
        match decision {
            None => format!("{dir} of {}: no policy selects", who.name),
            Some(Decision { rule: None, .. }) => {
                format!("{dir} of {}: every tier passed (allowed)", who.name)
            }
            Some(Decision {
                rule: Some(id),
                verdict,
                ..
            }) => {
                let info = tables.rules.get(id as usize);
                let what = match verdict {
                    Verdict::Allow => "allowed",
                    Verdict::Deny => "denied",
                };
                match info {
                    Some(info) if info.index.is_some() => format!(
                        "{dir} of {}: {what} by tier {}, policy {}, {dir} rule {}",
                        who.name,
                        info.tier,
                        info.policy,
                        info.index.unwrap_or_default()
                    ),
                    Some(info) => format!(
                        "{dir} of {}: {what} by tier {}: selected by its policies, no rule \
                         matched (the tier's default action)",
                        who.name, info.tier
                    ),
                    None => format!("{dir} of {}: {what} by rule {id}", who.name),
                }
            }
        }
    };
    let egress = side(Direction::Egress, from, d.egress);
    match (d.verdict, d.denied_by) {
        (Verdict::Deny, Some(Direction::Egress)) => format!("deny: {egress}"),
        (Verdict::Deny, _) => format!("deny: {}", side(Direction::Ingress, to, d.ingress)),
        (Verdict::Allow, _) => format!(
            "allow: {egress}; {}",
            side(Direction::Ingress, to, d.ingress)
        ),
    }
}
