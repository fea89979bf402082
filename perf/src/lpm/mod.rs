//! The LPM benchmark: weir's route tables beside DPDK's `rte_fib` and a naive binary trie,
//! on the same prefixes and the same lookup addresses.
//!
//! Results, each in lookups/s and (`*_ns`) ns/lookup: `lpm_v4_<routes>_batch`,
//! `_single` (one `lookup` call per address), `_batch_4k_pages` (the same table on
//! ordinary pages) and `_naive_trie`, all against the best `dpdk-test-fib` DIR-24-8
//! variant; `_batch_random_order` and `_single_random_order`, the same addresses
//! shuffled, against the best variant on that order; `lpm_v6_<routes>_batch`, `_single`
//! and `_naive_trie` against the best `dpdk-test-fib` IPv6 trie variant. Without DPDK,
//! the anchor is the naive trie.
//!
//! Method:
//! - **Same input for everyone.** The routes are generated here, deterministically
//!   (splitmix64, fixed seeds), and written to `workdir` in `dpdk-test-fib`'s own file
//!   format (`a.b.c.d/len nexthop`, one address per line for lookups); `dpdk-test-fib`
//!   reads them back with `-f`/`-t`. IPv4 uses `dpdk-test-fib`'s default depth
//!   distribution (its `-d 0:0`: every length /1../32 gets an equal share of the routes,
//!   capped at the 2^len prefixes a length has, so /1../12 are complete and /13../32 get
//!   about 4.6k each of 100k). IPv6 uses 20% /48, 70% /64 (half of them inside a /48),
//!   10% /128 (each inside a /64). Lookup address `i` lies under route `i mod routes`
//!   with random host bits, as `dpdk-test-fib` generates them: every lookup hits a route,
//!   and consecutive lookups sweep the table in route order, which makes branches
//!   predictable. Traffic does not sweep a table, so IPv4 also runs on the same addresses
//!   shuffled.
//! - **Same memory.** DPDK's tables live on 2 MiB hugepages, so weir's IPv4 arrays are
//!   advised onto transparent huge pages (`madvise(MADV_HUGEPAGE)` before they are first
//!   touched, through
//!   [`Ipv4Lpm::build_in`](weir_dataplane::route::Ipv4Lpm::build_in)); the notes say how
//!   much landed there, and `_batch_4k_pages` shows what the page size is worth.
//! - **Interleaved rounds.** Each of `runs` rounds measures weir's batch lookup (bursts of
//!   64, like `dpdk-test-fib`), weir's single lookup, the naive trie (on the first million
//!   addresses) and every `dpdk-test-fib` lookup variant, so that noise on a shared VM hits
//!   all of them alike. Figures are medians with [min - max] over the rounds. Each timed
//!   weir pass follows an untimed million lookups, as `dpdk-test-fib` times its lookups
//!   right after building its table: both start warm.
//! - **Same core.** The measuring thread and `dpdk-test-fib` (`-l <cpu>`) run on the same
//!   CPU.
//! - **Right answers.** Before timing, weir's answers are compared one by one with the
//!   naive trie's; every timed pass then has to reproduce the same checksum. A benchmark
//!   that computes wrong answers stops with [`LpmBenchError::WrongAnswer`].
//! - **DPDK's figure** is its `AVG FIB lookup` line: TSC cycles per lookup over
//!   `rte_fib_lookup_bulk` calls of 64 addresses, converted with the TSC frequency from
//!   `/proc/cpuinfo`. The anchor is the best of its lookup variants (`s1`, `s2`, `s3`, `v`
//!   = AVX-512 for DIR-24-8; `s`, `v` for the IPv6 trie); all are listed in the notes.
//!
//! `dpdk-test-fib` runs with `--in-memory` (no hugetlbfs mount needed) and wants
//! hugepages: when running as root with too few free, the benchmark raises
//! `/proc/sys/vm/nr_hugepages` for the run and puts the old value back afterwards, also on
//! error; otherwise it runs DPDK with `--no-huge` and says so in the notes. Each run has a
//! deadline, after which that child is killed.

mod fib;
mod generate;
mod measure;

pub use fib::{
    parse_avg_fib_lookup, read_ips_v4, read_ips_v6, read_routes_v4, read_routes_v6, write_ips_v4,
    write_ips_v6, write_routes_v4, write_routes_v6,
};
pub use generate::{dpdk_depth_counts, v4_lookups, v4_routes, v6_lookups, v6_routes};

use std::io;
use std::path::{Path, PathBuf};

use weir_dataplane::route::LpmError;

use crate::report::{BenchResult, Machine};

/// What to run.
#[derive(Debug, Clone)]
pub struct LpmBenchConfig {
    /// Routes per table (IPv4 and IPv6 alike).
    pub routes: usize,
    /// Lookup addresses per timed pass.
    pub lookups: usize,
    /// Interleaved rounds; figures are medians over them.
    pub runs: usize,
    /// The CPU the measuring thread and `dpdk-test-fib` run on; `None` leaves both
    /// unpinned (DPDK then uses CPU 0).
    pub cpu: Option<usize>,
    /// Whether to run the `dpdk-test-fib` anchor.
    pub dpdk: bool,
    /// Where the route and address files for `dpdk-test-fib` go (removed afterwards,
    /// and the directory too if the benchmark made it).
    pub workdir: PathBuf,
}

impl Default for LpmBenchConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        LpmBenchConfig {
            routes: 100_000,
            lookups: 10_000_000,
            runs: 5,
            cpu: (cpus > 1).then_some(1),
            dpdk: true,
            workdir: std::env::temp_dir().join("weir-bench-lpm"),
        }
    }
}

/// Why the benchmark could not produce figures.
#[derive(Debug, thiserror::Error)]
pub enum LpmBenchError {
    /// The DPDK anchor was asked for but its tool is missing.
    #[error("the DPDK anchor cannot run: {0}; or run without the DPDK anchor")]
    DpdkMissing(#[from] crate::tools::Missing),
    /// The configuration cannot be run.
    #[error("invalid LPM benchmark configuration: {0}")]
    Config(String),
    /// A file in the work directory could not be written or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The generated routes were rejected by weir's table (a bug in the generator).
    #[error("building weir's table from the generated routes failed: {0}")]
    Build(#[from] LpmError),
    /// The measuring thread could not be pinned.
    #[error("could not pin the measuring thread to CPU {0}; choose another CPU or none")]
    Pin(usize),
    /// weir's table, the naive trie or a timed pass disagreed.
    #[error("wrong answers, so the figures would mean nothing: {0}")]
    WrongAnswer(String),
    /// `dpdk-test-fib` exited with an error.
    #[error("`{command}` failed ({status}); its last output:\n{tail}")]
    DpdkFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// The end of its output.
        tail: String,
    },
    /// `dpdk-test-fib` ran past its deadline and was killed.
    #[error("`{command}` did not finish within {secs} s and was killed")]
    DpdkTimeout {
        /// The command line.
        command: String,
        /// The deadline.
        secs: u64,
    },
    /// `dpdk-test-fib` ended without printing its figure.
    #[error("`{command}` printed no `AVG FIB lookup` line; its last output:\n{tail}")]
    DpdkOutput {
        /// The command line.
        command: String,
        /// The end of its output.
        tail: String,
    },
    /// DPDK's cycle counts cannot be turned into time.
    #[error(
        "the TSC frequency is unknown (no `cpu MHz` in /proc/cpuinfo), so dpdk-test-fib's \
         cycle counts cannot be converted to time; run without the DPDK anchor"
    )]
    NoTsc,
}

/// Runs the benchmark and returns its results and the notes a reader needs.
///
/// # Errors
/// See [`LpmBenchError`]: a missing `dpdk-test-fib` when `cfg.dpdk` is set, a work
/// directory that cannot be written, a CPU that cannot be pinned, a failing or hanging
/// `dpdk-test-fib`, or wrong answers.
pub fn run(cfg: &LpmBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), LpmBenchError> {
    if cfg.routes == 0 || cfg.lookups == 0 || cfg.runs == 0 {
        return Err(LpmBenchError::Config(format!(
            "routes ({}), lookups ({}) and runs ({}) must all be at least 1",
            cfg.routes, cfg.lookups, cfg.runs
        )));
    }
    let dpdk_bin = if cfg.dpdk {
        Some(crate::tools::require("dpdk-test-fib")?)
    } else {
        None
    };
    let tsc_mhz = Machine::detect(cfg.cpu).tsc_mhz;
    if dpdk_bin.is_some() && tsc_mhz <= 0.0 {
        return Err(LpmBenchError::NoTsc);
    }
    // Only DPDK needs files; a directory made for them goes again afterwards.
    let made_workdir = dpdk_bin.is_some() && !cfg.workdir.exists();
    if dpdk_bin.is_some() {
        std::fs::create_dir_all(&cfg.workdir).map_err(|e| io_error(&cfg.workdir, "creating", e))?;
    }

    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(id) = cfg.cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                    return Err(LpmBenchError::Pin(id));
                }
            }
            measure::run_pinned(cfg, dpdk_bin, tsc_mhz)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    if made_workdir {
        let _ = std::fs::remove_dir(&cfg.workdir);
    }
    outcome
}

fn io_error(path: &Path, doing: &str, source: io::Error) -> LpmBenchError {
    LpmBenchError::Io {
        what: format!("{doing} {}", path.display()),
        source,
    }
}
