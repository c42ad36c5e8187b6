#!/bin/sh
# Runs the meson test suite of one build directory and prints a closing line
# "N passed, N failed, N skipped". Starts the real S3 test server (Ceph RGW)
# first when the suite needs it, and stops it afterwards.
#   scripts/run-tests.sh BUILD_DIR [meson test args...]
set -u
build=${1:?usage: run-tests.sh BUILD_DIR [meson test args]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=${JOBS:-$(nproc)}

# The 2 MiB page-server tests need huge pages: reserve a few when we may (root),
# and give back what we took afterwards.
hugepages_before=""
hp=/proc/sys/vm/nr_hugepages
if [ "$(id -u)" -eq 0 ] && [ -w "$hp" ] && [ "$(cat "$hp")" -lt 32 ]; then
	hugepages_before=$(cat "$hp")
	echo 32 >"$hp" 2>/dev/null || hugepages_before=""
fi

rgw_dir=""
if [ -x "$root/scripts/rgw.sh" ] && [ -z "${MEMSNAP_S3_ENDPOINT:-}" ]; then
	rgw_dir=$(mktemp -d /tmp/memsnap-rgw.XXXXXX)
	if env_out=$("$root/scripts/rgw.sh" start "$rgw_dir"); then
		eval "$env_out"
		export MEMSNAP_S3_ENDPOINT MEMSNAP_S3_ACCESS_KEY MEMSNAP_S3_SECRET_KEY MEMSNAP_S3_REGION
	else
		echo "run-tests: the S3 test server did not start; S3 tests will fail" >&2
	fi
fi

meson test -C "$build" --print-errorlogs --num-processes "$jobs" "$@"
rc=$?

if [ -n "$rgw_dir" ]; then
	"$root/scripts/rgw.sh" stop "$rgw_dir" >/dev/null 2>&1
	rm -rf "$rgw_dir"
fi

[ -n "$hugepages_before" ] && echo "$hugepages_before" >"$hp" 2>/dev/null

python3 "$root/scripts/test-summary.py" "$build/meson-logs/testlog.json" || rc=1
exit $rc
