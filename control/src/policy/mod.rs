//! Network policy in the control plane: the objects (Kubernetes NetworkPolicy and weir's
//! tiered policies), their loading and validation, the selector language, and the compiler
//! that turns a cluster's objects into the dataplane's [`weir_dataplane::policy::PolicyTables`].

pub mod compile;
pub mod eval;
pub mod load;
pub mod model;
pub mod selector;
