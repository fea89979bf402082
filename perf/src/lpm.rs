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
//!   touched, through [`Ipv4Lpm::build_in`]); the notes say how much landed there, and
//!   `_batch_4k_pages` shows what the page size is worth.
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

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::hint::black_box;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use weir_dataplane::route::naive::{NaiveTrie4, NaiveTrie6};
use weir_dataplane::route::v4::DEFAULT_TBL8_GROUPS_LIMIT;
use weir_dataplane::route::{Ipv4Lpm, Ipv6Lpm, LpmError, MISS};

use crate::dpdk::{tail, HugepageReservation};
use crate::report::{count_label, median_min_max, BenchResult, Machine};
use crate::rng::{shuffle, SplitMix64};

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
            run_pinned(cfg, dpdk_bin, tsc_mhz)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    if made_workdir {
        let _ = std::fs::remove_dir(&cfg.workdir);
    }
    outcome
}

/// Routes with `dpdk-test-fib`'s default depth distribution (`-d 0:0`): for each length
/// 1..=32 in turn, an equal share of the routes not yet placed, capped at the 2^len
/// prefixes of that length, spread evenly over the address space. Next hops are 21-bit,
/// as `dpdk-test-fib` draws them. Sorted by length, then address.
pub fn v4_routes(routes: usize, seed: u64) -> Vec<(Ipv4Addr, u8, u32)> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(routes);
    for (depth, &count) in dpdk_depth_counts(routes, 32).iter().enumerate().skip(1) {
        let step = (1u64 << depth) as f64 / count as f64;
        let mut edge = 0.0f64;
        for _ in 0..count {
            let (lo, hi) = (edge as u64, (edge + step) as u64);
            let prefix = if hi > lo {
                lo + rng.next_u64() % (hi - lo)
            } else {
                lo
            };
            let addr = (prefix << (32 - depth)) as u32;
            out.push((
                Ipv4Addr::from(addr),
                depth as u8,
                (rng.next_u64() & NEXT_HOP_MASK) as u32,
            ));
            edge += step;
        }
    }
    out
}

/// `count` lookup addresses (host order): address `i` lies under route `i mod routes.len()`
/// with random host bits.
///
/// # Panics
/// If `routes` is empty.
pub fn v4_lookups(routes: &[(Ipv4Addr, u8, u32)], count: usize, seed: u64) -> Vec<u32> {
    assert!(!routes.is_empty(), "lookups need at least one route");
    let mut rng = SplitMix64(seed);
    (0..count)
        .map(|i| {
            let (prefix, len, _) = routes[i % routes.len()];
            let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            u32::from(prefix) | (rng.next_u64() as u32 & host)
        })
        .collect()
}

/// IPv6 routes shaped like a large cluster's table: 20% /48, 70% /64 (half of them inside
/// one of the /48s), 10% /128 (each inside one of the /64s), all under 2000::/3, no
/// duplicates, 21-bit next hops. Sorted by length.
pub fn v6_routes(routes: usize, seed: u64) -> Vec<(Ipv6Addr, u8, u32)> {
    let mut rng = SplitMix64(seed);
    let n48 = routes * 20 / 100;
    let n64 = routes * 70 / 100;
    let n128 = routes - n48 - n64;
    let global = |rng: &mut SplitMix64| (1u128 << 125) | (rng.next_u128() >> 3);
    let mut seen = HashSet::new();
    let mut out: Vec<(Ipv6Addr, u8, u32)> = Vec::with_capacity(routes);
    let mut add = |out: &mut Vec<_>, rng: &mut SplitMix64, addr: u128, len: u8| {
        let addr = addr & mask6(len);
        if seen.insert((addr, len)) {
            out.push((
                Ipv6Addr::from(addr),
                len,
                (rng.next_u64() & NEXT_HOP_MASK) as u32,
            ));
        }
    };
    while out.len() < n48 {
        let a = global(&mut rng);
        add(&mut out, &mut rng, a, 48);
    }
    while out.len() < n48 + n64 {
        let a = if n48 > 0 && rng.next_u64() & 1 == 0 {
            let parent = u128::from(out[(rng.next_u64() % n48 as u64) as usize].0);
            parent | (u128::from(rng.next_u64() as u16) << 64)
        } else {
            global(&mut rng)
        };
        add(&mut out, &mut rng, a, 64);
    }
    while out.len() < n48 + n64 + n128 {
        let a = if n64 > 0 {
            u128::from(out[n48 + (rng.next_u64() % n64 as u64) as usize].0)
                | u128::from(rng.next_u64())
        } else {
            global(&mut rng)
        };
        add(&mut out, &mut rng, a, 128);
    }
    out
}

/// `count` lookup addresses (host order): address `i` lies under route `i mod routes.len()`
/// with random host bits.
///
/// # Panics
/// If `routes` is empty.
pub fn v6_lookups(routes: &[(Ipv6Addr, u8, u32)], count: usize, seed: u64) -> Vec<u128> {
    assert!(!routes.is_empty(), "lookups need at least one route");
    let mut rng = SplitMix64(seed);
    (0..count)
        .map(|i| {
            let (prefix, len, _) = routes[i % routes.len()];
            u128::from(prefix) | (rng.next_u128() & !mask6(len))
        })
        .collect()
}

/// The number of routes per length 0..=`max_depth` that `dpdk-test-fib -n routes -d 0:0`
/// generates (`complete_distrib` in DPDK's `app/test-fib/main.c`).
pub fn dpdk_depth_counts(routes: usize, max_depth: u8) -> Vec<usize> {
    let mut counts = vec![0usize; usize::from(max_depth) + 1];
    let mut placed = 0usize;
    // Length 0 is configured (to zero routes); lengths 1.. are filled in turn, each with
    // an equal share of what is left for it and the lengths after it.
    for (depth, count) in counts.iter_mut().enumerate().skip(1) {
        let left = (routes - placed) / (usize::from(max_depth) + 1 - depth);
        *count = left.min(
            1usize
                .checked_shl(depth.min(63) as u32)
                .unwrap_or(usize::MAX),
        );
        placed += *count;
    }
    counts
}

/// Writes IPv4 routes in `dpdk-test-fib`'s format: `a.b.c.d/len nexthop` per line.
///
/// # Errors
/// If the file cannot be written.
pub fn write_routes_v4(path: &Path, routes: &[(Ipv4Addr, u8, u32)]) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for (addr, len, value) in routes {
        writeln!(w, "{addr}/{len} {value}")?;
    }
    w.flush()
}

/// Writes IPv6 routes in `dpdk-test-fib`'s format: eight 4-digit hex groups, `/len
/// nexthop`, per line.
///
/// # Errors
/// If the file cannot be written.
pub fn write_routes_v6(path: &Path, routes: &[(Ipv6Addr, u8, u32)]) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut line = Vec::with_capacity(64);
    for (addr, len, value) in routes {
        line.clear();
        push_ipv6_full(&mut line, u128::from(*addr));
        w.write_all(&line)?;
        writeln!(w, "/{len} {value}")?;
    }
    w.flush()
}

/// Writes IPv4 addresses (host order), one dotted quad per line.
///
/// # Errors
/// If the file cannot be written.
pub fn write_ips_v4(path: &Path, addrs: &[u32]) -> io::Result<()> {
    write_lines(path, addrs, |buf, &a| {
        for (i, octet) in a.to_be_bytes().into_iter().enumerate() {
            if i > 0 {
                buf.push(b'.');
            }
            push_decimal(buf, octet);
        }
    })
}

/// Writes IPv6 addresses (host order), one per line, in `dpdk-test-fib`'s full form.
///
/// # Errors
/// If the file cannot be written.
pub fn write_ips_v6(path: &Path, addrs: &[u128]) -> io::Result<()> {
    write_lines(path, addrs, |buf, &a| push_ipv6_full(buf, a))
}

/// Reads a route file in `dpdk-test-fib`'s format.
///
/// # Errors
/// If the file cannot be read or a line is not `prefix/len nexthop`.
pub fn read_routes_v4(path: &Path) -> io::Result<Vec<(Ipv4Addr, u8, u32)>> {
    read_routes(path)
}

/// Reads an IPv6 route file in `dpdk-test-fib`'s format (any IPv6 text form).
///
/// # Errors
/// If the file cannot be read or a line is not `prefix/len nexthop`.
pub fn read_routes_v6(path: &Path) -> io::Result<Vec<(Ipv6Addr, u8, u32)>> {
    read_routes(path)
}

/// Reads one IPv4 address per line, as host-order `u32`s.
///
/// # Errors
/// If the file cannot be read or a line is not an address.
pub fn read_ips_v4(path: &Path) -> io::Result<Vec<u32>> {
    read_lines(path, |s| s.parse::<Ipv4Addr>().ok().map(u32::from))
}

/// Reads one IPv6 address per line, as host-order `u128`s.
///
/// # Errors
/// If the file cannot be read or a line is not an address.
pub fn read_ips_v6(path: &Path) -> io::Result<Vec<u128>> {
    read_lines(path, |s| s.parse::<Ipv6Addr>().ok().map(u128::from))
}

/// The `AVG FIB lookup` figure (TSC cycles per lookup) from `dpdk-test-fib`'s output.
pub fn parse_avg_fib_lookup(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("AVG FIB lookup"))
        .and_then(|rest| rest.trim().parse().ok())
}

// ----------------------------------------------------------------------------------------

/// `dpdk-test-fib` draws next hops below 2^21 (its limit for 4-byte entries and LPM6).
const NEXT_HOP_MASK: u64 = (1 << 21) - 1;
/// Addresses per `lookup_batch` call: `dpdk-test-fib`'s burst.
const BURST: usize = 64;
/// Addresses the naive trie looks up per pass.
const NAIVE_LOOKUPS: usize = 1_000_000;
/// Addresses looked up, untimed, before each timed pass.
const WARM_UP_LOOKUPS: usize = 1_000_000;
/// How long one `dpdk-test-fib` run may take.
const DPDK_TIMEOUT: Duration = Duration::from_secs(300);
const V4_VARIANTS: [&str; 4] = ["s1", "s2", "s3", "v"];
const V6_VARIANTS: [&str; 2] = ["s", "v"];
const SEED_V4: u64 = 0x5745_4952_0004;
const SEED_V6: u64 = 0x5745_4952_0006;

fn run_pinned(
    cfg: &LpmBenchConfig,
    dpdk_bin: Option<PathBuf>,
    tsc_mhz: f64,
) -> Result<(Vec<BenchResult>, Vec<String>), LpmBenchError> {
    let mut notes = vec![match cfg.cpu {
        Some(cpu) => format!("measuring thread and dpdk-test-fib pinned to CPU {cpu}"),
        None => "not pinned (dpdk-test-fib on CPU 0)".to_string(),
    }];
    let label = count_label(cfg.routes);

    let routes4 = v4_routes(cfg.routes, SEED_V4);
    let addrs4 = v4_lookups(&routes4, cfg.lookups, SEED_V4 + 1);
    let mut addrs4_random = addrs4.clone();
    shuffle(&mut addrs4_random, SEED_V4 + 2);
    let routes6 = v6_routes(cfg.routes, SEED_V6);
    let addrs6 = v6_lookups(&routes6, cfg.lookups, SEED_V6 + 1);

    let huge_before = anon_huge_pages_kb();
    let started = Instant::now();
    let lpm4 = Ipv4Lpm::build_in(&routes4, DEFAULT_TBL8_GROUPS_LIMIT, |n| {
        storage(n, PageSize::Huge)
    })?;
    let built4 = started.elapsed();
    let huge_kb = anon_huge_pages_kb().saturating_sub(huge_before);
    let lpm4_4k = Ipv4Lpm::build_in(&routes4, DEFAULT_TBL8_GROUPS_LIMIT, |n| {
        storage(n, PageSize::Small)
    })?;
    let started = Instant::now();
    let lpm6 = Ipv6Lpm::build(&routes6)?;
    let built6 = started.elapsed();
    let mut naive4 = NaiveTrie4::new();
    for &(p, len, v) in &routes4 {
        naive4.insert(p, len, v);
    }
    let mut naive6 = NaiveTrie6::new();
    for &(p, len, v) in &routes6 {
        naive6.insert(p, len, v);
    }
    notes.push(format!(
        "IPv4: {} routes (dpdk-test-fib's default depth distribution), {} lookups in route \
         order and the same addresses shuffled (*_random_order); weir table built in \
         {:.0} ms, {} tbl8 groups, {:.1} MiB",
        routes4.len(),
        addrs4.len(),
        built4.as_secs_f64() * 1e3,
        lpm4.tbl8_groups(),
        mib(lpm4.memory_bytes()),
    ));
    notes.push(format!(
        "weir's IPv4 arrays were advised onto transparent huge pages (MADV_HUGEPAGE, THP \
         mode {}; {:.1} MiB of huge pages appeared while building {:.1} MiB of table); \
         *_4k_pages is the same table advised off them (MADV_NOHUGEPAGE)",
        thp_mode(),
        huge_kb as f64 / 1024.0,
        mib(lpm4.memory_bytes()),
    ));
    notes.push(format!(
        "IPv6: {} routes (20% /48, 70% /64, 10% /128), {} lookups; weir table built in \
         {:.0} ms, {} entries with markers, {} probes at most, {:.1} MiB",
        routes6.len(),
        addrs6.len(),
        built6.as_secs_f64() * 1e3,
        lpm6.entries(),
        lpm6.max_probes(),
        mib(lpm6.memory_bytes()),
    ));

    // Writing DPDK's input files first lets the verification passes below warm the
    // tables up again before the first timed round.
    let dpdk = match dpdk_bin {
        Some(bin) => {
            let inputs = DpdkInputs {
                routes4: &routes4,
                addrs4: &addrs4,
                addrs4_random: &addrs4_random,
                routes6: &routes6,
                addrs6: &addrs6,
                tbl8_groups4: lpm4.tbl8_groups(),
            };
            Some(Dpdk::prepare(bin, cfg, tsc_mhz, &inputs, &mut notes)?)
        }
        None => None,
    };

    let naive_n = addrs4.len().min(NAIVE_LOOKUPS);
    let show4 = |a: &u32| Ipv4Addr::from(*a).to_string();
    let check4 = verify(
        "IPv4",
        &addrs4,
        naive_n,
        |a, o| lpm4.lookup_batch(a, o),
        |a| naive4.lookup(*a),
        show4,
    )?;
    let check4r = verify(
        "IPv4 (random order)",
        &addrs4_random,
        naive_n,
        |a, o| lpm4.lookup_batch(a, o),
        |a| naive4.lookup(*a),
        show4,
    )?;
    let check4k = verify(
        "IPv4 (4 KiB pages)",
        &addrs4,
        naive_n,
        |a, o| lpm4_4k.lookup_batch(a, o),
        |a| naive4.lookup(*a),
        show4,
    )?;
    let show6 = |a: &u128| Ipv6Addr::from(*a).to_string();
    let check6 = verify(
        "IPv6",
        &addrs6,
        naive_n,
        |a, o| lpm6.lookup_batch(a, o),
        |a| naive6.lookup(*a),
        show6,
    )?;
    notes.push(format!(
        "every weir answer was checked against the naive trie on the first {naive_n} \
         addresses; each timed pass reproduced the same checksum"
    ));

    let mut v4 = Series::new(["batch", "single", "batch_4k_pages", "naive_trie"]);
    let mut v4r = Series::new(["batch_random_order", "single_random_order"]);
    let mut v6 = Series::new(["batch", "single", "naive_trie"]);
    let (mut dpdk4, mut dpdk4r, mut dpdk6) = (Variants::new(), Variants::new(), Variants::new());
    for _ in 0..cfg.runs {
        let (ns, sum) = time_batch(&addrs4, |a, o| lpm4.lookup_batch(a, o));
        v4.push("batch", check_sum("IPv4 batch", sum, check4.full, ns)?);
        let (ns, sum) = time_each(&addrs4, |a| lpm4.lookup(a));
        v4.push("single", check_sum("IPv4 single", sum, check4.full, ns)?);
        let (ns, sum) = time_batch(&addrs4, |a, o| lpm4_4k.lookup_batch(a, o));
        v4.push(
            "batch_4k_pages",
            check_sum("IPv4 4k", sum, check4k.full, ns)?,
        );
        let (ns, sum) = time_each(&addrs4[..naive_n], |a| naive4.lookup(a));
        v4.push(
            "naive_trie",
            check_sum("IPv4 naive trie", sum, check4.head, ns)?,
        );
        if let Some(d) = &dpdk {
            d.run_variants(&d.v4, &V4_VARIANTS, &mut dpdk4)?;
        }

        let (ns, sum) = time_batch(&addrs4_random, |a, o| lpm4.lookup_batch(a, o));
        v4r.push(
            "batch_random_order",
            check_sum("IPv4 batch", sum, check4r.full, ns)?,
        );
        let (ns, sum) = time_each(&addrs4_random, |a| lpm4.lookup(a));
        v4r.push(
            "single_random_order",
            check_sum("IPv4 single", sum, check4r.full, ns)?,
        );
        if let Some(d) = &dpdk {
            d.run_variants(&d.v4_random, &V4_VARIANTS, &mut dpdk4r)?;
        }

        let (ns, sum) = time_batch(&addrs6, |a, o| lpm6.lookup_batch(a, o));
        v6.push("batch", check_sum("IPv6 batch", sum, check6.full, ns)?);
        let (ns, sum) = time_each(&addrs6, |a| lpm6.lookup(a));
        v6.push("single", check_sum("IPv6 single", sum, check6.full, ns)?);
        let (ns, sum) = time_each(&addrs6[..naive_n], |a| naive6.lookup(a));
        v6.push(
            "naive_trie",
            check_sum("IPv6 naive trie", sum, check6.head, ns)?,
        );
        if let Some(d) = &dpdk {
            d.run_variants(&d.v6, &V6_VARIANTS, &mut dpdk6)?;
        }
    }
    if let Some(d) = dpdk {
        notes.extend(d.finish());
    }

    let mut results = Vec::new();
    // Without DPDK, the naive trie (in route order) anchors its family.
    let groups = [
        ("v4", &v4, &dpdk4, "dir24_8", "", &v4),
        ("v4", &v4r, &dpdk4r, "dir24_8", ", random order", &v4),
        ("v6", &v6, &dpdk6, "trie", "", &v6),
    ];
    for (family, series, variants, structure, order, naive) in groups {
        let anchor = match best_variant(variants) {
            Some((variant, ns)) => {
                notes.push(variant_note(family, structure, order, variants, tsc_mhz));
                Some((
                    format!("dpdk-test-fib {structure} {variant}{order}"),
                    ns.clone(),
                ))
            }
            None => naive
                .get("naive_trie")
                .map(|ns| ("naive binary trie".to_string(), ns)),
        };
        for (kind, ns) in &series.0 {
            let name = format!("lpm_{family}_{label}_{kind}");
            let anchor = anchor
                .as_ref()
                .filter(|(a, _)| *kind != "naive_trie" || a != "naive binary trie");
            results.extend(rate_and_time(&name, ns, anchor));
        }
    }
    Ok((results, notes))
}

/// ns per lookup, per `dpdk-test-fib` lookup variant.
type Variants = BTreeMap<&'static str, Vec<f64>>;

/// ns-per-lookup samples of each measured kind, in report order.
struct Series(Vec<(&'static str, Vec<f64>)>);

impl Series {
    fn new<const N: usize>(kinds: [&'static str; N]) -> Self {
        Series(kinds.into_iter().map(|k| (k, vec![])).collect())
    }

    fn push(&mut self, kind: &str, ns: f64) {
        if let Some((_, v)) = self.0.iter_mut().find(|(k, _)| *k == kind) {
            v.push(ns);
        }
    }

    fn get(&self, kind: &str) -> Option<Vec<f64>> {
        self.0
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
    }
}

/// Which pages [`storage`] asks the kernel for.
#[derive(Clone, Copy)]
enum PageSize {
    /// Transparent huge pages (2 MiB), as DPDK's hugepages.
    Huge,
    /// Ordinary 4 KiB pages, whatever the allocator or the THP mode would choose.
    Small,
}

/// Zeroed storage for weir's IPv4 arrays, advised onto huge or small pages before
/// anything touches it, so that the kernel backs it accordingly as it faults in.
fn storage(entries: usize, pages: PageSize) -> Box<[u32]> {
    let storage = vec![0u32; entries].into_boxed_slice();
    advise_pages(&storage, pages);
    storage
}

#[cfg(target_os = "linux")]
fn advise_pages(storage: &[u32], pages: PageSize) {
    const PAGE: usize = 4096;
    let start = storage.as_ptr() as usize & !(PAGE - 1);
    let end = (storage.as_ptr() as usize + std::mem::size_of_val(storage)).next_multiple_of(PAGE);
    let advice = match pages {
        PageSize::Huge => libc::MADV_HUGEPAGE,
        PageSize::Small => libc::MADV_NOHUGEPAGE,
    };
    // SAFETY: [start, end) is the page-rounded span of `storage`, a live allocation, so
    // every page in it is mapped. MADV_HUGEPAGE and MADV_NOHUGEPAGE only tell the kernel
    // how to back those pages; they change neither their contents nor their validity. A
    // failure (THP disabled) leaves ordinary pages, which the notes report.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
}

#[cfg(not(target_os = "linux"))]
fn advise_pages(_: &[u32], _: PageSize) {}

/// This process's anonymous memory on transparent huge pages, in KiB.
fn anon_huge_pages_kb() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("AnonHugePages:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The selected transparent huge page mode ("always", "madvise", "never").
fn thp_mode() -> String {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| Some(s.split_once('[')?.1.split_once(']')?.0.to_string()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Reference checksums: over all addresses, and over the first `naive_n`.
struct Checksums {
    full: u64,
    head: u64,
}

/// Compares weir's batch answers with the naive trie's on the first `naive_n` addresses
/// and returns the reference checksums the timed passes must reproduce.
fn verify<A>(
    family: &str,
    addrs: &[A],
    naive_n: usize,
    batch: impl Fn(&[A], &mut [u32]),
    naive: impl Fn(&A) -> Option<u32>,
    show: impl Fn(&A) -> String,
) -> Result<Checksums, LpmBenchError> {
    let mut out = vec![0u32; addrs.len()];
    batch(addrs, &mut out);
    for (a, &got) in addrs[..naive_n].iter().zip(&out) {
        let want = naive(a).unwrap_or(MISS);
        if got != want {
            return Err(LpmBenchError::WrongAnswer(format!(
                "{family} {}: weir says {got:#x}, the naive trie {want:#x}",
                show(a)
            )));
        }
    }
    if let Some(i) = out.iter().position(|&v| v == MISS) {
        return Err(LpmBenchError::WrongAnswer(format!(
            "{family} {} lies under a generated route but weir finds none",
            show(&addrs[i])
        )));
    }
    Ok(Checksums {
        full: checksum(&out),
        head: checksum(&out[..naive_n]),
    })
}

fn checksum(values: &[u32]) -> u64 {
    values
        .iter()
        .fold(0u64, |s, &v| s.wrapping_add(u64::from(v)))
}

/// `ns` if a timed pass reproduced the checked checksum.
fn check_sum(what: &str, got: u64, want: u64, ns: f64) -> Result<f64, LpmBenchError> {
    if got == want {
        Ok(ns)
    } else {
        Err(LpmBenchError::WrongAnswer(format!(
            "the timed {what} pass summed to {got}, the checked answers to {want}"
        )))
    }
}

/// ns per lookup and checksum of `lookup_batch` over `addrs` in bursts of [`BURST`],
/// after an untimed warm-up.
fn time_batch<A>(addrs: &[A], batch: impl Fn(&[A], &mut [u32])) -> (f64, u64) {
    let pass = |addrs: &[A]| {
        let mut out = [0u32; BURST];
        let mut sum = 0u64;
        for chunk in addrs.chunks(BURST) {
            let out = &mut out[..chunk.len()];
            batch(black_box(chunk), out);
            sum = out.iter().fold(sum, |s, &v| s.wrapping_add(u64::from(v)));
        }
        black_box(sum)
    };
    pass(warm_up(addrs));
    let started = Instant::now();
    let sum = pass(addrs);
    (
        started.elapsed().as_secs_f64() * 1e9 / addrs.len() as f64,
        sum,
    )
}

/// ns per lookup and checksum of one `lookup` call per address, after an untimed
/// warm-up.
fn time_each<A: Copy>(addrs: &[A], lookup: impl Fn(A) -> Option<u32>) -> (f64, u64) {
    let pass = |addrs: &[A]| {
        let sum = addrs.iter().fold(0u64, |s, &a| {
            s.wrapping_add(u64::from(lookup(black_box(a)).unwrap_or(MISS)))
        });
        black_box(sum)
    };
    pass(warm_up(addrs));
    let started = Instant::now();
    let sum = pass(addrs);
    (
        started.elapsed().as_secs_f64() * 1e9 / addrs.len() as f64,
        sum,
    )
}

/// The addresses a warm-up pass looks up: enough to touch every route several times, so
/// that weir's tables start a timed pass in cache, as DPDK's do after `dpdk-test-fib`
/// has just built them. Without it the first pass of a round, coming after the other
/// tables' passes, measured 10% slower.
fn warm_up<A>(addrs: &[A]) -> &[A] {
    &addrs[..addrs.len().min(WARM_UP_LOOKUPS)]
}

/// A result in lookups/s and one in ns/lookup, each with the anchor in the same unit.
fn rate_and_time(name: &str, ns: &[f64], anchor: Option<&(String, Vec<f64>)>) -> [BenchResult; 2] {
    let rate = |v: &[f64]| v.iter().map(|ns| 1e9 / ns).collect::<Vec<_>>();
    let mut per_s = BenchResult::from_samples(name, "lookups/s", rate(ns));
    let mut per_lookup = BenchResult::from_samples(format!("{name}_ns"), "ns/lookup", ns.to_vec());
    if let Some((anchor, anchor_ns)) = anchor {
        per_s = per_s.with_anchor(anchor.clone(), median_min_max(&rate(anchor_ns)).0);
        per_lookup = per_lookup.with_anchor(anchor.clone(), median_min_max(anchor_ns).0);
    }
    [per_s, per_lookup]
}

/// The lookup variant with the lowest median ns per lookup.
fn best_variant(variants: &Variants) -> Option<(&'static str, &Vec<f64>)> {
    variants
        .iter()
        .map(|(&v, ns)| (v, ns, median_min_max(ns).0))
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(v, ns, _)| (v, ns))
}

fn variant_note(
    family: &str,
    structure: &str,
    order: &str,
    variants: &Variants,
    tsc_mhz: f64,
) -> String {
    let best = best_variant(variants).map_or("", |b| b.0);
    let listed: Vec<String> = variants
        .iter()
        .map(|(v, ns)| {
            let (med, min, max) = median_min_max(ns);
            let cycles = |ns: f64| ns * tsc_mhz / 1e3;
            format!(
                "{v}: {:.1} cycles = {med:.2} ns [{min:.2} - {max:.2}]{}",
                cycles(med),
                if *v == best { " (anchor)" } else { "" }
            )
        })
        .collect();
    format!(
        "dpdk-test-fib {family} {structure} lookup variants{order}: {}",
        listed.join("; ")
    )
}

/// What `dpdk-test-fib` looks up: the same routes and addresses as weir.
struct DpdkInputs<'a> {
    routes4: &'a [(Ipv4Addr, u8, u32)],
    addrs4: &'a [u32],
    addrs4_random: &'a [u32],
    routes6: &'a [(Ipv6Addr, u8, u32)],
    addrs6: &'a [u128],
    /// weir's count, which DPDK's DIR-24-8 needs too.
    tbl8_groups4: usize,
}

/// The `dpdk-test-fib` anchor: its input files, its hugepages, its runs.
struct Dpdk {
    bin: PathBuf,
    cpu: usize,
    tsc_mhz: f64,
    no_huge: bool,
    file_prefix: String,
    v4: DpdkCase,
    v4_random: DpdkCase,
    v6: DpdkCase,
    files: Vec<PathBuf>,
    output: PathBuf,
    /// Puts `nr_hugepages` back when the benchmark ends, however it ends.
    _hugepages: Option<HugepageReservation>,
    unsupported: std::cell::RefCell<Vec<String>>,
}

/// One `dpdk-test-fib` configuration: EAL memory and application arguments.
struct DpdkCase {
    structure: &'static str,
    mem_mb: usize,
    args: Vec<String>,
}

impl Dpdk {
    fn prepare(
        bin: PathBuf,
        cfg: &LpmBenchConfig,
        tsc_mhz: f64,
        inputs: &DpdkInputs<'_>,
        notes: &mut Vec<String>,
    ) -> Result<Self, LpmBenchError> {
        let path = |name: &str| cfg.workdir.join(name);
        let (r4, i4, i4r) = (
            path("routes4.txt"),
            path("ips4.txt"),
            path("ips4-random.txt"),
        );
        let (r6, i6) = (path("routes6.txt"), path("ips6.txt"));
        let files = vec![r4.clone(), i4.clone(), i4r.clone(), r6.clone(), i6.clone()];
        // Removes the files however this function ends.
        let mut cleanup = WorkFiles(files);
        write_routes_v4(&r4, inputs.routes4).map_err(|e| io_error(&r4, "writing", e))?;
        write_ips_v4(&i4, inputs.addrs4).map_err(|e| io_error(&i4, "writing", e))?;
        write_ips_v4(&i4r, inputs.addrs4_random).map_err(|e| io_error(&i4r, "writing", e))?;
        write_routes_v6(&r6, inputs.routes6).map_err(|e| io_error(&r6, "writing", e))?;
        write_ips_v6(&i6, inputs.addrs6).map_err(|e| io_error(&i6, "writing", e))?;

        // tbl8 groups: DIR-24-8 needs one per /24 with longer prefixes (as weir's table);
        // the IPv6 trie one per 8 bits beyond /24 of every route at most.
        let groups4 = (inputs.tbl8_groups4 + 1024).max(65_536);
        let groups6 = inputs
            .routes6
            .iter()
            .map(|r| usize::from(r.1.saturating_sub(24)).div_ceil(8))
            .sum::<usize>()
            .max(1_000_000);
        let mem_mb = |groups: usize, lookup_bytes: usize, routes: usize| {
            256 + 64 + groups / 1024 + (lookup_bytes + routes * 64) / (1 << 20)
        };
        let mem4 = mem_mb(groups4, inputs.addrs4.len() * 4, inputs.routes4.len());
        let mem6 = mem_mb(groups6, inputs.addrs6.len() * 16, inputs.routes6.len());
        let case = |v6: bool, routes: &Path, ips: &Path, groups: usize, mem_mb: usize| {
            let mut args: Vec<String> = if v6 { vec!["-6".into()] } else { vec![] };
            args.extend(["-f".into(), routes.display().to_string()]);
            args.extend(["-t".into(), ips.display().to_string()]);
            let structure = if v6 { "trie" } else { "dir" };
            args.extend(["-b", structure, "-e", "4", "-g"].map(String::from));
            args.push(groups.to_string());
            let structure = if v6 { "trie" } else { "dir24_8" };
            DpdkCase {
                structure,
                mem_mb,
                args,
            }
        };

        let (no_huge, reservation) =
            match HugepageReservation::ensure(mem4.max(mem6), "dpdk-test-fib") {
                Ok((reservation, note)) => {
                    notes.extend(note);
                    (false, reservation)
                }
                Err(why) => {
                    notes.push(format!(
                        "dpdk-test-fib ran with --no-huge (4 KiB pages): {why}"
                    ));
                    (true, None)
                }
            };
        Ok(Dpdk {
            bin,
            cpu: cfg.cpu.unwrap_or(0),
            tsc_mhz,
            no_huge,
            file_prefix: format!("weirfib{}", std::process::id()),
            v4: case(false, &r4, &i4, groups4, mem4),
            v4_random: case(false, &r4, &i4r, groups4, mem4),
            v6: case(true, &r6, &i6, groups6, mem6),
            files: std::mem::take(&mut cleanup.0),
            output: path("dpdk-test-fib.out"),
            _hugepages: reservation,
            unsupported: Default::default(),
        })
    }

    /// One run of each of `variants` on `case`, added to `samples`.
    fn run_variants(
        &self,
        case: &DpdkCase,
        variants: &[&'static str],
        samples: &mut Variants,
    ) -> Result<(), LpmBenchError> {
        for &variant in variants {
            if let Some(ns) = self.lookup_ns(case, variant)? {
                samples.entry(variant).or_default().push(ns);
            }
        }
        Ok(())
    }

    /// One run of `variant`; `None` if this CPU or build lacks the variant.
    fn lookup_ns(&self, case: &DpdkCase, variant: &str) -> Result<Option<f64>, LpmBenchError> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-l")
            .arg(self.cpu.to_string())
            .args(["--no-pci", "--file-prefix", &self.file_prefix])
            .arg("--force-max-simd-bitwidth=512")
            .args(["-m".to_string(), case.mem_mb.to_string()]);
        // `--in-memory` finds hugepages without a hugetlbfs mount; `--no-huge` implies
        // legacy memory, which `--in-memory` refuses.
        cmd.arg(if self.no_huge {
            "--no-huge"
        } else {
            "--in-memory"
        });
        cmd.arg("--").args(&case.args).args(["-v", variant]);
        let command = format!("{cmd:?}").replace('"', "");
        let output =
            File::create(&self.output).map_err(|e| io_error(&self.output, "creating", e))?;
        let stderr = output
            .try_clone()
            .map_err(|e| io_error(&self.output, "opening", e))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(stderr)
            .spawn()
            .map_err(|e| LpmBenchError::Io {
                what: format!("starting {command}"),
                source: e,
            })?;
        let deadline = Instant::now() + DPDK_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LpmBenchError::DpdkTimeout {
                        command,
                        secs: DPDK_TIMEOUT.as_secs(),
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LpmBenchError::Io {
                        what: format!("waiting for {command}"),
                        source: e,
                    });
                }
            }
        };
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        if text.contains("Can not init lookup function") {
            let what = format!("{} {variant}", case.structure);
            let mut unsupported = self.unsupported.borrow_mut();
            if !unsupported.contains(&what) {
                unsupported.push(what);
            }
            return Ok(None);
        }
        let tail = tail(&text, 15);
        if !status.success() {
            return Err(LpmBenchError::DpdkFailed {
                command,
                status: status.to_string(),
                tail,
            });
        }
        let cycles =
            parse_avg_fib_lookup(&text).ok_or(LpmBenchError::DpdkOutput { command, tail })?;
        Ok(Some(cycles * 1e3 / self.tsc_mhz))
    }

    /// Notes about the runs; removes the work files and DPDK's runtime directory.
    fn finish(self) -> Vec<String> {
        let unsupported = self.unsupported.borrow();
        let mut notes = vec![];
        if !unsupported.is_empty() {
            notes.push(format!(
                "dpdk-test-fib variants this CPU or build cannot run, skipped: {}",
                unsupported.join(", ")
            ));
        }
        notes
    }
}

/// Files removed on drop.
struct WorkFiles(Vec<PathBuf>);

impl Drop for WorkFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for Dpdk {
    fn drop(&mut self) {
        for f in self.files.iter().chain([&self.output]) {
            let _ = std::fs::remove_file(f);
        }
        let runtime = Path::new("/var/run/dpdk").join(&self.file_prefix);
        if runtime.is_dir() {
            let _ = std::fs::remove_dir_all(runtime);
        }
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn io_error(path: &Path, doing: &str, source: io::Error) -> LpmBenchError {
    LpmBenchError::Io {
        what: format!("{doing} {}", path.display()),
        source,
    }
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn write_lines<T>(path: &Path, items: &[T], format: impl Fn(&mut Vec<u8>, &T)) -> io::Result<()> {
    let mut file = File::create(path)?;
    let mut buf = Vec::with_capacity(1 << 20);
    for item in items {
        format(&mut buf, item);
        buf.push(b'\n');
        if buf.len() > (1 << 20) - 64 {
            file.write_all(&buf)?;
            buf.clear();
        }
    }
    file.write_all(&buf)
}

fn push_decimal(buf: &mut Vec<u8>, v: u8) {
    if v >= 100 {
        buf.push(b'0' + v / 100);
    }
    if v >= 10 {
        buf.push(b'0' + (v / 10) % 10);
    }
    buf.push(b'0' + v % 10);
}

/// `xxxx:xxxx:...:xxxx`, as `dpdk-test-fib` prints IPv6 addresses.
fn push_ipv6_full(buf: &mut Vec<u8>, a: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for group in 0..8 {
        if group > 0 {
            buf.push(b':');
        }
        let g = (a >> (112 - 16 * group)) as u16;
        buf.extend([12, 8, 4, 0].map(|s| HEX[usize::from((g >> s) & 0xf)]));
    }
}

fn read_routes<A: FromStr>(path: &Path) -> io::Result<Vec<(A, u8, u32)>> {
    read_lines(path, |line| {
        let mut words = line.split_whitespace();
        let (prefix, len) = words.next()?.split_once('/')?;
        let value = words.next()?.parse().ok()?;
        Some((prefix.parse().ok()?, len.parse().ok()?, value))
    })
}

fn read_lines<T>(path: &Path, parse: impl Fn(&str) -> Option<T>) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    for (i, line) in BufReader::new(File::open(path)?).lines().enumerate() {
        let line = line?;
        let item = parse(line.trim()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{}: cannot parse {line:?}", path.display(), i + 1),
            )
        })?;
        out.push(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-lpm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn depth_counts_match_dpdk_test_fib() {
        // `dpdk-test-fib -n 100000 -d 0:0 -w routes.txt` writes exactly these per length.
        let c = dpdk_depth_counts(100_000, 32);
        assert_eq!(c[0], 0);
        assert_eq!(
            &c[1..=12],
            &[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        );
        assert_eq!(c[13], 4590);
        assert_eq!(c[24], 4591);
        assert_eq!(c[32], 4591);
        assert_eq!(c.iter().sum::<usize>(), 100_000);
        // And these for 2000 (the captured output below lists them).
        let c = dpdk_depth_counts(2000, 32);
        assert_eq!((c[6], c[7], c[30], c[31], c[32]), (64, 72, 72, 73, 73));
        assert_eq!(c.iter().sum::<usize>(), 2000);
    }

    #[test]
    fn generated_routes_are_valid_distinct_and_deterministic() {
        let r4 = v4_routes(20_000, 1);
        assert_eq!(r4.len(), 20_000);
        assert_eq!(r4, v4_routes(20_000, 1));
        assert!(Ipv4Lpm::build(&r4).is_ok());
        let r6 = v6_routes(10_000, 2);
        assert_eq!(r6.len(), 10_000);
        let lens = |l: u8| r6.iter().filter(|r| r.1 == l).count();
        assert_eq!((lens(48), lens(64), lens(128)), (2000, 7000, 1000));
        let lpm6 = Ipv6Lpm::build(&r6).unwrap();
        for a in v6_lookups(&r6, 1000, 3) {
            assert!(lpm6.lookup(a).is_some());
        }
    }

    #[test]
    fn route_and_address_files_round_trip() {
        let r4 = v4_routes(3000, 4);
        let a4 = v4_lookups(&r4, 500, 5);
        let r6 = v6_routes(300, 6);
        let a6 = v6_lookups(&r6, 500, 7);
        let (p4, q4, p6, q6) = (
            scratch("r4.txt"),
            scratch("i4.txt"),
            scratch("r6.txt"),
            scratch("i6.txt"),
        );
        write_routes_v4(&p4, &r4).unwrap();
        write_ips_v4(&q4, &a4).unwrap();
        write_routes_v6(&p6, &r6).unwrap();
        write_ips_v6(&q6, &a6).unwrap();
        assert_eq!(read_routes_v4(&p4).unwrap(), r4);
        assert_eq!(read_ips_v4(&q4).unwrap(), a4);
        assert_eq!(read_routes_v6(&p6).unwrap(), r6);
        assert_eq!(read_ips_v6(&q6).unwrap(), a6);
        // The exact text dpdk-test-fib writes.
        let text = std::fs::read_to_string(&p4).unwrap();
        assert_eq!(
            text.lines().next().unwrap().split(' ').next().unwrap(),
            "0.0.0.0/1"
        );
        write_routes_v6(&p6, &[("2b50:495c:38::".parse().unwrap(), 48, 1043178)]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p6).unwrap(),
            "2b50:495c:0038:0000:0000:0000:0000:0000/48 1043178\n"
        );
        std::fs::write(&p4, "10.0.0.0/8 1\nnot a route\n").unwrap();
        let e = read_routes_v4(&p4).unwrap_err();
        assert!(
            e.to_string().contains(":2: cannot parse \"not a route\""),
            "{e}"
        );
        for p in [&p4, &q4, &p6, &q6] {
            std::fs::remove_file(p).unwrap();
        }
        let _ = std::fs::remove_dir(p4.parent().unwrap());
    }

    #[test]
    fn parses_a_captured_dpdk_test_fib_output() {
        assert_eq!(parse_avg_fib_lookup(CAPTURED_OUTPUT), Some(28.9));
        assert_eq!(
            parse_avg_fib_lookup("EAL: Error - exiting with code: -22\n"),
            None
        );
    }

    #[test]
    fn labels_and_ratios() {
        assert_eq!(count_label(100_000), "100k");
        assert_eq!(count_label(1500), "1500");
        let [rate, time] = rate_and_time(
            "x",
            &[10.0, 20.0, 10.0],
            Some(&("a".to_string(), vec![20.0; 3])),
        );
        assert_eq!(rate.unit, "lookups/s");
        assert_eq!(rate.value, 1e8);
        assert_eq!(rate.ratio, Some(2.0));
        assert_eq!(time.name, "x_ns");
        assert_eq!(time.ratio, Some(2.0));
    }

    /// `dpdk-test-fib --no-pci --no-huge -m 512 -- -f routes.txt -t ips.txt -b dir -e 4
    /// -g 65536 -v s3` on 2000 routes it generated itself, as captured.
    const CAPTURED_OUTPUT: &str = "\
EAL: Detected CPU lcores: 2
EAL: Detected NUMA nodes: 1
EAL: Detected shared linkage of DPDK
EAL: Multi-process socket /var/run/dpdk/weirfibcap/mp_socket
EAL: Physical addresses are unavailable, selecting IOVA as VA mode.
EAL: Selected IOVA mode 'VA'
TELEMETRY: No legacy callbacks, legacy socket not created
Routes total: 2000
Routes distribution:
depth /1:2	depth /2:4	depth /3:8	depth /4:16
depth /5:32	depth /6:64	depth /7:72	depth /8:72
depth /9:72	depth /10:72	depth /11:72	depth /12:72
depth /13:72	depth /14:72	depth /15:72	depth /16:72
depth /17:72	depth /18:72	depth /19:72	depth /20:72
depth /21:72	depth /22:72	depth /23:72	depth /24:72
depth /25:72	depth /26:72	depth /27:72	depth /28:72
depth /29:72	depth /30:72	depth /31:73	depth /32:73
Lookup tuples: 10000
Configured ratios of random ips for lookup: 0
Random lookup ips: 0
AVG FIB add 533851
AVG FIB add 24980
AVG FIB add 4239
AVG FIB add 1167
AVG FIB add 637
AVG FIB add 481
AVG FIB add 464
AVG FIB add 2354
AVG FIB add 2123
AVG FIB add 2116
AVG FIB lookup 28.9
AVG FIB delete 306532
AVG FIB delete 24185
AVG FIB delete 5211
AVG FIB delete 1370
AVG FIB delete 652
AVG FIB delete 1030
AVG FIB delete 456
AVG FIB delete 865
AVG FIB delete 809
AVG FIB delete 715
";
}
