#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test, a fuzz smoke of every
# wire-facing parser, and short runs of the benchmark harness with their anchors.
# Installs what it needs (Debian packages, cargo-fuzz, hugepages) idempotently.
source "$(dirname "$0")/lib.sh"

FUZZ_SECONDS=${FUZZ_SECONDS:-20}

ensure_apt build-essential pkg-config dpdk iproute2 ethtool iputils-ping iperf3 nftables \
  wireguard-go wireguard-tools tcpdump util-linux iptables \
  golang-go golang-github-appc-cni-dev containernetworking-plugins python3-venv
ensure_rust_components
# UMEMs of the AF_XDP tests and the forwarding benchmark smoke (weir, the traffic engine,
# dpdk-testpmd's memory).
ensure_hugepages 640
ensure_cargo_tool cargo-fuzz cargo-fuzz

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test"
cargo test --workspace --locked

say "deploy/ manifests: kubernetes-validate --strict (offline schemas, PyPI)"
venv="target/pyvenv"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate
fi
"$venv/bin/kubernetes-validate" --strict -k 1.30.0 \
  deploy/namespace.yaml deploy/rbac.yaml deploy/configmap.yaml deploy/daemonset.yaml deploy/crds/*.weir.dev.yaml \
  deploy/examples/*.yaml

say "deploy/ renders: kubectl kustomize, and the rendered objects validate"
command -v kubectl >/dev/null 2>&1 || ensure_apt kubernetes-client
kubectl kustomize deploy > target/deploy-rendered.yaml
"$venv/bin/kubernetes-validate" --strict -k 1.30.0 target/deploy-rendered.yaml
python3 - <<'PY'
import re
text = open("target/deploy-rendered.yaml").read()
kinds = re.findall(r"^kind: (\w+)$", text, re.M)
for need in ("CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole",
             "ClusterRoleBinding", "ConfigMap", "DaemonSet"):
    assert need in kinds, (need, kinds)
assert kinds.count("CustomResourceDefinition") == 8, kinds
print("kustomize render ok:", len(kinds), "objects")
PY

say "fuzz smoke (${FUZZ_SECONDS}s per target)"
for target in wire pipeline wireguard; do
  mkdir -p "fuzz/corpus/$target"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=4096 2>&1 | tail -n 3
  # cargo fuzz exits non-zero on a crash; pipefail makes that fail the suite.
done

say "benchmark harness smoke (short, with the dpdk-test-fib anchor)"
cargo build --release --locked -p weir-perf
target/release/weir-bench pipeline --runs 1 --seconds 0.2 --routes 20000 --lookups 1000000 --json > target/bench-smoke.json
python3 - <<'PY'
import json
r = json.load(open("target/bench-smoke.json"))
assert r["bench"] == "pipeline", r
names = {x["name"] for x in r["results"]}
for need in ("pipeline_udp4_64B_ns", "pipeline_udp4_1500B_ns", "lpm_v4_20k_batch", "lpm_v6_20k_batch"):
    assert need in names, (need, sorted(names))
anchored = [x for x in r["results"] if x["name"].startswith("lpm_v4") and x["anchor"]]
assert anchored and all(x["ratio"] for x in anchored), "LPM results must carry the DPDK anchor"
print("bench smoke ok:", len(r["results"]), "results")
PY

say "policy benchmark smoke (short, with the dpdk-test-acl anchor)"
target/release/weir-bench policy --runs 1 --rules 10,1000 --packets 100000 --json > target/bench-policy-smoke.json
python3 - <<'PY'
import json
r = json.load(open("target/bench-policy-smoke.json"))
assert r["bench"] == "policy", r
names = {x["name"] for x in r["results"]}
for need in ("policy_10_rules_classify_rate", "policy_1k_rules_classify_rate", "policy_1k_rules_build_ms"):
    assert need in names, (need, sorted(names))
rated = [x for x in r["results"] if x["name"].endswith("_classify_rate")]
assert rated and all(x["anchor"] and x["ratio"] for x in rated), "classification rates must carry the ACL anchor"
print("policy bench smoke ok:", len(r["results"]), "results")
PY

say "forwarding benchmark smoke (short: weir beside dpdk-testpmd and the kernel with nftables)"
cargo build --release --locked -p weir-perf -p weir-control
target/release/weir-bench forward --runs 1 --seconds 0.3 --sizes 64 --rules 100 --json > target/bench-forward-smoke.json
python3 - <<'PY'
import json
r = json.load(open("target/bench-forward-smoke.json"))
assert r["bench"] == "forward", r
by = {x["name"]: x for x in r["results"]}
for kind in ("weir", "weir_100_rules", "testpmd_io", "kernel", "kernel_nft_100_rules"):
    need = f"forward_64B_{kind}_mpps"
    assert need in by, (need, sorted(by))
    assert by[need]["value"] > 0, (need, by[need])
    assert by[f"forward_64B_{kind}_p99_us"]["value"] > 0
assert by["forward_64B_weir_mpps"]["anchor"]["name"] == "testpmd_io"
assert by["forward_64B_weir_100_rules_mpps_vs_kernel_nft_100_rules"]["ratio"] > 0
print("forward bench smoke ok:", len(r["results"]), "results")
PY

say "control-plane benchmark smoke (a small cluster through the fake API server)"
target/release/weir-bench control --runs 1 --pods 2000 --policies 1000 --namespaces 100 --changes 60 --json > target/bench-control-smoke.json
python3 - <<'PY'
import json
r = json.load(open("target/bench-control-smoke.json"))
assert r["bench"] == "control", r
by = {x["name"]: x for x in r["results"]}
for need in ("control_initial_sync_ms", "control_event_to_snapshot_p50_us",
             "control_event_to_snapshot_p99_us", "control_snapshot_build_us", "control_memory_kib"):
    assert need in by and by[need]["value"] > 0, (need, sorted(by))
assert by["control_event_to_snapshot_p50_us"]["anchor"]["value"] > 0, "the full recompute anchor"
print("control bench smoke ok:", len(r["results"]), "results")
PY

say "all tests passed"
