//! The Kubernetes side of the control plane: the datastore that watches the API server
//! (`source`), IPAM blocks kept as API objects (`ipam`), and the node's own object
//! (`node`). The fake API server that the tests and benchmarks run all this against is
//! `weir_testkit::fake_api`, a dev-dependency only: it is not part of the agent.

pub mod ipam;
pub mod node;
pub mod source;
