#!/usr/bin/env bash
# Proves the README's test command on a fresh Debian 12 with Rust, whatever this machine
# already has installed: builds a minimal Debian 12 root with debootstrap (minbase, plus
# ca-certificates and curl, which a machine that installed Rust with rustup has), clones
# this repository's HEAD into it, gives it this machine's Rust toolchain (rustup's own
# files, read-only) and a new, empty CARGO_HOME, and runs the command inside it:
#
#   bash scripts/fresh-debian.sh                  # runs `bash scripts/test.sh` in the root
#   bash scripts/fresh-debian.sh bash scripts/demo.sh
#
# The root shares this machine's kernel and network namespace, as a fresh machine's root
# user would (the suite's scenario tests build their own namespaces); it runs in a private
# mount namespace, so every mount it makes goes when it ends. The pristine root is kept as a
# tarball under /var/tmp (WEIR_FRESH_CACHE) and unpacked anew for every run; the run's root
# is removed afterwards unless WEIR_FRESH_KEEP=1. Needs root. Output: the command's, with
# this script's steps prefixed by ==>; the exit status is the command's.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "fresh-debian.sh: run as root (it builds a chroot)" >&2; exit 1; }
require_rust
ensure_apt debootstrap git

cache=${WEIR_FRESH_CACHE:-/var/tmp/weir-debian12-minbase.tar}
root=${WEIR_FRESH_ROOT:-/var/tmp/weir-fresh-$$}
mirror=${WEIR_FRESH_MIRROR:-http://deb.debian.org/debian}
cmd=("$@")
[ ${#cmd[@]} -gt 0 ] || cmd=(bash scripts/test.sh)

if [ ! -s "$cache" ]; then
  say "debootstrap: a minimal Debian 12 (bookworm) root from $mirror"
  base="$cache.d.$$"
  rm -rf "$base"
  debootstrap --variant=minbase --include=ca-certificates,curl bookworm "$base" "$mirror" \
    >"$cache.log" 2>&1 || { tail -n 20 "$cache.log" >&2; rm -rf "$base"; exit 1; }
  tar -C "$base" -cf "$cache.tmp" .
  mv "$cache.tmp" "$cache"
  rm -rf "$base"
fi

cleanup() {
  if [ "${WEIR_FRESH_KEEP:-0}" = 1 ]; then
    say "kept the root at $root"
  else
    rm -rf --one-file-system "$root"
  fi
}
trap cleanup EXIT

say "unpacking a pristine root at $root"
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$cache"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The network's trust anchors (a network that inspects TLS has its own CA in this machine's
# bundle): the root gets this machine's bundle, and the variables that point tools at it.
cert_env=()
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  for v in SSL_CERT_FILE CURL_CA_BUNDLE REQUESTS_CA_BUNDLE PIP_CERT GIT_SSL_CAINFO; do
    [ "${!v:-}" = /etc/ssl/certs/ca-certificates.crt ] && cert_env+=("$v=${!v}")
  done
fi

say "cloning $(git -C "$WEIR_ROOT" rev-parse --short HEAD) into the root (committed work only)"
git clone --quiet --no-hardlinks "$WEIR_ROOT" "$root/weir"

# Rust as rustup installs it: the toolchains under RUSTUP_HOME (this machine's, read-only),
# and a CARGO_HOME whose bin/ holds only rustup's proxies (no cargo-fuzz, no registry cache).
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
rustup_bin=$(command -v rustup)
mkdir -p "$root/root/.rustup" "$root/root/.cargo/bin"
cp "$rustup_bin" "$root/root/.cargo/bin/rustup"
for proxy in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
  ln -f "$root/root/.cargo/bin/rustup" "$root/root/.cargo/bin/$proxy"
done

say "running in the fresh root: ${cmd[*]}"
set +e
unshare --mount --propagation private -- bash -euc '
  root=$1; rustup_home=$2; ncert=$3; shift 3
  certs=("${@:1:$ncert}"); shift "$ncert"
  mount --bind "$root" "$root"          # ip netns exec wants / to be a mount point
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  # The cgroup hierarchy, mounted by systemd on a booted machine (runc needs it).
  mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs tmpfs "$root/run"
  mount -t tmpfs tmpfs "$root/tmp"
  mount --bind -o ro "$rustup_home" "$root/root/.rustup"
  exec chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 "${certs[@]}" \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /weir && exec \"\$@\"" cmd "$@"
' fresh "$root" "$rustup_home" "${#cert_env[@]}" "${cert_env[@]}" "${cmd[@]}"
status=$?
set -e
say "the command in the fresh root exited with status $status"
exit "$status"
