#!/usr/bin/env bash
# Runs a weir-bench subcommand with its anchors: `scripts/bench.sh pipeline [--json] ...`.
# Installs DPDK (for dpdk-test-fib) when missing.
source "$(dirname "$0")/lib.sh"
ensure_apt build-essential pkg-config dpdk
say "building weir-bench (release)"
cargo build --release --locked -p weir-perf
target/release/weir-bench "${@:-pipeline}"
