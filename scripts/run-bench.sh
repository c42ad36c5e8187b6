#!/bin/sh
# Runs every benchmark program of a build (or only the ones named), then prints the table
# and writes BUILD/bench.json.
#   scripts/run-bench.sh BUILD_DIR [BENCH_NAME...]
set -eu
build=${1:?usage: run-bench.sh BUILD_DIR [BENCH_NAME...]}
shift
only=" $* "
root=$(cd "$(dirname "$0")/.." && pwd)
out="$build/bench.jsonl"
: > "$out"
export MEMSNAP_BENCH_OUT="$(cd "$build" && pwd)/bench.jsonl"

rgw_dir=""
if [ -x "$root/scripts/rgw.sh" ] && [ -z "${MEMSNAP_S3_ENDPOINT:-}" ]; then
	rgw_dir=$(mktemp -d /tmp/memsnap-rgw.XXXXXX)
	# bench_prefetch puts a 256 MiB whole-memory build per backend: room for them all
	if env_out=$(MEMSNAP_RGW_MEMSTORE_BYTES=${MEMSNAP_RGW_MEMSTORE_BYTES:-4294967296} \
		"$root/scripts/rgw.sh" start "$rgw_dir"); then
		eval "$env_out"
		export MEMSNAP_S3_ENDPOINT MEMSNAP_S3_ACCESS_KEY MEMSNAP_S3_SECRET_KEY MEMSNAP_S3_REGION
	fi
fi

rc=0
for b in $(find "$build/bench" -maxdepth 2 -type f -name 'bench_*' -perm -u+x | sort); do
	[ "$only" = "  " ] || case $only in *" $(basename "$b") "*) ;; *) continue ;; esac
	echo "bench: running $(basename "$b")" >&2
	"$b" || { echo "bench: $(basename "$b") failed" >&2; rc=1; }
done

if [ -n "$rgw_dir" ]; then
	"$root/scripts/rgw.sh" stop "$rgw_dir" >/dev/null 2>&1 || true
	rm -rf "$rgw_dir"
fi
python3 "$root/scripts/bench-table.py" "$out" "$build/bench.json"
exit $rc
