#!/bin/sh
# test_integrity.sh - nothing wrong reaches a guest through memsnapd: a build is
# paused into a file:// store, one byte of a stored object is changed (or the
# object cut short), the daemon is restarted on an empty cache and the build is
# resumed cold. The resume must fail with a clear error (the guest never runs
# on wrong bytes), memsnap_integrity_failures_total{object} must count it, and
# `memsnap build verify` must name the object. Before checksums the flipped
# byte in the plain diff resumed and the guest found 1 mismatched page.
# Objects: the plain diff, a zstd frame, the snapfile, a truncated diff.
# The daemon runs with the default guest_timeout (120 s): a bad byte must end
# the resume at once (the page server's session failure ends the sandbox's
# wait), answered 422 with the mismatch named, counted once. Before, the guest
# stayed blocked until guest_timeout and the answer was a 504 timeout.
# Prints "integrity: injected N, detected N, reached a guest 0".
#   test_integrity.sh MEMSNAPD MEMSNAP [proc|kvm]
set -u
memsnapd=${1:?usage: test_integrity.sh MEMSNAPD MEMSNAP [BACKEND]}
memsnap=${2:?usage: test_integrity.sh MEMSNAPD MEMSNAP [BACKEND]}
backend=${3:-proc}
if [ "$backend" = kvm ] && ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
	echo "SKIP: /dev/kvm does not open here"
	exit 77
fi
command -v jq >/dev/null || { echo "FAIL: jq is missing (scripts/deps.sh)"; exit 1; }
tmp=$(mktemp -d /tmp/msd-integrity.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do kill -KILL "$p" 2>/dev/null; done
	[ -n "${KEEP:-}" ] || rm -rf "$tmp" # KEEP=1: leave the logs for a look
}
trap cleanup EXIT
. "$(dirname "$0")/../expect.sh"
store="$tmp/store"
mkdir -p "$store"
sock="$tmp/api.sock"
export MEMSNAP_SOCKET="$sock"
injected=0 detected=0 reached=0

# config COMPRESS: the daemon's config file
config() {
	cat >"$tmp/memsnapd.conf" <<EOF
socket = $sock
run_dir = $tmp/run
cache_dir = $tmp/cache
store = file://$store
backend = $backend
compress = $1
log_level = info
EOF
}
start_daemon() {
	name=$1
	"$memsnapd" --config "$tmp/memsnapd.conf" 2>"$tmp/$name.log" &
	daemon=$!
	pids="$pids $daemon"
	tries=0
	until curl -s --unix-socket "$sock" -o /dev/null http://d/healthz; do
		kill -0 "$daemon" 2>/dev/null || { bad "$name: memsnapd exited at start"; return 1; }
		tries=$((tries + 1))
		[ $tries -lt 600 ] || { bad "$name: no answer"; return 1; }
		sleep 0.1
	done
}
stop_daemon() {
	kill -TERM "$daemon"
	wait "$daemon"
}
api() {
	if [ $# -ge 3 ]; then
		code=$(curl -s --unix-socket "$sock" -X "$1" -o "$tmp/body" -w '%{http_code}' \
			-H 'Content-Type: application/json' --data-binary "$3" "http://d$2")
	else
		code=$(curl -s --unix-socket "$sock" -X "$1" -o "$tmp/body" -w '%{http_code}' "http://d$2")
	fi
}
field() { jq -r "$1" "$tmp/body" 2>/dev/null; }
wait_published() {
	tries=0
	while :; do
		api GET "/v1/builds/$1"
		s=$(field .status)
		[ "$s" = published ] && return 0
		[ "$s" = failed ] && { bad "build $1 failed: $(cat "$tmp/body")"; return 1; }
		tries=$((tries + 1))
		[ $tries -lt 3000 ] || { bad "build $1 never published ($s)"; return 1; }
		sleep 0.1
	done
}
# paused_build NAME SEED: a fresh sandbox filled with SEED, paused; $build, published
paused_build() {
	start_daemon "$1" || exit 1
	api POST /v1/sandboxes "{\"guest\":\"pattern\",\"mem_mib\":16,\"exec\":{\"command\":\"fill\",\"arg0\":$2,\"arg1\":1}}"
	expect "$1: start" 201 "$code"
	sid=$(field .id)
	api POST "/v1/sandboxes/$sid/pause"
	expect "$1: pause" 200 "$code"
	build=$(field .build_id)
	wait_published "$build" && ok
	stop_daemon
}
# cold_resume NAME SEED: restart on an empty cache, resume $build cold with verify
cold_resume() {
	start_daemon "$1" || exit 1
	t0=$(date +%s%N)
	api POST /v1/sandboxes "{\"build_id\":\"$build\",\"exec\":{\"command\":\"verify\",\"arg0\":$2,\"arg1\":1}}"
	elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
	echo "$1: resume answered $code in $elapsed_ms ms"
	result=$(field .report.result0)
	create_code=$code
	cp "$tmp/body" "$tmp/$1.create"
	api GET /metrics
	cp "$tmp/body" "$tmp/$1.metrics"
	stop_daemon
	code=$create_code
}
# failures NAME OBJECT: memsnap_integrity_failures_total{object} in NAME's scrape
failures() {
	sed -n "s/^memsnap_integrity_failures_total{object=\"$2\"} //p" "$tmp/$1.metrics"
}
# flip KEY OFFSET: one bit of one byte of a stored object
flip() {
	python3 -c 'import sys
p, o = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(o); b = f.read(1); f.seek(o); f.write(bytes([b[0] ^ 0x20]))' "$store/$1" "$2"
	injected=$((injected + 1))
}
# corrupted NAME SEED OBJECT KIND: the cold resume after an injection fails clearly
corrupted() {
	cold_resume "$1" "$2"
	resume_code=$code
	if [ "$(echo "$resume_code" | cut -c1)" = 2 ]; then
		# the sandbox ran: it must not have been given one wrong byte
		[ "$result" = 0 ] || reached=$((reached + 1))
		bad "$1: a corrupted $3 resumed (verify: $result mismatched pages)"
	else
		detected=$((detected + 1))
		ok
	fi
	# at once and with the reason (the default guest_timeout is 120 s)
	expect "$1: the answer is 422" 422 "$resume_code"
	[ "$elapsed_ms" -lt 15000 ] && ok || bad "$1: the error took $elapsed_ms ms"
	msg=$(jq -r .message "$tmp/$1.create" 2>/dev/null)
	case "$3:$msg" in
	snapfile:*"checksum mismatch"*) ok ;; # read before the VM: no page server involved
	*:*"checksum mismatch in $build/$3 at offset"*) ok ;;
	*) bad "$1: the answer does not name the mismatch in $build/$3: $msg" ;;
	esac
	grep -q "checksum" "$tmp/$1.log" && grep -q "$build/$3" "$tmp/$1.log" && ok ||
		bad "$1: the log does not name $build/$3 and its checksum"
	n=$(failures "$1" "$4")
	[ "${n:-0}" -ge 1 ] && ok || bad "$1: memsnap_integrity_failures_total{object=\"$4\"} is '${n:-}'"
	"$memsnap" build verify "$build" --store "file://$store" >"$tmp/$1.verify" 2>&1
	expect "$1: build verify exit" 1 $?
	grep -Eq "^$build +$3 +[0-9]+ +bad" "$tmp/$1.verify" && ok ||
		{ bad "$1: build verify does not name $3 bad"; sed 's/^/  | /' "$tmp/$1.verify"; }
}

### the plain diff (the case of issue 15)
config none
paused_build A 7
"$memsnap" build verify "$build" --store "file://$store" >"$tmp/A.verify" 2>&1
expect "A: build verify of a good build" 0 $?
grep -Eq "^$build +memfile +[0-9]+ +ok" "$tmp/A.verify" && ok || bad "A: verify lists memfile ok"
grep -Eq "^$build +checksums +[0-9]+ +ok" "$tmp/A.verify" && ok || bad "A: verify lists the table"
cold_resume A1 7
expect "A1: control cold resume" 201 "$code"
expect "A1: control verifies" 0 "$result"
expect "A1: nothing counted" 0 "$(failures A1 memfile)"
flip "$build/memfile" $((5 * 4096 + 123))
corrupted A2 7 memfile memfile
# one mismatch is one count (not one per fault-path retry and fetch)
expect "A2: the mismatch is counted once" 1 "$(failures A2 memfile)"

### the snapfile of the same build
flip "$build/memfile" $((5 * 4096 + 123))
injected=$((injected - 1)) # put back, not a new injection
flip "$build/snapfile" 40
corrupted B 7 snapfile snapfile
flip "$build/snapfile" 40
injected=$((injected - 1))

### a truncated diff
size=$(stat -c %s "$store/$build/memfile")
truncate -s $((size - 4096)) "$store/$build/memfile"
injected=$((injected + 1))
corrupted C 7 memfile memfile

### a zstd frame
config zstd
paused_build D 11
size=$(stat -c %s "$store/$build/memfile.zstd")
flip "$build/memfile.zstd" $((size / 2))
corrupted D1 11 memfile.zstd memfile

echo "integrity: injected $injected, detected $detected, reached a guest $reached"
[ "$reached" -eq 0 ] && [ "$detected" -eq "$injected" ] || bad "injected, detected and reached do not add up"
echo "test_integrity: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
