//! weir's workers: the drivers that move frames between interfaces and the pipeline.
//!
//! This crate allows `unsafe` only in the modules that touch the kernel (AF_XDP rings,
//! mmap, BPF); the in-memory driver is safe code.

#![deny(unsafe_code)]

pub mod bpf;
pub mod handoff;
pub mod mem;
pub mod ports;
pub mod signals;
pub mod wireguard;
pub mod worker;
pub mod xsk;

pub use mem::{InjectError, MemDriver};
