//! The Kubernetes side of the control plane: the datastore that watches the API server,
//! and the fake API server the tests and benchmarks run it against.

pub mod fake;
pub mod ipam;
pub mod node;
pub mod source;
