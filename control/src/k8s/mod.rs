//! Kubernetes API plumbing for the control plane.

pub mod fake;
