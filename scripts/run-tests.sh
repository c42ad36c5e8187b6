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

python3 "$root/scripts/test-summary.py" "$build/meson-logs/testlog.json" || rc=1
exit $rc
