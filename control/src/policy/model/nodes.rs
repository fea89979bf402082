//! `v1` Node, kept for the agent rather than for policy: what it needs to reach a node and
//! its pods (addresses, pod CIDRs, the annotations nodes publish their WireGuard keys in),
//! and the labels IP pools select nodes by.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;

use crate::policy::selector::{validate_dns_subdomain, Labels};

use super::validate::Cx;
use super::{Kind, ObjectRef, ValidationError};

/// A `v1` Node, reduced to what the agent needs to reach it and its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The name.
    pub name: String,
    /// The labels.
    pub labels: Labels,
    /// `metadata.annotations` (the agent reads `weir.dev/wireguard-public-key` and
    /// `weir.dev/underlay-mac`).
    pub annotations: BTreeMap<String, String>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`).
    pub pod_cidrs: Vec<IpNet>,
    /// `status.addresses` of type `InternalIP`, in order.
    pub internal_ips: Vec<IpAddr>,
}

impl Node {
    /// Validates a Node as parsed from the API.
    pub fn from_api(node: core::Node) -> Result<Node, ValidationError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::cluster(Kind::Node, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        let labels = cx.labels(&node.metadata)?;
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        let spec = node.spec.unwrap_or_default();
        let (field, cidrs) = match spec.pod_cidrs {
            Some(list) if !list.is_empty() => ("spec.podCIDRs", list),
            _ => ("spec.podCIDR", spec.pod_cidr.into_iter().collect()),
        };
        let pod_cidrs = cx.nets(field, Some(cidrs))?;
        let mut internal_ips = Vec::new();
        for (i, a) in node
            .status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if a.type_ == "InternalIP" {
                let ip = a.address.parse().map_err(|_| {
                    cx.err(
                        &format!("status.addresses[{i}].address"),
                        format!("{:?} is not an IP address", a.address),
                    )
                })?;
                internal_ips.push(ip);
            }
        }
        Ok(Node {
            name,
            labels,
            annotations,
            pod_cidrs,
            internal_ips,
        })
    }
}
