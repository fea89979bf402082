//! The `dpdk-test-fib` anchor: DPDK's `rte_fib` on the same routes and addresses.
//!
//! `rte_fib` is the LPM table weir's are held against. It runs as a program of its own, so
//! this module writes the generated routes and addresses in its file formats (and reads
//! them back), prepares its runs (table sizes, EAL memory, hugepages), runs each lookup
//! variant with a deadline and reads its cycles per lookup from its output.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::{io_error, LpmBenchConfig, LpmBenchError};
use crate::dpdk::{tail, HugepageReservation};

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

/// How long one `dpdk-test-fib` run may take.
const DPDK_TIMEOUT: Duration = Duration::from_secs(300);

/// ns per lookup, per `dpdk-test-fib` lookup variant.
pub(super) type Variants = BTreeMap<&'static str, Vec<f64>>;

/// What `dpdk-test-fib` looks up: the same routes and addresses as weir.
pub(super) struct DpdkInputs<'a> {
    pub(super) routes4: &'a [(Ipv4Addr, u8, u32)],
    pub(super) addrs4: &'a [u32],
    pub(super) addrs4_random: &'a [u32],
    pub(super) routes6: &'a [(Ipv6Addr, u8, u32)],
    pub(super) addrs6: &'a [u128],
    /// weir's count, which DPDK's DIR-24-8 needs too.
    pub(super) tbl8_groups4: usize,
}

/// The `dpdk-test-fib` anchor: its input files, its hugepages, its runs.
pub(super) struct Dpdk {
    bin: PathBuf,
    cpu: usize,
    tsc_mhz: f64,
    no_huge: bool,
    file_prefix: String,
    pub(super) v4: DpdkCase,
    pub(super) v4_random: DpdkCase,
    pub(super) v6: DpdkCase,
    files: Vec<PathBuf>,
    output: PathBuf,
    /// Puts `nr_hugepages` back when the benchmark ends, however it ends.
    _hugepages: Option<HugepageReservation>,
    unsupported: std::cell::RefCell<Vec<String>>,
}

/// One `dpdk-test-fib` configuration: EAL memory and application arguments.
pub(super) struct DpdkCase {
    structure: &'static str,
    mem_mb: usize,
    args: Vec<String>,
}

impl Dpdk {
    pub(super) fn prepare(
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
    pub(super) fn run_variants(
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
    pub(super) fn finish(self) -> Vec<String> {
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
    use crate::lpm::generate::{v4_lookups, v4_routes, v6_lookups, v6_routes};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-lpm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
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
