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
