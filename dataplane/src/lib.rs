//! weir's dataplane: everything a worker does to a batch of frames, without I/O.
//!
//! Nothing in this crate opens a socket, reads a clock or draws a random number: time is an
//! argument, so every behaviour can be replayed in a unit test.

#![deny(unsafe_code)]

pub mod route;
pub mod wire;
