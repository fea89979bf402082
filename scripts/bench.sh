#!/usr/bin/env bash
# Runs weir-bench with its anchors: `scripts/bench.sh all [--quick]`, or one benchmark,
# `scripts/bench.sh pipeline [--json] ...`. Installs what the anchors need (the programs
# of WEIR_PROGRAMS_ANCHORS in scripts/lib.sh: DPDK's test tools, iperf3, nftables, wireguard-go,
# Debian's CNI plugins and libcni) when missing, builds
# weir-bench and weir, and runs as root (the forwarding, WireGuard and attach benchmarks
# build network namespaces; hugepages are raised for the run and restored afterwards).
source "$(dirname "$0")/lib.sh"
require_rust
say "checking the programs the anchors run (installing their Debian packages if missing)"
ensure_programs "${WEIR_PROGRAMS_BUILD[@]}" "${WEIR_PROGRAMS_ANCHORS[@]}"
ensure_hugepages 640
say "building weir-bench and weir (release)"
cargo build --release --locked -p weir-perf -p weir-control
as_root target/release/weir-bench "${@:-pipeline}"
