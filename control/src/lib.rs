//! weir's control plane: the datastores, the calculation that turns cluster state into a
//! node's tables, the agent that runs the workers, and the in-memory demo.

#![forbid(unsafe_code)]

pub mod agent;
pub mod attach;
pub mod attachments;
pub mod calc;
pub mod cni;
pub mod crd;
pub mod demo;
pub mod ipam;
pub mod k8s;
pub mod netlink;
pub mod policy;
pub mod services;
pub mod wireguard;
