//! The Kubernetes side of the control plane: the datastore that watches the API server.

pub mod source;
