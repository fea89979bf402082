//! `weir demo`: the two-node cluster on this machine ([`cluster`]) and what it intends
//! ([`intent`]), the in-memory frame check of the pipeline ([`frames`]), the probes
//! ([`probe`]), and `weir status` ([`status`]).

pub mod cluster;
pub mod frames;
pub mod intent;
pub mod probe;
pub mod status;
