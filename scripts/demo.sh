#!/usr/bin/env bash
# The main job, on the embedded default node: builds weir and runs `weir demo`.
source "$(dirname "$0")/lib.sh"
ensure_apt build-essential pkg-config
say "building weir (release)"
cargo build --release --locked -p weir-control --bin weir
target/release/weir demo "$@"
