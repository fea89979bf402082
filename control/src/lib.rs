//! weir's control plane. For now: the in-memory demo behind `weir demo`. The datastores,
//! the calculation graph, IPAM and the CNI server grow here.

#![forbid(unsafe_code)]

pub mod agent;
pub mod demo;
pub mod k8s;
pub mod policy;
pub mod wireguard;
