#!/usr/bin/env bash
# Build the libcni-based CNI test driver (control/tests/cni/driver) offline,
# from Debian 12's packaged sources. No network access, no Go module proxy.
#
#   control/tests/cni/build.sh [OUTPUT]     (default: <target dir>/cni-driver)
#
# Needs: golang-go, golang-github-appc-cni-dev
#   apt-get install -y golang-go golang-github-appc-cni-dev
# Running the driver against real plugins also wants containernetworking-plugins.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-${CARGO_TARGET_DIR:-$root/target}/cni-driver}"

gopath=/usr/share/gocode
libcni_src="$gopath/src/github.com/containernetworking/cni/libcni"

missing=()
for pkg in golang-go golang-github-appc-cni-dev; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "build.sh: missing Debian package(s): ${missing[*]}" >&2
    echo "build.sh: install with: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: 'go' not on PATH although golang-go is installed (expected /usr/bin/go)" >&2
    exit 1
fi
if [[ ! -f "$libcni_src/api.go" ]]; then
    echo "build.sh: libcni sources not found at $libcni_src (golang-github-appc-cni-dev broken?)" >&2
    exit 1
fi

libcni_version="$(dpkg-query -W -f='${Version}' golang-github-appc-cni-dev)"

mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

# GOPATH mode against the packaged sources: the Debian package installs libcni
# under /usr/share/gocode/src and nothing needs resolving or downloading.
# The build cache lives next to the output unless the caller chose one, so the
# script works with HOME unset (CI) and leaves nothing elsewhere.
export GO111MODULE=off
export GOPATH="$gopath"
export GOFLAGS=
export GOPROXY=off
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOCACHE="${GOCACHE:-$(dirname "$out")/.cni-driver-gocache}"

cd "$here/driver"
go build -trimpath -o "$out.tmp" \
    -ldflags "-s -w -X main.libcniVersion=$libcni_version" .
mv -f "$out.tmp" "$out"
echo "build.sh: built $out ($(go version | awk '{print $3}'), libcni $libcni_version)" >&2
