#!/bin/bash
# The DPDK side of `weir-bench lpm`, by hand: dpdk-test-fib (Debian package `dpdk`) on a
# route file and a lookup file, with the flags weir-bench uses, every lookup variant.
#
# Usage: fib.sh [ROUTES IPS] [-6]    env: CPU (default 1), RUNS (default 3), MEM_MB
# Without files it has dpdk-test-fib write them: 100k routes and 10M lookups, IPv4 with
# its default depth distribution (the one weir-bench generates), IPv6 20% /48, 70% /64,
# 10% /128. Prints TSC cycles and ns per lookup for each variant and run.
# Hugepages: as root, raises vm.nr_hugepages for the run and restores it on exit.
set -euo pipefail
CPU=${CPU:-1}; RUNS=${RUNS:-3}
V6=""; for a in "$@"; do [ "$a" = "-6" ] && V6="-6"; done
FILES=(); for a in "$@"; do [ "$a" != "-6" ] && FILES+=("$a"); done
command -v dpdk-test-fib >/dev/null || { echo "dpdk-test-fib missing: apt-get install dpdk" >&2; exit 1; }
WORK=$(mktemp -d); PREFIX=weirfib$$
OLD_HP=$(cat /proc/sys/vm/nr_hugepages)
cleanup() {
  [ "$(id -u)" = 0 ] && echo "$OLD_HP" > /proc/sys/vm/nr_hugepages
  rm -rf "$WORK" "/var/run/dpdk/$PREFIX"
}
trap cleanup EXIT
if [ -n "$V6" ]; then
  STRUCT="-b trie -e 4 -g 1000000"; VARIANTS="s v"; MEM_MB=${MEM_MB:-1400}
  DIST="48:20%,64:70%,128:10%"
else
  STRUCT="-b dir -e 4 -g 65536"; VARIANTS="s1 s2 s3 v"; MEM_MB=${MEM_MB:-400}
  DIST="0:0"
fi
EAL=(-l "$CPU" --no-pci --file-prefix "$PREFIX" --force-max-simd-bitwidth=512 -m "$MEM_MB")
if [ ${#FILES[@]} -ge 2 ]; then
  ROUTES=${FILES[0]}; IPS=${FILES[1]}
else
  ROUTES=$WORK/routes.txt; IPS=$WORK/ips.txt
  dpdk-test-fib "${EAL[@]}" --no-huge -- $V6 -n 100000 -l 10000000 -d "$DIST" \
    -w "$ROUTES" -u "$IPS" > "$WORK/gen.txt" 2>&1
fi
NEED=$(( (MEM_MB + 1) / 2 ))
FREE=$(awk '/HugePages_Free/{print $2}' /proc/meminfo)
if [ "$FREE" -lt "$NEED" ] && [ "$(id -u)" = 0 ]; then
  echo $(( OLD_HP + NEED - FREE )) > /proc/sys/vm/nr_hugepages
  FREE=$(awk '/HugePages_Free/{print $2}' /proc/meminfo)
fi
if [ "$FREE" -ge "$NEED" ]; then MEMMODE=--in-memory; else MEMMODE=--no-huge; fi
echo "# $ROUTES, $IPS, CPU $CPU, $MEMMODE"
TSC_MHZ=$(awk '/cpu MHz/{print $4; exit}' /proc/cpuinfo)
for r in $(seq 1 "$RUNS"); do
  for v in $VARIANTS; do
    out=$(timeout 300 dpdk-test-fib "${EAL[@]}" $MEMMODE -- $V6 -f "$ROUTES" -t "$IPS" \
      $STRUCT -v "$v" 2>&1) || { echo "variant $v failed:"; echo "$out" | tail -5; continue; }
    c=$(echo "$out" | awk '/AVG FIB lookup/{print $4}')
    echo "run $r variant $v: $c cycles = $(awk -v c="$c" -v m="$TSC_MHZ" 'BEGIN{printf "%.2f", c*1000/m}') ns"
  done
done
