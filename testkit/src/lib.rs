//! Helpers for weir's tests and benchmarks, and for nothing else.
//!
//! - [`fake_api`]: an in-process fake of the Kubernetes API server that kube-rs clients
//!   talk to unchanged.
//! - [`containerd`]: a private containerd with runc, a busybox image built locally, a CNI
//!   network where `ctr run --cni` finds it, and containers run with `ctr run --rm --cni`.
//! - [`flow`]: a timed UDP flow between two namespaces (an echo and a prober), for the
//!   longest silence of forwarding while something else happens.
//! - [`lab`]: network-namespace labs for the scenario tests and benchmarks (root): command
//!   runners with clear errors, `setns`, MAC and interface-index readers, the root check,
//!   and a guard that removes the namespaces, links and processes a lab made.
//!
//! This crate is for tests and benchmarks only: the crates' `[dev-dependencies]` and the
//! benchmark harness (`weir-perf`) use it. It is never a dependency of the agent
//! (`weir-control`'s `[dependencies]`), so none of this code, nor what it pulls in, ends
//! up in the `weir` binary; and it depends on no weir crate, so that any of them can take
//! it as a dev-dependency without a cycle.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod containerd;
pub mod fake_api;
pub mod flow;
pub mod lab;
