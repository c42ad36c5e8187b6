#!/bin/sh
# Install every Debian package that memsnap's build, tests, benchmarks and demo need.
# Idempotent: does nothing (no apt-get call at all) when everything is present.
#   scripts/deps.sh          build + tests + demo (including the S3 test server)
#   scripts/deps.sh --build  only what the build needs
set -eu

BUILD_PKGS="gcc make pkg-config meson ninja-build clang-format
 libcmocka-dev libroaring-dev liblz4-dev libzstd-dev libxxhash-dev libcjson-dev
 libcurl4-openssl-dev libmicrohttpd-dev libgnutls28-dev uuid-dev libssl-dev
 libsystemd-dev"
TEST_PKGS="clang-14 libfuzzer-14-dev libclang-rt-14-dev curl openssl
 radosgw ceph-mon ceph-osd ceph-common uuid-runtime prometheus iproute2 procps jq socat
 dpkg-dev debhelper python3-yaml systemd-container python3-cryptography"

want="$BUILD_PKGS"
[ "${1:-}" = "--build" ] || want="$want $TEST_PKGS"

missing=""
for p in $want; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Update the lists only when an install from the current lists fails.
if ! $SUDO apt-get install -y -q --no-install-recommends $missing; then
	$SUDO apt-get update -q
	$SUDO apt-get install -y -q --no-install-recommends $missing
fi
