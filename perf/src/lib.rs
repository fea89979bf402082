//! weir's benchmark harness. Each benchmark runs its anchor in the same process run, on the
//! same pinned core, and reports medians, ranges and ratios (see `report`).

pub mod alloc;
pub mod attach;
pub mod combined;
pub mod control;
pub mod dpdk;
pub mod forward;
pub mod lpm;
pub mod pipeline;
pub mod plots;
pub mod policy;
pub mod progress;
pub mod report;
pub mod results_md;
pub mod rng;
pub mod services;
pub mod steer;
pub mod tools;
pub mod wireguard;
pub mod wireguard_e2e;
