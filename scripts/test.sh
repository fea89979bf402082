#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test, a fuzz smoke of every
# wire-facing parser, and short runs of the benchmark harness with their anchors.
# Installs what it needs (Debian packages, cargo-fuzz, hugepages) idempotently.
source "$(dirname "$0")/lib.sh"

FUZZ_SECONDS=${FUZZ_SECONDS:-20}

# Everything the suite runs, installed first and checked before anything long starts: a
# missing program fails here with its package, not fifteen minutes into the run.
require_rust
say "checking the programs the suite runs (installing their Debian packages if missing)"
ensure_programs "${WEIR_PROGRAMS_BUILD[@]}" "${WEIR_PROGRAMS_SCENARIO[@]}" \
  "${WEIR_PROGRAMS_ANCHORS[@]}" "${WEIR_PROGRAMS_MANIFESTS[@]}"
ensure_rust_components
ensure_cargo_tool cargo-fuzz cargo-fuzz
# UMEMs of the AF_XDP tests and the forwarding benchmark smoke (weir, the traffic engine,
# dpdk-testpmd's memory).
ensure_hugepages 640

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test"
rm -rf target/tmp/figures
cargo test --workspace --locked
# Figures the scenario tests measured (a passing test's output is not shown by cargo).
for f in target/tmp/figures/*.txt; do
  [ -e "$f" ] || continue
  sed 's/^/    /' "$f" >&2
done

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

say "benchmark harness smoke: weir-bench all --quick (every benchmark with its anchors, short)"
cargo build --release --locked -p weir-perf -p weir-control
rm -rf target/bench-quick
target/release/weir-bench all --quick --out-dir target/bench-quick
python3 - <<'PY'
import glob, json
[path] = glob.glob("target/bench-quick/results/*-quick.json")
r = json.load(open(path))
assert r["quick"] is True, r.keys()
benches = {b["name"]: b for b in r["benches"]}
assert sorted(benches) == ["attach", "control", "forward", "pipeline", "policy", "services", "wireguard"], sorted(benches)
for name, b in benches.items():
    assert b["status"] == "ok", (name, b)
def results(name):
    return {x["name"]: x for x in benches[name]["report"]["results"]}
pipe = results("pipeline")
for need in ("pipeline_udp4_64B_ns", "pipeline_udp4_1500B_ns", "lpm_v4_20k_batch", "lpm_v6_20k_batch",
             "pipeline_policy_65536_flows_cost_ns"):
    assert need in pipe, (need, sorted(pipe))
# Established flows through policy, beside the same flows without it.
assert pipe["pipeline_policy_65536_flows_ns"]["anchor"]["name"] == "pipeline_65536_flows_ns", pipe["pipeline_policy_65536_flows_ns"]
assert any(x["anchor"] and x["ratio"] for n, x in pipe.items() if n.startswith("lpm_v4")), "LPM carries the DPDK anchor"
pol = results("policy")
rated = [x for n, x in pol.items() if n.endswith("_classify_rate")]
assert rated and all(x["anchor"] and x["ratio"] for x in rated), "classification rates carry the ACL anchor"
# rte_acl decided both directions and its answers were checked (a wrong one fails the run),
# for the whole cluster and for one node's tables.
assert all("both directions" in x["anchor"]["name"] for x in rated), rated
assert "policy_1k_rules_node_classify_rate" in pol and "policy_1k_rules_established_ns" in pol, sorted(pol)
fwd = results("forward")
for kind in ("weir", "testpmd_io", "kernel", "weir_snat", "kernel_masquerade"):
    assert fwd[f"forward_64B_{kind}_mpps"]["value"] > 0, kind
assert fwd["forward_64B_weir_mpps"]["anchor"]["name"] == "testpmd_io"
assert fwd["forward_64B_weir_snat_mpps"]["anchor"]["name"] == "kernel_masquerade"
for kind in ("weir_snat", "kernel_masquerade"):
    # Every frame that reached the world left with the node's address.
    assert fwd[f"forward_64B_{kind}_untranslated"]["value"] == 0, fwd[f"forward_64B_{kind}_untranslated"]
svc = results("services")
# Through a cluster IP beside kube-proxy's nftables rules, and the stage's cost in memory.
assert svc["services_64B_weir_svc_1_mpps"]["value"] > 0
assert svc["services_64B_weir_svc_1_mpps"]["anchor"]["name"] == "kernel_nft_svc_1"
assert svc["services_64B_kernel_nft_svc_1_mpps"]["value"] > 0
assert svc["services_stage_10_established_cost_ns"]["value"] > 0
# One EndpointSlice change in the agent's table, beside a rebuild of the whole table.
assert svc["services_change_in_place_1k_p50_us"]["value"] > 0
assert svc["services_change_in_place_1k_p50_us"]["anchor"]["name"] == "rebuild_p50_us"
wg = results("wireguard")
assert any(x["anchor"] and x["ratio"] for x in wg.values()), "WireGuard carries its anchors"
ctl = results("control")
assert ctl["control_event_to_snapshot_p50_us"]["anchor"]["value"] > 0, "the full recompute anchor"
# The memory soak ran: pods created and deleted, the heap before beside what stayed.
assert ctl["control_churn_growth_kib"]["anchor"]["value"] > 0, "the heap before the soak"
assert ctl["control_churn_batch_ms"]["value"] > 0
assert "control_churn_drift_kib" in ctl
att = results("attach")
assert att["attach_weir_p99_ms_at_5"]["value"] > 0
assert att["attach_weir_p99_ms_at_10"]["anchor"]["name"] == "bridge + host-local p99"
assert att["attach_weir_add_p50_ms_at_5"]["anchor"]["value"] > 0, "the no-op plugin's floor"
assert att["attach_forwarding_gap_ms_at_10"]["value"] > 0, "the witness flow's gap"
for plot in ("throughput", "policy", "latency"):
    svg = open(f"target/bench-quick/plots/{plot}-quick.svg").read()
    assert svg.lstrip().startswith("<svg") and svg.rstrip().endswith("</svg>"), plot
print(f"bench smoke ok: {len(benches)} benchmarks in {r['seconds']:.0f} s")
PY

say "all tests passed"
