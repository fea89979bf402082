//! weir's dataplane: everything a worker does to a batch of frames, without I/O.
//!
//! Nothing in this crate opens a socket, reads a clock or draws a random number: time is an
//! argument, so every behaviour can be replayed in a unit test.

#![deny(unsafe_code)]

pub mod batch;
pub mod counters;
pub mod craft;
pub mod flow;
pub mod frame;
pub mod node;
pub mod policy;
pub mod route;
pub mod service;
pub mod snapshot;
pub mod wire;

pub use batch::{Batch, IfIndex, Meta, Next, BATCH_SIZE};
pub use counters::{Counters, DropReason, IcmpErrorKind};
pub use flow::FlowKey;
pub use frame::{Frame, FrameRegion, FreeList};
pub use node::Pipeline;
pub use snapshot::{Publisher, Snapshot, SnapshotBuilder, SnapshotReader};
