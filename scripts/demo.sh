#!/usr/bin/env bash
# The main job: builds weir and runs `weir demo` (as root), a two-node cluster on this
# machine with WireGuard between the nodes, pods attached by weir-cni, and example policies.
# Arguments go to `weir demo` (--keep, --down, --seconds N, --in-memory).
source "$(dirname "$0")/lib.sh"
require_rust
ensure_programs "${WEIR_PROGRAMS_BUILD[@]}" "${WEIR_PROGRAMS_DEMO[@]}"
# The two agents' UMEMs (the demo runs without them too, on 4 KiB pages, with a warning).
ensure_hugepages 128
say "building weir and weir-cni (release)"
cargo build --release --locked -p weir-control --bin weir --bin weir-cni
as_root target/release/weir demo "$@"
