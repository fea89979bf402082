//! The programs the benchmarks run beside weir, and the Debian package each comes from, so
//! that a missing one is named with the package to install (`dpdk-test-acl` is in `dpdk-dev`,
//! not in `dpdk`, which holds only DPDK's runtime libraries).
//!
//! `scripts/lib.sh` (`WEIR_PACKAGE_OF`) installs the same programs from the same packages; a
//! unit test below keeps the two tables in step.

use std::path::PathBuf;

/// Program (or path) → Debian 12 package, for every program a benchmark runs.
pub const PACKAGES: &[(&str, &str)] = &[
    ("dpdk-testpmd", "dpdk-dev"),
    ("dpdk-test-fib", "dpdk-dev"),
    ("dpdk-test-acl", "dpdk-dev"),
    // The rte_acl anchor is built at run time against DPDK's headers and libraries.
    ("/usr/include/dpdk/rte_acl.h", "dpdk-dev"),
    ("cc", "build-essential"),
    ("pkg-config", "pkg-config"),
    ("ip", "iproute2"),
    ("iperf3", "iperf3"),
    ("nft", "nftables"),
    // kube-proxy's iptables mode, on the legacy x_tables backend and on the nf_tables one
    // (Debian's default `iptables`).
    ("iptables-legacy-restore", "iptables"),
    ("iptables-legacy", "iptables"),
    ("iptables-nft-restore", "iptables"),
    ("wireguard-go", "wireguard-go"),
    ("wg", "wireguard-tools"),
    ("go", "golang-go"),
    ("prlimit", "util-linux"),
    ("taskset", "util-linux"),
    ("stdbuf", "coreutils"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/lib/cni/host-local", "containernetworking-plugins"),
];

/// A program a benchmark needs is not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{program}` is not installed: it is in the Debian package `{package}` (`apt-get install {package}`; scripts/bench.sh installs it)")]
pub struct Missing {
    /// The program looked for.
    pub program: String,
    /// The Debian package that provides it.
    pub package: &'static str,
}

/// The Debian package that provides `program`, if the table knows it.
pub fn package_of(program: &str) -> Option<&'static str> {
    PACKAGES
        .iter()
        .find(|(p, _)| *p == program)
        .map(|(_, package)| *package)
}

/// Finds `program` on `PATH` (or, for a path, checks it exists).
///
/// # Panics
/// If `program` is not in [`PACKAGES`]: every program a benchmark runs is listed there.
pub fn require(program: &str) -> Result<PathBuf, Missing> {
    let package = package_of(program)
        .unwrap_or_else(|| panic!("perf/src/tools.rs: no package listed for `{program}`"));
    let found = if program.starts_with('/') {
        Some(PathBuf::from(program)).filter(|p| p.exists())
    } else {
        find_in_path(program)
    };
    found_or_missing(program, package, found)
}

fn found_or_missing(
    program: &str,
    package: &'static str,
    found: Option<PathBuf>,
) -> Result<PathBuf, Missing> {
    found.ok_or_else(|| Missing {
        program: program.to_string(),
        package,
    })
}

/// Finds `program` on `PATH`, then in `/usr/bin` and `/usr/local/bin`.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[program]=package` lines of `WEIR_PACKAGE_OF` in scripts/lib.sh.
    fn lib_sh_table() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lib.sh");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("WEIR_PACKAGE_OF=(").expect("the table in lib.sh");
        let body = &text[start..];
        let body = &body[..body.find("\n)").expect("the table's end")];
        body.lines()
            .filter_map(|l| l.trim().strip_prefix('['))
            .filter_map(|l| l.split_once("]="))
            .map(|(p, k)| (p.to_string(), k.trim().to_string()))
            .collect()
    }

    #[test]
    fn every_program_a_benchmark_runs_comes_from_the_package_that_scripts_install() {
        let script = lib_sh_table();
        assert!(script.len() > PACKAGES.len(), "{script:?}");
        for (program, package) in PACKAGES {
            let listed = script.iter().find(|(p, _)| p == program);
            assert_eq!(
                listed.map(|(_, k)| k.as_str()),
                Some(*package),
                "`{program}`: scripts/lib.sh and perf/src/tools.rs disagree"
            );
        }
    }

    #[test]
    fn the_dpdk_test_tools_are_named_with_dpdk_dev() {
        for tool in ["dpdk-testpmd", "dpdk-test-fib", "dpdk-test-acl"] {
            assert_eq!(package_of(tool), Some("dpdk-dev"));
        }
        let missing = Missing {
            program: "dpdk-test-acl".into(),
            package: "dpdk-dev",
        };
        assert!(
            missing.to_string().contains("apt-get install dpdk-dev"),
            "{missing}"
        );
    }

    #[test]
    fn a_program_that_is_not_there_is_missing_with_its_package() {
        let package = package_of("/usr/lib/cni/bridge").unwrap();
        let e = found_or_missing("/usr/lib/cni/bridge", package, None).unwrap_err();
        assert_eq!(e.package, "containernetworking-plugins");
        assert!(e.to_string().contains("/usr/lib/cni/bridge"), "{e}");
        let here = PathBuf::from("/usr/bin/true");
        assert_eq!(
            found_or_missing("true", "coreutils", Some(here.clone())),
            Ok(here)
        );
        assert!(find_in_path("weir-no-such-program-4a1c").is_none());
    }
}
