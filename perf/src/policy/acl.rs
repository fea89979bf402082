//! The `dpdk-test-acl` anchor: DPDK's `rte_acl` classifying the flattened rules.
//!
//! `rte_acl` is the packet classifier weir's is held against. It runs as a program of its
//! own that reads files, so this module writes its rule and trace files from the flattened
//! rules and the probes, runs it per size and round within a time and memory budget (a
//! build that fails, runs out of memory or takes too long is a note, not an error), and
//! reads its rate, build time and memory from its output and log.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::generate::Probe;
use super::linear::{FlatRules, Tuple};
use super::measure::AclFigures;
use super::{io_error, PolicyBenchConfig, PolicyBenchError};
use crate::dpdk::{tail, HugepageReservation};
use crate::tools::find_in_path;

/// A first-round `dpdk-test-acl` run longer than this stops the other algorithms from
/// running at that size.
pub const ACL_ALL_ALGS_MAX: Duration = Duration::from_secs(10);
/// How long the `dpdk-test-acl` runs of one size may take together (at least one runs).
pub const ACL_BUDGET: Duration = Duration::from_secs(60);
/// The share of the available memory `dpdk-test-acl`'s heap (its build) may take.
pub const ACL_DATA_LIMIT_FRACTION: f64 = 0.5;

/// The CIDR prefixes that exactly cover `lo..=hi`, fewest first-to-last (at most 62).
pub fn interval_prefixes(lo: u32, hi: u32) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    let (mut cur, end) = (u64::from(lo), u64::from(hi));
    while cur <= end {
        let mut bits = if cur == 0 {
            32
        } else {
            cur.trailing_zeros().min(32)
        };
        while cur + (1u64 << bits) - 1 > end {
            bits -= 1;
        }
        out.push((cur as u32, (32 - bits) as u8));
        cur += 1u64 << bits;
    }
    out
}

/// Writes the flattened rules as a `dpdk-test-acl` rule file (`@src/len dst/len splo : sphi
/// dplo : dphi proto/mask`), egress section first, each interval split into prefixes; returns
/// the number of lines. The file order is the priority order.
///
/// # Errors
/// If the file cannot be written.
pub fn write_acl_rules(path: &Path, flat: &FlatRules) -> io::Result<usize> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut lines = 0;
    for r in flat.egress.iter().chain(&flat.ingress) {
        let srcs = interval_prefixes(r.src.0, r.src.1);
        let dsts = interval_prefixes(r.dst.0, r.dst.1);
        let mask = if r.proto == 0 { 0 } else { 0xff };
        for &(s, sl) in &srcs {
            for &(d, dl) in &dsts {
                writeln!(
                    w,
                    "@{}/{sl} {}/{dl} {} : {} {} : {} 0x{:02x}/0x{mask:02x}",
                    Ipv4Addr::from(s),
                    Ipv4Addr::from(d),
                    r.sport.0,
                    r.sport.1,
                    r.dport.0,
                    r.dport.1,
                    r.proto
                )?;
                lines += 1;
            }
        }
    }
    w.flush()?;
    Ok(lines)
}

/// Writes probes as a `dpdk-test-acl` trace file: `src dst sport dport proto`, addresses as
/// host-order numbers. IPv6 probes are left out.
///
/// # Errors
/// If the file cannot be written.
pub fn write_acl_trace(path: &Path, probes: &[Probe]) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for t in probes.iter().filter_map(|p| Tuple::of(&p.key)) {
        writeln!(w, "{} {} {} {} {}", t.src, t.dst, t.sport, t.dport, t.proto)?;
    }
    w.flush()
}

/// The `pkt/sec` figure of `dpdk-test-acl`'s `search_ip5tuples` line.
pub fn parse_acl_rate(stdout: &str) -> Option<f64> {
    let line = stdout.lines().find(|l| l.contains("search_ip5tuples"))?;
    let (before, _) = line.split_once(" pkt/sec")?;
    before.rsplit([' ', ',']).next()?.parse().ok()
}

/// The "total" of `rte_acl`'s runtime memory footprint (logged at debug level), in bytes.
pub fn parse_acl_memory(log: &str) -> Option<usize> {
    let rest = &log[log.find("runtime memory footprint")?..];
    rest.lines()
        .find_map(|l| l.trim().strip_prefix("total:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `rte_acl` classification algorithms, best last.
const ACL_ALGS: [&str; 5] = ["scalar", "sse", "avx2", "avx512x16", "avx512x32"];

/// The `dpdk-test-acl` anchor: its runs, its hugepages, its notes.
pub(super) struct Acl {
    bin: PathBuf,
    stdbuf: Option<PathBuf>,
    prlimit: Option<PathBuf>,
    cpu: usize,
    workdir: PathBuf,
    file_prefix: String,
    timeout: Duration,
    /// Where the thread reading its output runs: any CPU but `cpu`.
    reader_cpu: Option<usize>,
    keep_files: bool,
    unsupported: BTreeSet<&'static str>,
    /// What `HugepageReservation` said at each size (raised, or why not).
    hugepage_notes: Vec<String>,
}

/// One size's DPDK inputs and state.
pub(super) struct AclCase {
    label: String,
    rules_file: PathBuf,
    trace_file: PathBuf,
    log_file: PathBuf,
    pub(super) rules: usize,
    traces: usize,
    mem_mb: usize,
    no_huge: bool,
    /// Puts `nr_hugepages` back when the size is done, however it ends.
    _hugepages: Option<HugepageReservation>,
    /// Time spent in this size's runs.
    spent: Duration,
    /// Why the runs stopped, once they did.
    stopped: Option<String>,
    /// Runs that measured something.
    runs: usize,
    all_algs: bool,
}

/// One `dpdk-test-acl` run.
enum AclOutcome {
    Ran {
        ns: f64,
        build_ms: Option<f64>,
        memory: Option<usize>,
        wall: Duration,
    },
    Unsupported,
    Failed(String),
}

impl Acl {
    pub(super) fn new(bin: PathBuf, cfg: &PolicyBenchConfig) -> Self {
        let cpu = cfg.cpu.unwrap_or(0);
        let cpus = crate::report::Machine::detect(None).logical_cpus;
        Acl {
            bin,
            stdbuf: find_in_path("stdbuf"),
            prlimit: find_in_path("prlimit"),
            cpu,
            reader_cpu: (0..cpus).find(|&c| c != cpu),
            keep_files: cfg.keep_files,
            workdir: cfg.workdir.clone(),
            file_prefix: format!("weiracl{}", std::process::id()),
            timeout: cfg.acl_timeout,
            unsupported: BTreeSet::new(),
            hugepage_notes: Vec::new(),
        }
    }

    /// Writes the rule and trace files and reserves hugepages; an error is a note.
    pub(super) fn prepare(
        &mut self,
        label: &str,
        flat: &FlatRules,
        probes: &[Probe],
    ) -> Result<AclCase, String> {
        let path = |what: &str| self.workdir.join(format!("acl-{label}-{what}"));
        let (rules_file, trace_file, log_file) =
            (path("rules.txt"), path("trace.txt"), path("log.txt"));
        let mut case = AclCase {
            label: label.to_string(),
            rules_file,
            trace_file,
            log_file,
            rules: 0,
            traces: probes.len(),
            mem_mb: 0,
            no_huge: false,
            _hugepages: None,
            spent: Duration::ZERO,
            stopped: None,
            runs: 0,
            all_algs: true,
        };
        case.rules = write_acl_rules(&case.rules_file, flat)
            .map_err(|e| format!("writing {}: {e}", case.rules_file.display()))?;
        write_acl_trace(&case.trace_file, probes)
            .map_err(|e| format!("writing {}: {e}", case.trace_file.display()))?;
        // EAL's own needs, the rules (96 B each in the context), the traces (16 B each) and
        // room for the runtime tables: 5.7 MiB for the 1.1M rules of 100k, but rte_acl's
        // tables grow fast with overlapping ranges, so 256 B more per rule.
        case.mem_mb = 512 + (case.rules * (96 + 256) + case.traces * 16) / (1 << 20);
        match HugepageReservation::ensure(case.mem_mb, "dpdk-test-acl") {
            Ok((reservation, note)) => {
                self.hugepage_notes.extend(note);
                case._hugepages = reservation;
            }
            Err(why) => {
                self.hugepage_notes.push(format!(
                    "dpdk-test-acl ran with --no-huge (4 KiB pages): {why}"
                ));
                case.no_huge = true;
            }
        }
        Ok(case)
    }

    /// One round at one size. Round 0 runs every algorithm, best first, unless one run takes
    /// over [`ACL_ALL_ALGS_MAX`]; later rounds run every algorithm while that still fits
    /// [`ACL_BUDGET`], else the fastest so far; no round starts once the budget is spent.
    pub(super) fn round(
        &mut self,
        case: &mut AclCase,
        figures: &mut AclFigures,
        round: usize,
        rounds: usize,
    ) {
        if case.stopped.is_some() {
            return;
        }
        if round > 0 && case.spent >= ACL_BUDGET {
            case.stopped = Some(format!(
                "ran {} times in {:.0} s, then stopped (budget {} s per size)",
                case.runs,
                case.spent.as_secs_f64(),
                ACL_BUDGET.as_secs()
            ));
            return;
        }
        if round > 0 && case.all_algs && case.runs > 0 {
            let per_run = case.spent / case.runs as u32;
            let per_round = per_run * figures.algs.len().max(1) as u32;
            if case.spent + per_round * (rounds - round) as u32 > ACL_BUDGET {
                case.all_algs = false;
            }
        }
        let algs: Vec<&'static str> = if case.all_algs {
            ACL_ALGS.iter().rev().copied().collect()
        } else {
            figures.best().map(|(a, _)| a).into_iter().collect()
        };
        for alg in algs {
            if self.unsupported.contains(alg) {
                continue;
            }
            crate::progress::step(&format!(
                "policy: dpdk-test-acl on {} rules, {alg}, round {}/{rounds}",
                case.rules,
                round + 1
            ));
            match self.run_once(case, alg) {
                Ok(AclOutcome::Ran {
                    ns,
                    build_ms,
                    memory,
                    wall,
                }) => {
                    case.runs += 1;
                    case.spent += wall;
                    figures.algs.entry(alg).or_default().push(ns);
                    figures.build_ms.extend(build_ms);
                    figures.memory_bytes = figures.memory_bytes.or(memory);
                    if round == 0 && wall > ACL_ALL_ALGS_MAX {
                        case.all_algs = false;
                        break;
                    }
                }
                Ok(AclOutcome::Unsupported) => {
                    self.unsupported.insert(alg);
                }
                Ok(AclOutcome::Failed(why)) => {
                    case.stopped = Some(why);
                    return;
                }
                Err(e) => {
                    case.stopped = Some(e.to_string());
                    return;
                }
            }
        }
    }

    /// Notes about a size's runs; removes its files.
    pub(super) fn close(&mut self, case: AclCase) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(why) = &case.stopped {
            notes.push(format!(
                "{} rules: dpdk-test-acl on {} rules: {}{why}",
                case.label,
                case.rules,
                if case.runs == 0 { "no figure: " } else { "" }
            ));
        }
        if !case.all_algs && case.runs > 0 {
            notes.push(format!(
                "{} rules: dpdk-test-acl took {:.1} s per run (EAL start, reading {} rules and \
                 {} probes, build, classification), so not every algorithm ran in every round",
                case.label,
                case.spent.as_secs_f64() / case.runs as f64,
                case.rules,
                case.traces
            ));
        }
        let _ = std::fs::remove_file(&case.log_file);
        if self.keep_files {
            notes.push(format!(
                "{} rules: dpdk-test-acl's inputs kept: {} and {} (perf/anchors/acl.sh runs them)",
                case.label,
                case.rules_file.display(),
                case.trace_file.display()
            ));
        } else {
            let _ = std::fs::remove_file(&case.rules_file);
            let _ = std::fs::remove_file(&case.trace_file);
        }
        notes
    }

    /// One run of `alg` on `case`.
    fn run_once(&self, case: &AclCase, alg: &str) -> Result<AclOutcome, PolicyBenchError> {
        let mut cmd = match &self.prlimit {
            Some(prlimit) => {
                let mut c = Command::new(prlimit);
                c.arg(format!(
                    "--data={}",
                    acl_data_limit(case.mem_mb, case.no_huge)
                ));
                c.arg("--");
                c
            }
            None => Command::new(self.stdbuf.as_deref().unwrap_or(&self.bin)),
        };
        match (&self.prlimit, &self.stdbuf) {
            (Some(_), Some(stdbuf)) => {
                cmd.arg(stdbuf).arg("-oL").arg(&self.bin);
            }
            (Some(_), None) => {
                cmd.arg(&self.bin);
            }
            (None, Some(_)) => {
                cmd.arg("-oL").arg(&self.bin);
            }
            (None, None) => {}
        }
        cmd.arg("-l")
            .arg(self.cpu.to_string())
            .args(["--no-pci", "--file-prefix", &self.file_prefix])
            .args(["--force-max-simd-bitwidth=512", "--log-level=lib.acl:debug"])
            .args(["-m".to_string(), case.mem_mb.to_string()])
            .arg(if case.no_huge {
                "--no-huge"
            } else {
                "--in-memory"
            })
            .arg("--")
            .arg(format!("--rulesf={}", case.rules_file.display()))
            .arg(format!("--tracef={}", case.trace_file.display()))
            .arg(format!("--rulenum={}", case.rules.max(1)))
            .arg(format!("--tracenum={}", case.traces))
            .arg(format!(
                "--iter={}",
                (4_000_000 / case.traces.max(1)).clamp(1, 100)
            ))
            .arg(format!("--alg={alg}"))
            .arg("--verbose=0");
        let command = format!("{cmd:?}").replace('"', "");
        let log =
            File::create(&case.log_file).map_err(|e| io_error(&case.log_file, "creating", e))?;
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| PolicyBenchError::Io {
                what: format!("starting {command}"),
                source: e,
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // The reader timestamps the lines that bound the build. On the measuring CPU it
        // would only run when dpdk-test-acl yields, so it runs on another one.
        let elsewhere = self.reader_cpu;
        let reader = std::thread::spawn(move || {
            if let Some(id) = elsewhere {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let deadline = started + self.timeout;
        let mut lines = Vec::new();
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
            }
        }
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if !timed_out && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    timed_out = true;
                    break None;
                }
            }
        };
        let _ = reader.join();
        let wall = started.elapsed();
        let runtime = Path::new("/var/run/dpdk").join(&self.file_prefix);
        if runtime.is_dir() {
            let _ = std::fs::remove_dir_all(runtime);
        }
        let stdout: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        let log = std::fs::read_to_string(&case.log_file).unwrap_or_default();
        let both = format!("{stdout}{log}");
        if timed_out {
            return Ok(AclOutcome::Failed(format!(
                "did not finish within {} s (build too slow at this size?) and was killed{}",
                self.timeout.as_secs(),
                if lines.iter().any(|(_, l)| l.starts_with("rte_acl_build(")) {
                    " after its build"
                } else {
                    " during its build"
                }
            )));
        }
        if both.contains(&format!("failed to setup {alg} method")) {
            return Ok(AclOutcome::Unsupported);
        }
        let build_line = lines
            .iter()
            .position(|(_, l)| l.starts_with("rte_acl_build("));
        if let Some(i) = build_line {
            if !lines[i].1.ends_with("finished with 0") {
                return Ok(AclOutcome::Failed(format!(
                    "its build failed ({}); its log ends: {}",
                    lines[i].1,
                    tail(&log, 3).replace('\n', " | ")
                )));
            }
        }
        let status = status.expect("not timed out");
        let Some(pps) = parse_acl_rate(&stdout).filter(|_| status.success()) else {
            return Ok(AclOutcome::Failed(format!(
                "`{command}` failed ({status}); its output ends: {}",
                tail(&both, 4).replace('\n', " | ")
            )));
        };
        let build_ms = build_line
            .filter(|&i| i > 0)
            .map(|i| (lines[i].0 - lines[i - 1].0).as_secs_f64() * 1e3)
            .filter(|_| self.stdbuf.is_some());
        Ok(AclOutcome::Ran {
            ns: 1e9 / pps,
            build_ms,
            memory: parse_acl_memory(&log),
            wall,
        })
    }

    /// Notes about every size: algorithms skipped, hugepages, how build time was taken.
    pub(super) fn finish(self) -> Vec<String> {
        // One note for all sizes: the first, and how many sizes said the same kind of thing.
        let mut notes = Vec::new();
        if let Some(first) = self.hugepage_notes.first() {
            let more = self.hugepage_notes.len() - 1;
            notes.push(if more == 0 {
                first.clone()
            } else {
                format!("{first} (at the first size; likewise for {more} more, each on its own)")
            });
        }
        if !self.unsupported.is_empty() {
            notes.push(format!(
                "dpdk-test-acl algorithms this CPU or build cannot run, skipped: {}",
                self.unsupported.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if self.stdbuf.is_none() {
            notes.push("no stdbuf on PATH: dpdk-test-acl's build time was not measured".into());
        } else if self.reader_cpu.is_none() {
            notes.push(
                "one CPU only: dpdk-test-acl's output was read on its own CPU, so its build \
                 times may be late by up to its classification time"
                    .into(),
            );
        }
        notes
    }
}

/// The heap `dpdk-test-acl` may use (`prlimit --data`): what its build needs at most, so
/// that an infeasible build fails instead of pushing the machine into the OOM killer.
fn acl_data_limit(mem_mb: usize, no_huge: bool) -> u64 {
    let available_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    let share = (available_kb as f64 * 1024.0 * ACL_DATA_LIMIT_FRACTION) as u64;
    // Without hugepages, EAL's own memory is ordinary heap too.
    share + if no_huge { (mem_mb as u64) << 20 } else { 0 }
}

#[cfg(test)]
mod tests {
    use weir_dataplane::flow::FlowKey;

    use super::*;
    use crate::policy::linear::{FlatAction, FlatRule, ANY, ANY_PORT};
    use crate::rng::SplitMix64;

    #[test]
    fn interval_prefixes_cover_exactly_against_a_naive_check() {
        let mut rng = SplitMix64(7);
        let mut cases = vec![
            (0, u32::MAX),
            (0, 0),
            (u32::MAX, u32::MAX),
            (1, u32::MAX - 1),
        ];
        for _ in 0..300 {
            let base = match rng.below(3) {
                0 => 0,
                1 => u32::MAX - 5000,
                _ => rng.next_u64() as u32 & !0xfff,
            };
            let lo = base + rng.below(2000) as u32;
            let hi = lo + rng.below(3000) as u32;
            cases.push((lo, hi));
        }
        for (lo, hi) in cases {
            let prefixes = interval_prefixes(lo, hi);
            assert!(
                prefixes.len() <= 62,
                "{lo}-{hi}: {} prefixes",
                prefixes.len()
            );
            let mut next = u64::from(lo);
            for &(addr, len) in &prefixes {
                let size = 1u64 << (32 - u32::from(len));
                assert_eq!(u64::from(addr) % size, 0, "{addr}/{len} is not aligned");
                assert_eq!(
                    u64::from(addr),
                    next,
                    "{lo}-{hi}: gap or overlap at {addr}/{len}"
                );
                next += size;
            }
            assert_eq!(next, u64::from(hi) + 1, "{lo}-{hi} not covered to its end");
            if hi - lo < 5000 {
                // The naive check: every address near the interval, one by one.
                let covered = |a: u32| {
                    prefixes.iter().any(|&(p, l)| {
                        let host = u32::MAX.checked_shr(u32::from(l)).unwrap_or(0);
                        a & !host == p
                    })
                };
                for a in lo.saturating_sub(20)..=hi.saturating_add(20) {
                    assert_eq!(covered(a), lo <= a && a <= hi, "{a} in {lo}-{hi}");
                }
            }
        }
        assert_eq!(interval_prefixes(0, u32::MAX), vec![(0, 0)]);
        assert_eq!(
            interval_prefixes(0xc612_0001, 0xc612_0006),
            vec![
                (0xc612_0001, 32),
                (0xc612_0002, 31),
                (0xc612_0004, 31),
                (0xc612_0006, 32)
            ]
        );
    }

    #[test]
    fn acl_files_and_output() {
        let dir = std::env::temp_dir().join(format!("weir-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flat = FlatRules {
            egress: vec![FlatRule {
                src: (0xc612_0001, 0xc612_0002),
                dst: ANY,
                sport: ANY_PORT,
                dport: (8080, 8089),
                proto: 6,
                action: FlatAction::Allow,
            }],
            ingress: vec![FlatRule {
                src: ANY,
                dst: (0xc612_0000, 0xc612_00ff),
                sport: ANY_PORT,
                dport: ANY_PORT,
                proto: 0,
                action: FlatAction::Deny,
            }],
            inexact: 0,
        };
        let rules = dir.join("rules.txt");
        assert_eq!(write_acl_rules(&rules, &flat).unwrap(), 3);
        assert_eq!(
            std::fs::read_to_string(&rules).unwrap(),
            "@198.18.0.1/32 0.0.0.0/0 0 : 65535 8080 : 8089 0x06/0xff\n\
             @198.18.0.2/32 0.0.0.0/0 0 : 65535 8080 : 8089 0x06/0xff\n\
             @0.0.0.0/0 198.18.0.0/24 0 : 65535 0 : 65535 0x00/0x00\n"
        );
        let trace = dir.join("trace.txt");
        let key = FlowKey {
            src: FlowKey::map_v4([198, 18, 0, 1]),
            dst: FlowKey::map_v4([198, 18, 0, 2]),
            src_port: 40000,
            dst_port: 80,
            proto: 6,
        };
        write_acl_trace(
            &trace,
            &[Probe {
                key,
                src: None,
                dst: None,
            }],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&trace).unwrap(),
            "3323068417 3323068418 40000 80 6\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(parse_acl_rate(CAPTURED_STDOUT), Some(31_415_899.36));
        assert_eq!(parse_acl_rate("rte_acl_build(3) finished with 0\n"), None);
        assert_eq!(parse_acl_memory(CAPTURED_LOG), Some(77_232));
        assert_eq!(parse_acl_memory("total: 5 bytes\n"), None);
    }

    /// `dpdk-test-acl ... --verbose=0` on 1000 ClassBench-style rules, as captured (stdout).
    const CAPTURED_STDOUT: &str = "\
dump_config:
rulesf:r.txt
tracef:t.txt
rulenum:65536
tracenum:100000
tracestep:256
bldcat:3
runcat:1
maxsize:0
iter:10
verbose:0
alg:7(avx512x32)
ipv6:0
rte_acl_build(3) finished with 0
acl context <TESTACL>@0x11bfbd9a80
  socket_id=-1
  alg=7
  first_load_sz=4
  max_rules=65536
  rule_size=96
  num_rules=1000
  num_categories=3
  num_tries=1
search_ip5tuples  @lcore 1: 10 iterations, 1000000 pkts, 1 categories, 82760642 cycles (0.03 sec), 82.76 cycles/pkt, 31415899.36 pkt/sec
";

    /// Its stderr with `--log-level=lib.acl:debug`, on the 1k-rule generated cluster.
    const CAPTURED_LOG: &str = "\
TELEMETRY: No legacy callbacks, legacy socket not created
ACL: Gen phase for ACL \"TESTACL\":
runtime memory footprint on socket -1:
single nodes/bytes used: 628/5024
quad nodes/vectors/bytes used: 358/1134/9072
DFA nodes/group64/bytes used: 17/68/36872
match nodes/bytes used: 172/22016
total: 77232 bytes
max limit: 18446744073709551615 bytes
ACL: Build phase for ACL \"TESTACL\":
node limit for tree split: 2048
nodes created: 1175
memory consumed: 8388615
ACL: trie 0: number of rules: 8806, indexes: 4
";
}
