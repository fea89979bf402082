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
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# ensure_cargo_tool BINARY CRATE : installs a cargo subcommand when missing (idempotent).
ensure_cargo_tool() {
  if ! command -v "$1" >/dev/null 2>&1; then
    say "installing $2 with cargo"
    cargo install --locked --quiet "$2"
  fi
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
