//! Helpers for weir's tests and benchmarks, and for nothing else.
//!
//! - [`fake_api`]: an in-process fake of the Kubernetes API server that kube-rs clients
//!   talk to unchanged.
//!
//! This crate is for tests and benchmarks only: the crates' `[dev-dependencies]` and the
//! benchmark harness (`weir-perf`) use it. It is never a dependency of the agent
//! (`weir-control`'s `[dependencies]`), so none of this code, nor what it pulls in, ends
//! up in the `weir` binary; and it depends on no weir crate, so that any of them can take
//! it as a dev-dependency without a cycle.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod fake_api;
