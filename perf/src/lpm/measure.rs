//! The timed rounds: weir's tables, the naive trie and `dpdk-test-fib`, interleaved, and
//! the results and notes made from them.
//!
//! Before anything is timed, weir's answers are checked against the naive trie's; every
//! timed pass then has to reproduce the checked checksum, so a figure never comes from
//! wrong answers. This is also where weir's IPv4 arrays get their pages (transparent huge
//! pages, or 4 KiB pages for the comparison), since the page size is part of what the
//! figures measure.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Instant;

use weir_dataplane::route::naive::{NaiveTrie4, NaiveTrie6};
use weir_dataplane::route::v4::DEFAULT_TBL8_GROUPS_LIMIT;
use weir_dataplane::route::{Ipv4Lpm, Ipv6Lpm, MISS};

use super::fib::{Dpdk, DpdkInputs, Variants};
use super::generate::{v4_lookups, v4_routes, v6_lookups, v6_routes};
use super::{LpmBenchConfig, LpmBenchError};
use crate::report::{count_label, median_min_max, BenchResult};
use crate::rng::shuffle;

/// Addresses per `lookup_batch` call: `dpdk-test-fib`'s burst.
const BURST: usize = 64;
/// Addresses the naive trie looks up per pass.
const NAIVE_LOOKUPS: usize = 1_000_000;
/// Addresses looked up, untimed, before each timed pass.
const WARM_UP_LOOKUPS: usize = 1_000_000;
const V4_VARIANTS: [&str; 4] = ["s1", "s2", "s3", "v"];
const V6_VARIANTS: [&str; 2] = ["s", "v"];
const SEED_V4: u64 = 0x5745_4952_0004;
const SEED_V6: u64 = 0x5745_4952_0006;

pub(super) fn run_pinned(
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

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
