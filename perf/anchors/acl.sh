#!/bin/bash
# The DPDK side of `weir-bench policy`, by hand: its rte_acl anchor (perf/src/policy/acl_harness.c,
# built here against Debian's `dpdk-dev`) on a rule file and a trace file as weir-bench writes
# them, with the flags weir-bench uses, every classification algorithm, both directions.
#
# Usage: acl.sh RULES TRACE    env: CPU (default 1), RUNS (default 3), TIMEOUT (default 300 s)
# Get the files with `weir-bench policy --keep-files --workdir DIR` (DIR/acl-<R>-rules.txt and
# DIR/acl-<R>-trace.txt). Prints ns per packet (both directions decided), build time (as the
# anchor times it) and rte_acl's runtime memory for each algorithm and run; the answers of
# each run are left in its work directory only while it runs (weir-bench checks them).
# Hugepages: as root, raises vm.nr_hugepages for the run and restores it on exit.
set -euo pipefail
CPU=${CPU:-1}; RUNS=${RUNS:-3}; TIMEOUT=${TIMEOUT:-300}
[ $# -eq 2 ] || { echo "usage: $0 RULES TRACE" >&2; exit 2; }
RULES=$1; TRACE=$2
pkg-config --exists libdpdk || { echo "DPDK's development files missing: apt-get install dpdk-dev pkg-config" >&2; exit 1; }
HARNESS_SRC=$(dirname "$0")/../src/policy/acl_harness.c
PREFIX=weiracl$$; WORK=$(mktemp -d)
OLD_HP=$(cat /proc/sys/vm/nr_hugepages)
cleanup() {
  [ "$(id -u)" = 0 ] && echo "$OLD_HP" > /proc/sys/vm/nr_hugepages
  rm -rf "$WORK" "/var/run/dpdk/$PREFIX"
}
trap cleanup EXIT
# shellcheck disable=SC2046
cc -O2 -o "$WORK/weir-acl" "$HARNESS_SRC" $(pkg-config --cflags --libs libdpdk)
NRULES=$(wc -l < "$RULES"); NTRACES=$(wc -l < "$TRACE")
# As weir-bench sizes it: EAL, 96 B per rule in the context, 256 B per rule of room for the
# runtime tables, 16 B per trace.
MEM_MB=$(( 512 + (NRULES * (96 + 256) + NTRACES * 16) / 1048576 ))
NEED=$(( (MEM_MB + 1) / 2 ))
FREE=$(awk '/HugePages_Free/{print $2}' /proc/meminfo)
if [ "$FREE" -lt "$NEED" ] && [ "$(id -u)" = 0 ]; then
  echo $(( OLD_HP + NEED - FREE )) > /proc/sys/vm/nr_hugepages
  FREE=$(awk '/HugePages_Free/{print $2}' /proc/meminfo)
fi
if [ "$FREE" -ge "$NEED" ]; then MEMMODE=--in-memory; else MEMMODE=--no-huge; fi
ITER=$(( 4000000 / NTRACES )); [ "$ITER" -ge 1 ] || ITER=1; [ "$ITER" -le 100 ] || ITER=100
echo "# $RULES ($NRULES rules), $TRACE ($NTRACES probes), CPU $CPU, $MEMMODE -m $MEM_MB"
for r in $(seq 1 "$RUNS"); do
  for alg in avx512x32 avx512x16 avx2 sse scalar; do
    out=$WORK/out.txt; log=$WORK/log.txt
    if ! timeout "$TIMEOUT" "$WORK/weir-acl" -l "$CPU" --no-pci --file-prefix "$PREFIX" \
        --force-max-simd-bitwidth=512 --log-level=lib.acl:debug -m "$MEM_MB" $MEMMODE -- \
        --rulesf="$RULES" --tracef="$TRACE" --rulenum="$NRULES" --tracenum="$NTRACES" \
        --iter="$ITER" --alg="$alg" --resultf="$WORK/answers.txt" 2> "$log" > "$out"; then
      if grep -q "failed to setup $alg method" "$log" "$out"; then echo "run $r $alg: not supported here"; continue; fi
      echo "run $r $alg: failed:"; tail -3 "$log" "$out"; continue
    fi
    pps=$(grep -o '[0-9.]* pkt/sec' "$out" | awk '{print $1}')
    build=$(awk '$1 == "build_ms" {print $2; exit}' "$out")
    mem=$(awk '/runtime memory footprint/{f=1} f && $1 == "total:" {printf "%.2f", $2 / 1048576; exit}' "$log")
    echo "run $r $alg: $(awk -v p="$pps" 'BEGIN{printf "%.2f", 1e9 / p}') ns/pkt ($pps pkt/s), build ${build} ms, runtime ${mem} MiB"
  done
done
