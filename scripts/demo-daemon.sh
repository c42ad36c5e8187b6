#!/bin/sh
# The demo through the node daemon (make demo-daemon):
#   scripts/demo-daemon.sh BUILD_DIR [MIB] [STALL_SECONDS]
# Starts memsnapd (local object store in a temp dir, every pause's dedup compare
# stalled STALL_SECONDS on purpose) and tells the story with the memsnap CLI:
# start a pattern sandbox -> pause -> resume warm while dedup is still stalled ->
# the guest verifies -> control resume of the same build once it is published ->
# pause again -> restart the daemon with an empty cache -> resume cold from the
# store -> verify. Then a table of the timings, and the daemon stops.
# STORE=s3: the object store is a throw-away local S3 server (scripts/rgw.sh).
set -eu
build=${1:-build}
mib=${2:-256}
stall=${3:-10}
memsnapd="$build/src/node/memsnapd"
memsnap="$build/src/cli/memsnap"
work=$(mktemp -d /tmp/memsnap-demo-daemon.XXXXXX)
daemon=""
rgw=""
cleanup() {
	[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	[ -n "$rgw" ] && "$(dirname "$0")/rgw.sh" stop "$work/rgw" >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
export MEMSNAP_SOCKET="$work/api.sock"
store_uri="file://$work/store"
if [ "${STORE:-file}" = s3 ]; then
	echo "starting a local S3 server (scripts/rgw.sh) ..."
	rgw=yes
	eval "$("$(dirname "$0")/rgw.sh" start "$work/rgw")"
	export MEMSNAP_S3_ENDPOINT AWS_ACCESS_KEY_ID="$MEMSNAP_S3_ACCESS_KEY" \
		AWS_SECRET_ACCESS_KEY="$MEMSNAP_S3_SECRET_KEY" AWS_REGION="$MEMSNAP_S3_REGION"
	store_uri="s3://memsnap-demo/builds"
fi
start() {
	"$memsnapd" --config /dev/null --socket "$MEMSNAP_SOCKET" --run-dir "$work/run" \
		--cache-dir "$work/cache" --store "$store_uri" --s3-create-bucket on --log-level warn \
		--test-stall-compare "${stall}s" 2>>"$work/memsnapd.log" &
	daemon=$!
	until "$memsnap" sandbox ls -q >/dev/null 2>&1; do
		kill -0 "$daemon" 2>/dev/null || { cat "$work/memsnapd.log"; exit 1; }
		sleep 0.1
	done
}
stop() {
	kill -TERM "$daemon"
	wait "$daemon"
	daemon=""
}
j() { jq -r "$1" "$work/out"; }
seed=4242
echo "memsnapd demo: $mib MiB pattern guest, dedup compare stalled ${stall}s per pause, store $store_uri"
start
echo "daemon: $(curl -s --unix-socket "$MEMSNAP_SOCKET" http://d/healthz | jq -c '{backend, flags}')"
"$memsnap" sandbox start --guest pattern --mem "$mib" --exec fill --seed $seed --epoch 1 --json >"$work/out"
id=$(j .id)
printf 'start:   sandbox %s filled its memory (%.1f ms)\n' "$id" "$(j .create_ms)"
"$memsnap" sandbox pause "$id" --json >"$work/out"
b1=$(j .build_id)
pause_ms=$(j .pause_ms)
printf 'pause:   build %s, resumable after %.2f ms\n' "$b1" "$pause_ms"
"$memsnap" sandbox resume "$id" --exec verify --seed $seed --epoch 1 --json >"$work/out"
race_ms=$(j .create_ms)
race_bad=$(j .report.result0)
status=$("$memsnap" build show "$b1" --json | jq -r .status)
printf 'warm:    resumed while dedup is %s: %.1f ms, the guest found %s mismatched pages\n' \
	"$status" "$race_ms" "$race_bad"
printf '         (waiting for the stalled dedup, drain and upload of %s ...)\n' "$b1"
until [ "$("$memsnap" build show "$b1" --json | jq -r .status)" = published ]; do sleep 0.2; done
"$memsnap" sandbox start --build "$b1" --exec verify --seed $seed --epoch 1 --json >"$work/out"
control_ms=$(j .create_ms)
control_bad=$(j .report.result0)
"$memsnap" sandbox rm -q "$(j .id)"
printf 'control: the same build, published, nothing in flight: %.1f ms, %s mismatched pages\n' \
	"$control_ms" "$control_bad"
"$memsnap" sandbox pause "$id" --json >"$work/out"
b2=$(j .build_id)
printf 'pause:   again, build %s (%.2f ms)\n' "$b2" "$(j .pause_ms)"
"$memsnap" build show "$b1" --json >"$work/b1"
printf 'restart: SIGTERM (uploads finish first), start again with an empty cache\n'
stop
start
"$memsnap" sandbox start --build "$b2" --exec verify --seed $seed --epoch 1 --json >"$work/out"
cold_ms=$(j .create_ms)
cold_bad=$(j .report.result0)
printf 'cold:    %s resumed from the store: %s, %.1f ms, %s mismatched pages\n' "$b2" \
	"$(j .start_type)" "$cold_ms" "$cold_bad"
d1=$("$memsnap" build show "$b1" --json | jq -r .diff_bytes)
d2=$("$memsnap" build show "$b2" --json | jq -r .diff_bytes)
stored=$((d1 + d2))
"$memsnap" build metadata "$b2"
stop
echo
echo "| step | result |"
echo "|---|---|"
printf '| pause (VM stopped -> resumable) | %.2f ms |\n' "$pause_ms"
printf '| warm resume during stalled dedup (+ verify %s MiB) | %.1f ms |\n' "$mib" "$race_ms"
printf '| control warm resume (+ verify) | %.1f ms |\n' "$control_ms"
printf '| race / control | %.2f |\n' "$(echo "$race_ms $control_ms" | awk '{print $1 / $2}')"
printf '| cold resume from the store (+ verify) | %.1f ms |\n' "$cold_ms"
printf '| dedup of the first pause (kept / written pages) | %s / %s |\n' \
	"$(jq -r .pages.kept "$work/b1")" "$(jq -r .pages.dirty "$work/b1")"
printf '| memory bytes stored (2 builds) | %s |\n' "$stored"
if [ "$race_bad" = 0 ] && [ "$control_bad" = 0 ] && [ "$cold_bad" = 0 ]; then
	echo "demo: ok, the guest verified all its memory: warm during dedup, warm, cold"
else
	echo "demo: FAILED: the guest found wrong memory"
	exit 1
fi
