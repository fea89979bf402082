# Shared helpers for weir's scripts. Sourced, not run.
set -euo pipefail

WEIR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$WEIR_ROOT"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "weir: '$*' needs root and sudo is not installed; run this script as root" >&2; return 1
  fi
}

# ensure_apt PACKAGE... : installs the Debian packages that are missing (idempotent).
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    # Exactly what is asked for (no Recommends: a kernel image is not what a test needs);
    # the check after installing proves nothing the run uses was left out. One retry: a
    # mirror or a resolver can fail for a moment.
    local attempt
    for attempt in 1 2; do
      if as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
          --no-install-recommends "${missing[@]}" >/dev/null; then
        return 0
      fi
      [ "$attempt" = 2 ] || { say "apt-get failed; retrying in 10 s"; sleep 10; }
    done
    echo "weir: could not install the Debian packages ${missing[*]} (see apt-get's errors above)" >&2
    return 1
  fi
}

# Every external program that weir's scripts, tests, benchmarks and demo run, with the Debian
# package that provides it on Debian 12. A path (starting with /) stands for a file that is
# not a program on PATH (a CNI plugin, a Go library's sources). perf/src/tools.rs holds the
# same table for weir-bench's own errors; a unit test there keeps the two in step.
declare -gA WEIR_PACKAGE_OF=(
  # build
  [cc]=build-essential
  [make]=build-essential
  [pkg-config]=pkg-config
  [python3]=python3
  [/usr/lib/python3.11/ensurepip/__init__.py]=python3.11-venv
  # network namespaces, interfaces, traffic
  [ip]=iproute2
  [ethtool]=ethtool
  [ping]=iputils-ping
  [iperf3]=iperf3
  [nft]=nftables
  [iptables-save]=iptables
  [iptables-nft-restore]=iptables
  [iptables-legacy-restore]=iptables
  [iptables-legacy]=iptables
  [tcpdump]=tcpdump
  [nsenter]=util-linux
  [prlimit]=util-linux
  [taskset]=util-linux
  [mount]=mount
  [umount]=mount
  [stdbuf]=coreutils
  [sysctl]=procps
  [kill]=procps
  [pkill]=procps
  # WireGuard peer
  [wireguard-go]=wireguard-go
  [wg]=wireguard-tools
  # CNI: libcni driver built with Go from Debian's sources, Debian's reference plugins
  [go]=golang-go
  [/usr/share/gocode/src/github.com/containernetworking/cni/libcni/api.go]=golang-github-appc-cni-dev
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [/usr/lib/cni/host-local]=containernetworking-plugins
  [/usr/lib/cni/portmap]=containernetworking-plugins
  [/usr/lib/cni/bandwidth]=containernetworking-plugins
  # A real container runtime (control/tests/containerd.rs): containerd with its `ctr` and runc
  # shim, runc, and the static busybox the test builds its image from (not on PATH: a file)
  [containerd]=containerd
  [ctr]=containerd
  [containerd-shim-runc-v2]=containerd
  [runc]=runc
  [/bin/busybox]=busybox-static
  [sha256sum]=coreutils
  [tar]=tar
  # DPDK anchors: the test tools are in dpdk-dev, not in dpdk (runtime libraries only)
  [dpdk-testpmd]=dpdk-dev
  [dpdk-test-fib]=dpdk-dev
  [dpdk-test-acl]=dpdk-dev
  # the rte_acl anchor of `weir-bench policy`, built at run time (cc, pkg-config libdpdk)
  [/usr/include/dpdk/rte_acl.h]=dpdk-dev
  # manifests
  [kubectl]=kubernetes-client
)

# What each purpose runs. A script names the purposes it serves; it installs their packages
# and checks every program before it starts anything long.
WEIR_PROGRAMS_BUILD=(cc make pkg-config)
WEIR_PROGRAMS_SCENARIO=(ip ethtool ping iperf3 nft iptables-save tcpdump nsenter prlimit taskset mount umount
  stdbuf sysctl kill pkill wireguard-go wg go
  /usr/share/gocode/src/github.com/containernetworking/cni/libcni/api.go
  /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap /usr/lib/cni/bandwidth
  containerd ctr containerd-shim-runc-v2 runc /bin/busybox sha256sum tar)
WEIR_PROGRAMS_ANCHORS=(dpdk-testpmd dpdk-test-fib dpdk-test-acl /usr/include/dpdk/rte_acl.h cc pkg-config ip iperf3 nft iptables-nft-restore iptables-legacy-restore iptables-legacy wireguard-go wg go
  prlimit taskset stdbuf /usr/share/gocode/src/github.com/containernetworking/cni/libcni/api.go
  /usr/lib/cni/bridge /usr/lib/cni/host-local)
WEIR_PROGRAMS_MANIFESTS=(python3 /usr/lib/python3.11/ensurepip/__init__.py kubectl)
WEIR_PROGRAMS_DEMO=(ip iperf3 nsenter)

# program_present PROGRAM : whether PROGRAM (a name on PATH, or a path) is there.
program_present() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) type -P "$1" >/dev/null 2>&1 ;;
  esac
}

# ensure_programs PROGRAM... : installs the Debian packages of the programs that are missing,
# then checks that every one is there, failing at once with the package that should hold it.
ensure_programs() {
  local pkgs=() p
  for p in "$@"; do
    if [ -z "${WEIR_PACKAGE_OF[$p]:-}" ]; then
      echo "weir: scripts/lib.sh does not say which package provides '$p' (add it to WEIR_PACKAGE_OF)" >&2
      return 1
    fi
    program_present "$p" || pkgs+=("${WEIR_PACKAGE_OF[$p]}")
  done
  if [ ${#pkgs[@]} -gt 0 ]; then
    # shellcheck disable=SC2046
    ensure_apt $(printf '%s\n' "${pkgs[@]}" | sort -u)
  fi
  check_programs "$@"
}

# check_programs PROGRAM... : prints each program with its package and where it was found;
# fails (after listing all of them) if any is missing.
check_programs() {
  local p where missing=0
  declare -A seen=()
  for p in "$@"; do
    [ -z "${seen[$p]:-}" ] || continue
    seen[$p]=1
    if program_present "$p"; then
      case "$p" in /*) where="$p" ;; *) where=$(type -P "$p") ;; esac
      printf '    %-72s %-28s %s\n' "$p" "${WEIR_PACKAGE_OF[$p]}" "$where" >&2
    else
      printf '    %-72s %-28s MISSING\n' "$p" "${WEIR_PACKAGE_OF[$p]}" >&2
      missing=1
    fi
  done
  if [ "$missing" -ne 0 ]; then
    echo "weir: a program above is MISSING: install the Debian package named beside it (apt-get install PACKAGE)" >&2
    return 1
  fi
}

# ensure_cargo_tool BINARY CRATE : installs a cargo subcommand when missing (idempotent).
ensure_cargo_tool() {
  if ! command -v "$1" >/dev/null 2>&1; then
    say "installing $2 with cargo"
    cargo install --locked --quiet "$2"
  fi
}

# require_rust : the one thing the scripts do not install. Fails at once without it.
require_rust() {
  local t
  for t in cargo rustc rustup; do
    command -v "$t" >/dev/null 2>&1 || {
      echo "weir: '$t' is not on PATH: install Rust with rustup (https://rustup.rs) first" >&2
      return 1
    }
  done
}

ensure_rust_components() {
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
}

# ensure_hugepages MIB : makes sure MIB MiB of free 2 MiB hugepages exist for the workers'
# UMEMs, raising vm.nr_hugepages by the shortfall. The old value is put back when the
# calling script exits, so the machine is left as it was found.
ensure_hugepages() {
  local need_pages=$(( ($1 + 1) / 2 ))
  local free old
  free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
  old=$(cat /proc/sys/vm/nr_hugepages)
  if [ "${free:-0}" -lt "$need_pages" ]; then
    local want=$(( old + need_pages - free ))
    say "reserving hugepages: vm.nr_hugepages $old -> $want (restored on exit)"
    echo "$want" | as_root tee /proc/sys/vm/nr_hugepages >/dev/null
    trap "echo $old | as_root tee /proc/sys/vm/nr_hugepages >/dev/null" EXIT
    free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
    if [ "${free:-0}" -lt "$need_pages" ]; then
      say "warning: only ${free:-0} hugepages free (memory fragmented?); UMEMs fall back to 4 KiB pages"
    fi
  fi
}
