#!/bin/sh
# test_daemon.sh - memsnapd as people run it: the real binary on a temp unix
# socket, a file:// store in a temp dir, the proc backend; driven with curl
# (every endpoint and error path, auth on TCP) and with the memsnap CLI
# (16 sandboxes paused and resumed in parallel, each guest verifying its
# memory). SIGTERM during an upload, then a restart: the build is published
# and resumes cold. promtool checks a live scrape.
#   test_daemon.sh MEMSNAPD MEMSNAP [proc|kvm] [auto|async|sync]
# The backend defaults to proc; kvm is skipped (77) where /dev/kvm does not open.
# The written-page tracker defaults to auto; sync runs everything under sync WP.
set -u
memsnapd=${1:?usage: test_daemon.sh MEMSNAPD MEMSNAP [BACKEND]}
memsnap=${2:?usage: test_daemon.sh MEMSNAPD MEMSNAP [BACKEND]}
backend=${3:-proc}
tracker=${4:-auto}
. "$(dirname "$0")/../expect.sh"
. "$(dirname "$0")/daemon_lib.sh" # api, field, wait_healthz
skip_without_kvm "$backend"
tmp=$(mktemp -d /tmp/msd-test.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do kill -KILL "$p" 2>/dev/null; done
	umount "$tmp/small-cache" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
store="$tmp/store"
mkdir -p "$store"
cat >"$tmp/memsnapd.conf" <<EOF
# memsnapd for the tests
socket = $tmp/api.sock
run_dir = $tmp/run
cache_dir = $tmp/cache   # emptied at start
store = file://$store
backend = $backend
tracker = $tracker
log_level = warn
EOF
sock="$tmp/api.sock"
export MEMSNAP_SOCKET="$sock"

# start_daemon NAME [FLAGS...]: starts memsnapd, waits until /healthz answers
start_daemon() {
	name=$1
	shift
	"$memsnapd" --config "$tmp/memsnapd.conf" "$@" 2>"$tmp/$name.log" &
	daemon=$!
	pids="$pids $daemon"
	wait_healthz "$name" "$daemon" "$tmp/$name.log" || return 1
	ok
}
# stop_daemon: SIGTERM, wait; $? is memsnapd's exit status
stop_daemon() {
	kill -TERM "$daemon"
	wait "$daemon"
}
# api_expect NAME WANT_STATUS WANT_ERROR METHOD PATH [BODY]
api_error() {
	name=$1 want=$2 err=$3
	shift 3
	api "$@"
	expect "$name: status" "$want" "$code"
	expect "$name: error" "$err" "$(jq -r .error "$tmp/body" 2>/dev/null)"
	if [ -n "$(jq -r '.message // empty' "$tmp/body" 2>/dev/null)" ]; then ok; else
		bad "$name: no message"
	fi
}
# wait_status BUILD STATUS: polls GET /v1/builds/BUILD until it says STATUS
wait_status() {
	tries=0
	while :; do
		api GET "/v1/builds/$1"
		s=$(field .status)
		[ "$s" = "$2" ] && { ok; return 0; }
		[ "$s" = failed ] && { bad "build $1 failed: $(cat "$tmp/body")"; return 1; }
		tries=$((tries + 1))
		[ $tries -lt 3000 ] || { bad "build $1 never became $2 ($s)"; return 1; }
		sleep 0.1
	done
}

### configuration and --help
"$memsnapd" --help >"$tmp/help" 2>&1
expect "--help exit" 0 $?
"$memsnapd" --config "$tmp/memsnapd.conf" --print-config >"$tmp/effective"
expect "--print-config exit" 0 $?
for key in $(sed -n 's/^\([a-z_0-9]*\) = .*/\1/p' "$tmp/effective"); do
	flag=$(echo "$key" | tr _ -)
	env=$(echo "MEMSNAP_$key" | tr a-z A-Z)
	case $key in
	test_*) # test hooks stay out of --help (docs/daemon.md, "Test hooks")
		if grep -q -- "--$flag " "$tmp/help"; then bad "--help lists $key"; else ok; fi
		grep -q -- "--$flag" "$(dirname "$0")/../../docs/daemon.md" && ok ||
			bad "docs/daemon.md does not document --$flag" ;;
	*)
		if grep -q -- "--$flag " "$tmp/help" && grep -q "$env" "$tmp/help"; then ok; else
			bad "--help does not list $key"
		fi ;;
	esac
done
grep -q "default: 25h" "$tmp/help" && ok || bad "--help: template_ttl default"
expect "file value" "backend = $backend" "$(grep '^backend' "$tmp/effective")"
MEMSNAP_BACKEND=auto "$memsnapd" --config "$tmp/memsnapd.conf" --print-config >"$tmp/e2"
expect "env overrides file" "backend = auto" "$(grep '^backend' "$tmp/e2")"
MEMSNAP_BACKEND=auto "$memsnapd" --config "$tmp/memsnapd.conf" --backend kvm --print-config >"$tmp/e2"
expect "flag overrides env" "backend = kvm" "$(grep '^backend' "$tmp/e2")"
"$memsnapd" --config "$tmp/memsnapd.conf" --grace=90s --print-config >"$tmp/e2"
expect "--key=value" "grace = 90s" "$(grep '^grace' "$tmp/e2")"
printf 'socket = /x\nfrobnicate = 1\n' >"$tmp/badkey.conf"
"$memsnapd" --config "$tmp/badkey.conf" --print-config 2>"$tmp/err" >/dev/null
expect "unknown key in file" 2 $?
grep -q "badkey.conf:2: unknown option 'frobnicate'" "$tmp/err" && ok || bad "file:line reason: $(cat "$tmp/err")"
MEMSNAP_GRACE=soon "$memsnapd" --config "$tmp/memsnapd.conf" 2>"$tmp/err" >/dev/null
expect "bad env value" 2 $?
grep -q "MEMSNAP_GRACE" "$tmp/err" && ok || bad "env reason: $(cat "$tmp/err")"
"$memsnapd" --config "$tmp/memsnapd.conf" --no-such-flag 1 2>/dev/null
expect "unknown flag" 2 $?
"$memsnapd" --config "$tmp/missing.conf" 2>/dev/null
expect "missing explicit config" 2 $?
"$memsnapd" --config "$tmp/memsnapd.conf" --tcp-listen 127.0.0.1:0 2>"$tmp/err"
expect "tcp without a token" 1 $?
grep -q "needs a bearer token" "$tmp/err" && ok || bad "tcp token reason: $(cat "$tmp/err")"
MEMSNAP_TOKEN=x "$memsnapd" --config "$tmp/memsnapd.conf" --tcp-listen 0.0.0.0:0 2>"$tmp/err"
expect "tcp off loopback" 1 $?
grep -q "only 127.0.0.0/8" "$tmp/err" && ok || bad "tcp address reason: $(cat "$tmp/err")"
# a kernel with no written-page tracker (the probe told to report nothing): one clear line
"$memsnapd" --config "$tmp/memsnapd.conf" --test-tracker-probe-none on 2>"$tmp/err"
expect "no tracker: refused" 1 $?
[ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "no written-page tracker.*PAGEFAULT_FLAG_WP" "$tmp/err" &&
	ok || bad "no tracker reason: $(cat "$tmp/err")"
"$memsnapd" --config "$tmp/memsnapd.conf" --tracker fast 2>"$tmp/err"
expect "unknown tracker" 1 $?
grep -q "tracker fast: not auto, async or sync" "$tmp/err" && ok || bad "tracker reason: $(cat "$tmp/err")"

if [ -n "${MEMSNAP_SOURCE_ROOT:-}" ]; then
	"$memsnapd" --config "$MEMSNAP_SOURCE_ROOT/dist/memsnapd.conf" --print-config >/dev/null
	expect "dist/memsnapd.conf parses" 0 $?
fi
"$memsnapd" --config "$tmp/memsnapd.conf" --dedup off --print-config >"$tmp/out" 2>"$tmp/err"
expect "dedup off is taken" 0 $?
grep -q "^dedup = off" "$tmp/out" && ok || bad "dedup off not in the config: $(cat "$tmp/out")"

### daemon A: every endpoint, every error path, TCP auth, 16 in parallel
mkdir -p "$tmp/cache/leftover-dir"
echo stale >"$tmp/cache/leftover.memfile"
echo secret-token >"$tmp/token"
start_daemon A --tcp-listen 127.0.0.1:0 --token-file "$tmp/token" || exit 1
[ -z "$(ls -A "$tmp/cache" | grep -v '^.memsnapd.lock$')" ] && ok ||
	bad "leftovers in the cache dir: $(ls -A "$tmp/cache")"
"$memsnapd" --config "$tmp/memsnapd.conf" 2>"$tmp/err"
expect "second daemon on the socket" 1 $?
grep -q "another memsnapd uses it" "$tmp/err" && ok || bad "second daemon reason: $(cat "$tmp/err")"
"$memsnapd" --config "$tmp/memsnapd.conf" --cache-dir "$tmp/cache2" 2>"$tmp/err"
expect "second daemon, own cache, same socket" 1 $?
grep -q "another daemon answers on" "$tmp/err" && ok || bad "same socket reason: $(cat "$tmp/err")"
[ "$(stat -c %a "$sock")" = 600 ] && ok || bad "socket mode $(stat -c %a "$sock")"

api GET /healthz
expect "healthz" 200 "$code"
expect "healthz status" ok "$(field .status)"
expect "healthz backend" "$backend" "$(field .backend)"
case $tracker in
auto) [ "$(field .tracker.mode)" = async ] || [ "$(field .tracker.mode)" = sync ] ;;
*) [ "$(field .tracker.mode)" = "$tracker" ] ;;
esac && [ -n "$(field .tracker.why)" ] && ok || bad "healthz tracker: $(jq -c .tracker "$tmp/body")"

# routing and validation errors
api_error "unknown path" 404 not_found GET /v2/things
api_error "unknown sub-path" 404 not_found GET /v1/sandboxes/00000000-0000-0000-0000-000000000001/frob
api_error "wrong method" 405 method_not_allowed PUT /v1/sandboxes
api_error "wrong method on metrics" 405 method_not_allowed POST /metrics
api_error "create without body" 400 bad_request POST /v1/sandboxes
api_error "create bad json" 400 bad_request POST /v1/sandboxes '{"guest": "pattern"'
api_error "create trailing bytes" 400 bad_request POST /v1/sandboxes '{"guest":"pattern"} x'
api_error "create not an object" 400 bad_request POST /v1/sandboxes '["pattern"]'
api_error "create unknown field" 400 bad_request POST /v1/sandboxes '{"guest":"pattern","cpus":2}'
api_error "create bad guest" 400 bad_request POST /v1/sandboxes '{"guest":"doom"}'
api_error "create guest and build" 400 bad_request POST /v1/sandboxes \
	'{"guest":"pattern","build_id":"00000000-0000-0000-0000-000000000001"}'
api_error "create mem 0" 400 bad_request POST /v1/sandboxes '{"guest":"pattern","mem_mib":0}'
api_error "create mem fraction" 400 bad_request POST /v1/sandboxes '{"guest":"pattern","mem_mib":1.5}'
api_error "create mem string" 400 bad_request POST /v1/sandboxes '{"guest":"pattern","mem_mib":"8"}'
api_error "create bad build id" 400 bad_request POST /v1/sandboxes '{"build_id":"nope"}'
api_error "create bad exec" 400 bad_request POST /v1/sandboxes '{"guest":"pattern","exec":{"command":"dance"}}'
api_error "create exec negative" 400 bad_request POST /v1/sandboxes \
	'{"guest":"pattern","exec":{"command":"fill","arg0":-1}}'
api_error "create exec without command" 400 bad_request POST /v1/sandboxes '{"guest":"pattern","exec":{"arg0":1}}'
api_error "create from unknown build" 404 not_found POST /v1/sandboxes \
	'{"build_id":"00000000-0000-0000-0000-00000000beef"}'
head -c 70000 /dev/zero | tr '\0' ' ' >"$tmp/big"
code=$(curl -s --unix-socket "$sock" -o "$tmp/body" -w '%{http_code}' -X POST \
	--data-binary @"$tmp/big" http://d/v1/sandboxes)
expect "body too large" 413 "$code"
api_error "body on a GET" 400 bad_request GET /v1/sandboxes '{}'
api_error "malformed sandbox id" 400 bad_request GET /v1/sandboxes/not-a-uuid
api_error "nil sandbox id" 400 bad_request GET /v1/sandboxes/00000000-0000-0000-0000-000000000000
unknown=6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162
api_error "unknown sandbox get" 404 not_found GET "/v1/sandboxes/$unknown"
api_error "unknown sandbox delete" 404 not_found DELETE "/v1/sandboxes/$unknown"
api_error "unknown sandbox pause" 404 not_found POST "/v1/sandboxes/$unknown/pause"
api_error "unknown sandbox resume" 404 not_found POST "/v1/sandboxes/$unknown/resume"
api_error "unknown build" 404 not_found GET "/v1/builds/$unknown"
api_error "unknown build metadata" 404 not_found GET "/v1/builds/$unknown/scheduling-metadata"
api_error "malformed build id" 400 bad_request GET /v1/builds/xyz
api_error "resume with unknown field" 400 bad_request POST "/v1/sandboxes/$unknown/resume" '{"speed":9}'
api GET /v1/sandboxes
expect "nothing half-created" 0 "$(field '.sandboxes | length')"

# one sandbox through its whole life
api POST /v1/sandboxes '{"guest":"pattern","mem_mib":16,"exec":{"command":"fill","arg0":77,"arg1":1}}'
expect "create" 201 "$code"
id=$(field .id)
expect "create state" running "$(field .state)"
expect "create start_type" fresh "$(field .start_type)"
expect "create guest" pattern "$(field .guest)"
expect "create mem" 16 "$(field .mem_mib)"
api GET "/v1/sandboxes/$id"
expect "get" 200 "$code"
expect "get id" "$id" "$(field .id)"
api GET /v1/sandboxes
expect "list" 1 "$(field '.sandboxes | length')"
api_error "resume a running sandbox" 409 conflict POST "/v1/sandboxes/$id/resume"
api POST "/v1/sandboxes/$id/pause"
expect "pause" 200 "$code"
expect "pause state" paused "$(field .state)"
build=$(field .build_id)
case "$build" in ????????-????-????-????-????????????) ok ;; *) bad "pause build id '$build'" ;; esac
api_error "pause a paused sandbox" 409 conflict POST "/v1/sandboxes/$id/pause"
api GET "/v1/builds/$build/scheduling-metadata"
expect "metadata" 200 "$code"
expect "metadata build" "$build" "$(field .build_id)"
wait_status "$build" published
expect "build paused here" true "$(field .paused_here)"
expect "build mem" 16777216 "$(field .mem_bytes)"
expect "build kept = dirty (fresh fill)" "$(field .pages.dirty)" "$(field .pages.kept)"
[ "$(field .timings_ms.upload)" != null ] && ok || bad "no upload timing: $(cat "$tmp/body")"
[ -f "$store/$build/memfile.header" ] && ok || bad "no header in the store"
api GET "/v1/builds/$build/scheduling-metadata"
expect "metadata durable" false "$(field .pending)"
expect "metadata names the build" true "$(jq --arg b "$build" '.memfile.build_ids | index($b) != null' "$tmp/body")"
api POST "/v1/sandboxes/$id/resume" '{"exec":{"command":"verify","arg0":77,"arg1":1}}'
expect "resume" 200 "$code"
expect "resume warm" warm "$(field .start_type)"
expect "resume verify: 0 mismatches" 0 "$(field .report.result0)"
api POST "/v1/sandboxes/$id/resume"
expect "resume twice" 409 "$code"
# a wrong seed must be caught: the check can fail
api POST "/v1/sandboxes/$id/pause"
build2=$(field .build_id)
api POST "/v1/sandboxes/$id/resume" '{"exec":{"command":"verify","arg0":78,"arg1":1}}'
[ "$(field .report.result0)" -gt 0 ] && ok || bad "a wrong seed verified: $(cat "$tmp/body")"
api POST /v1/sandboxes "{\"build_id\":\"$build2\",\"exec\":{\"command\":\"verify\",\"arg0\":77,\"arg1\":1}}"
expect "create from a build" 201 "$code"
expect "create from a build: warm" warm "$(field .start_type)"
expect "create from a build: verified" 0 "$(field .report.result0)"
id2=$(field .id)
api GET "/v1/builds/$build2"
expect "child build names its parent" "$build" "$(field .parent_build_id)"
# every build's metadata.json reaches the store; a lazily resumed one carries the resume's
# first-touch trace (E2B's prefetch.memory), a fresh one none
wait_status "$build2" published
m1="$store/$build/metadata.json" m2="$store/$build2/metadata.json"
[ -f "$m1" ] && [ -f "$m2" ] && ok || bad "no metadata.json in the store"
expect "metadata guest" pattern "$(jq -r .guest "$m2")"
expect "metadata parent" "$build" "$(jq -r .parent_build_id "$m2")"
expect "fresh build: no trace" null "$(jq -c .prefetch "$m1")"
expect "trace block size" 4096 "$(jq .prefetch.memory.block_size "$m2")"
# (a 16 MiB verify faults once per 64 KiB block: 256 faults at least, neighbours not recorded)
[ "$(jq '.prefetch.memory.indices | length' "$m2")" -ge 256 ] && ok ||
	bad "trace too short: $(jq '.prefetch.memory.indices | length' "$m2")"
expect "trace: one access type per index" "$(jq '.prefetch.memory.indices | length' "$m2")" \
	"$(jq '.prefetch.memory.access_types | length' "$m2")"
expect "trace: each block once" true "$(jq '.prefetch.memory.indices | (unique | length) == length' "$m2")"
expect "trace: the verify reads" true "$(jq '[.prefetch.memory.access_types[] | select(. == "r")] | length > 0' "$m2")"
api DELETE "/v1/sandboxes/$id2"
expect "delete" 200 "$code"
expect "delete state" deleted "$(field .state)"
api_error "get deleted" 404 not_found GET "/v1/sandboxes/$id2"
api_error "delete twice" 404 not_found DELETE "/v1/sandboxes/$id2"

# TCP: the token is required
port=$(sed -n 's/.*tcp 127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/A.log")
[ -n "$port" ] && ok || bad "no TCP port in the log"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
expect "tcp without token" 401 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong-token' "http://127.0.0.1:$port/v1/sandboxes")
expect "tcp wrong token" 401 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer secret-token-and-more' "http://127.0.0.1:$port/v1/sandboxes")
expect "tcp token with a suffix" 401 "$code"
code=$(curl -s -o "$tmp/body" -w '%{http_code}' -H 'Authorization: Bearer secret-token' "http://127.0.0.1:$port/v1/sandboxes")
expect "tcp with token" 200 "$code"
expect "tcp sees the sandboxes" 1 "$(field '.sandboxes | length')"
MEMSNAP_TOKEN=secret-token "$memsnap" sandbox ls --url "http://127.0.0.1:$port" -q >"$tmp/out"
expect "cli over tcp" 0 $?
expect "cli over tcp lists" "$id" "$(cat "$tmp/out")"
MEMSNAP_TOKEN=nope "$memsnap" sandbox ls --url "http://127.0.0.1:$port" >/dev/null 2>&1
expect "cli over tcp, bad token" 6 $?
code=$(curl -s -o /dev/null -w '%{http_code}' "http://d/healthz" --unix-socket "$sock")
expect "unix needs no token" 200 "$code"

# the CLI: exit codes, --json, --help
for cmd in "sandbox start" "sandbox pause" "sandbox resume" "sandbox ls" "sandbox rm" \
	"build show" "build metadata"; do
	# shellcheck disable=SC2086
	"$memsnap" $cmd --help >"$tmp/out" 2>&1
	expect "$cmd --help" 0 $?
	grep -q "usage: memsnap $cmd" "$tmp/out" && ok || bad "$cmd --help usage line"
done
"$memsnap" sandbox start >/dev/null 2>&1
expect "cli start without a guest" 2 $?
"$memsnap" sandbox start --guest doom >/dev/null 2>&1
expect "cli bad guest (400)" 2 $?
"$memsnap" sandbox pause "$unknown" >/dev/null 2>&1
expect "cli pause unknown (404)" 3 $?
"$memsnap" sandbox resume "$id" >/dev/null 2>&1
expect "cli resume running (409)" 4 $?
"$memsnap" build show "$unknown" >/dev/null 2>&1
expect "cli build unknown (404)" 3 $?
"$memsnap" sandbox ls --socket "$tmp/nobody.sock" >/dev/null 2>&1
expect "cli no daemon" 5 $?
"$memsnap" build show "$build" --json >"$tmp/body"
expect "cli build --json" published "$(field .status)"
"$memsnap" build show "$build" >"$tmp/out"
grep -q "^status *published" "$tmp/out" && ok || bad "cli build show table"
"$memsnap" build metadata "$build" >"$tmp/out"
grep -q "$build" "$tmp/out" && ok || bad "cli build metadata lists the build"
"$memsnap" sandbox ls >"$tmp/out"
grep -q "^ID *STATE" "$tmp/out" && grep -q "$id" "$tmp/out" && ok || bad "cli ls table"
"$memsnap" sandbox rm "$id" -q
expect "cli rm" 0 $?

# 16 sandboxes, paused and resumed in parallel (twice), every guest verifying its memory
n=16
i=0
while [ $i -lt $n ]; do
	"$memsnap" sandbox start --guest pattern --mem 8 --exec fill --seed $((1000 + i)) \
		--epoch 1 -q >"$tmp/par.id.$i" 2>"$tmp/par.err.$i" &
	jobs_started="${jobs_started:-} $!"
	i=$((i + 1))
done
wait_all() { # the jobs started since the last wait_all (not the daemon)
	for job in $jobs_started; do wait "$job"; done
	jobs_started=""
}
wait_all
round() { # round I: pause, resume, verify, one sandbox
	sid=$(cat "$tmp/par.id.$1")
	"$memsnap" sandbox pause -q "$sid" >"$tmp/par.build.$1" 2>"$tmp/par.err.$1" &&
		"$memsnap" sandbox resume "$sid" --exec verify --seed $((1000 + $1)) --epoch 1 \
			>"$tmp/par.out.$1" 2>>"$tmp/par.err.$1"
	echo $? >"$tmp/par.rc.$1"
}
for r in 1 2; do
	i=0
	while [ $i -lt $n ]; do
		round $i &
		jobs_started="$jobs_started $!"
		i=$((i + 1))
	done
	wait_all
	good=0
	i=0
	while [ $i -lt $n ]; do
		if [ "$(cat "$tmp/par.rc.$i")" = 0 ] && grep -q "verified: no mismatched page" "$tmp/par.out.$i"; then
			good=$((good + 1))
		else
			sed 's/^/  | /' "$tmp/par.err.$i" "$tmp/par.out.$i"
		fi
		i=$((i + 1))
	done
	expect "round $r: $n sandboxes paused, resumed warm and verified in parallel" $n $good
done
api GET /v1/sandboxes
expect "16 running" $n "$(field '[.sandboxes[] | select(.state == "running")] | length')"

# metrics: a live scrape that promtool accepts, with what happened in it
api GET /metrics
expect "metrics" 200 "$code"
if promtool check metrics <"$tmp/body" >"$tmp/promtool" 2>&1; then ok; else
	bad "promtool check metrics"
	sed 's/^/  | /' "$tmp/promtool"
fi
for m in memsnap_sandbox_create_duration_seconds_count memsnap_snapshot_diff_ratio_count \
	memsnap_dedup_pages_total memsnap_pause_stage_duration_seconds_count \
	memsnap_pageserver_faults_total memsnap_diffstore_bytes memsnap_diffstore_entries \
	memsnap_diffstore_evictions_total memsnap_upload_bytes_total memsnap_upload_failures_total; do
	grep -q "^$m" "$tmp/body" && ok || bad "metric $m missing"
done
warm=$(sed -n 's/^memsnap_sandbox_create_duration_seconds_count{start_type="warm"} //p' "$tmp/body")
[ "${warm:-0}" -ge 33 ] && ok || bad "warm creates counted: ${warm:-none}"
faults=$(sed -n 's/^memsnap_pageserver_faults_total{result="source"} //p' "$tmp/body")
[ "${faults:-0}" -gt 0 ] && ok || bad "page-server pages counted: ${faults:-none}"
stop_daemon
expect "A: clean stop" 0 $?
[ ! -e "$sock" ] && ok || bad "the socket outlived the daemon"

### daemon B: a warm resume while the compare is stalled, then SIGTERM releases it
start_daemon B --test-stall-compare 600s || exit 1
api POST /v1/sandboxes '{"guest":"pattern","mem_mib":16,"exec":{"command":"fill","arg0":5,"arg1":2}}'
sid=$(field .id)
api POST "/v1/sandboxes/$sid/pause"
sbuild=$(field .build_id)
api GET "/v1/builds/$sbuild/scheduling-metadata"
expect "metadata while pending: answered" 200 "$code"
expect "metadata while pending" true "$(field .pending)"
expect "metadata while pending: no memory part" null "$(field .memfile)"
api POST "/v1/sandboxes/$sid/resume" '{"exec":{"command":"verify","arg0":5,"arg1":2}}'
expect "race: resume" 200 "$code"
expect "race: verified" 0 "$(field .report.result0)"
api GET "/v1/builds/$sbuild"
expect "race: dedup still stalled" deduping "$(field .status)"
stop_daemon
expect "B: stop releases the stall and uploads" 0 $?
[ -f "$store/$sbuild/memfile.header" ] && ok || bad "B: stalled build not published"

### daemon B2: the kill switch - in-flight serving off, the compare stalled 5 s. The pause
# answers at once (it used to hang: the pause waited for the compare, whose stall only ends
# after the pause answered); a resume during the stall waits for the drained file and
# verifies; nothing was served from the paused memory.
start_daemon B2 --inflight-serve off --test-stall-compare 5s || exit 1
api POST /v1/sandboxes '{"guest":"pattern","mem_mib":16,"exec":{"command":"fill","arg0":6,"arg1":4}}'
kid=$(field .id)
t0=$(date +%s%N)
code=$(curl -s -m 30 --unix-socket "$sock" -X POST -o "$tmp/body" -w '%{http_code}' \
	"http://d/v1/sandboxes/$kid/pause")
t1=$(date +%s%N)
expect "kill switch: pause answers" 200 "$code"
kbuild=$(field .build_id)
[ $(((t1 - t0) / 1000000)) -lt 4000 ] && ok ||
	bad "kill switch: the pause took $(((t1 - t0) / 1000000)) ms (it waited for the stall)"
code=$(curl -s -m 60 --unix-socket "$sock" -X POST -o "$tmp/body" -w '%{http_code}' \
	-H 'Content-Type: application/json' \
	--data-binary '{"exec":{"command":"verify","arg0":6,"arg1":4}}' \
	"http://d/v1/sandboxes/$kid/resume")
t2=$(date +%s%N)
expect "kill switch: resume" 200 "$code"
expect "kill switch: verified" 0 "$(field .report.result0)"
[ $(((t2 - t0) / 1000000)) -ge 4500 ] && ok ||
	bad "kill switch: the resume did not wait for the compare ($(((t2 - t0) / 1000000)) ms)"
wait_status "$kbuild" published
api GET /metrics
for phase in provisional packed; do
	expect "kill switch: no $phase serving" 0 \
		"$(sed -n "s/^memsnap_inflight_served_pages_total{phase=\"$phase\"} //p" "$tmp/body")"
done
stop_daemon
expect "B2: clean stop" 0 $?

### daemon B3: a pause failing before its drain (the cache disk is full: a 4 MiB tmpfs) keeps
# the guest memory while the sandbox resumed from it runs, in memsnap_failed_pause_held_bytes,
# and lets go of it when that sandbox goes (it used to hold it until template_ttl, 25 h)
held_bytes() {
	api GET /metrics
	sed -n 's/^memsnap_failed_pause_held_bytes //p' "$tmp/body"
}
small="$tmp/small-cache"
mkdir -p "$small"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=4m memsnap-test "$small" 2>/dev/null; then
	start_daemon B3 --cache-dir "$small" --test-stall-compare 2s --failed-hold 1h || exit 1
	api POST /v1/sandboxes '{"guest":"pattern","mem_mib":16,"exec":{"command":"fill","arg0":3,"arg1":7}}'
	fid=$(field .id)
	api POST "/v1/sandboxes/$fid/pause"
	fbuild=$(field .build_id)
	api POST "/v1/sandboxes/$fid/resume" '{"exec":{"command":"verify","arg0":3,"arg1":7}}'
	expect "failed hold: warm resume during the stall" 200 "$code"
	expect "failed hold: verified" 0 "$(field .report.result0)"
	tries=0
	until api GET "/v1/builds/$fbuild" && [ "$(field .status)" = failed ]; do
		tries=$((tries + 1))
		[ $tries -lt 300 ] || break
		sleep 0.1
	done
	expect "failed hold: the drain failed" failed "$(field .status)"
	tries=0
	until [ "$(held_bytes)" = 16777216 ] || [ $tries -ge 100 ]; do
		tries=$((tries + 1))
		sleep 0.1
	done
	expect "failed hold: the memory is held for the running sandbox" 16777216 "$(held_bytes)"
	api DELETE "/v1/sandboxes/$fid"
	expect "failed hold: delete" 200 "$code"
	tries=0
	until [ "$(held_bytes)" = 0 ] || [ $tries -ge 100 ]; do
		tries=$((tries + 1))
		sleep 0.1
	done
	expect "failed hold: released once no sandbox reads it" 0 "$(held_bytes)"
	stop_daemon
	expect "B3: clean stop" 0 $?
	umount "$small"
else
	echo "SKIP (daemon B3 only): cannot mount a small tmpfs here (needs root)"
fi

### daemon B4: the sandbox resumed from a pause that failed before its drain (the cache disk
# was full) is paused again once the disk has room: that pause takes the failed pause's memory
# over (ms_pause_retry: a new build over the failed one's parent, the gauge drops to 0 at once),
# the new build is layered over it, both publish, and the chain resumes cold after a restart
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=4m memsnap-test "$small" 2>/dev/null; then
	start_daemon B4 --cache-dir "$small" --test-stall-compare 2s --failed-hold 1h || exit 1
	api POST /v1/sandboxes '{"guest":"pattern","mem_mib":16,"exec":{"command":"fill","arg0":5,"arg1":11}}'
	rid=$(field .id)
	api POST "/v1/sandboxes/$rid/pause"
	rfailed=$(field .build_id)
	api POST "/v1/sandboxes/$rid/resume" '{"exec":{"command":"verify","arg0":5,"arg1":11}}'
	expect "retry: warm resume during the stall" 200 "$code"
	expect "retry: verified" 0 "$(field .report.result0)"
	tries=0
	until api GET "/v1/builds/$rfailed" && [ "$(field .status)" = failed ]; do
		tries=$((tries + 1))
		[ $tries -lt 300 ] || break
		sleep 0.1
	done
	expect "retry: the first pause failed" failed "$(field .status)"
	tries=0
	until [ "$(held_bytes)" = 16777216 ] || [ $tries -ge 100 ]; do
		tries=$((tries + 1))
		sleep 0.1
	done
	expect "retry: the failed pause holds the memory" 16777216 "$(held_bytes)"
	mount -o remount,size=256m "$small" && ok || bad "retry: could not grow the cache disk"
	api POST "/v1/sandboxes/$rid/pause"
	expect "retry: the second pause" 200 "$code"
	rbuild=$(field .build_id)
	expect "retry: the memory was taken over (gauge)" 0 "$(held_bytes)"
	api GET "/v1/builds/$rbuild"
	rparent=$(field .parent_build_id)
	[ -n "$rparent" ] && [ "$rparent" != null ] && [ "$rparent" != "$rfailed" ] && ok ||
		bad "retry: the new build is not layered over a retried one: parent $rparent (failed $rfailed)"
	wait_status "$rbuild" published
	api GET "/v1/builds/$rparent"
	expect "retry: the retried build is published" published "$(field .status)"
	api GET "/v1/builds/$rfailed"
	expect "retry: the failed build stays failed" failed "$(field .status)"
	api POST "/v1/sandboxes/$rid/resume" '{"exec":{"command":"verify","arg0":5,"arg1":11}}'
	expect "retry: warm resume of the new build" 200 "$code"
	expect "retry: warm verified" 0 "$(field .report.result0)"
	api DELETE "/v1/sandboxes/$rid"
	stop_daemon
	expect "B4: clean stop" 0 $?
	umount "$small"
	start_daemon B4b || exit 1
	api POST /v1/sandboxes "{\"build_id\":\"$rbuild\",\"exec\":{\"command\":\"verify\",\"arg0\":5,\"arg1\":11}}"
	expect "retry: cold resume after a restart" 201 "$code"
	expect "retry: cold verified" 0 "$(field .report.result0)"
	expect "retry: cold start" cold "$(field .start_type)"
	api DELETE "/v1/sandboxes/$(field .id)"
	stop_daemon
	expect "B4b: clean stop" 0 $?
else
	echo "SKIP (daemon B4 only): cannot mount a small tmpfs here (needs root)"
fi

### daemon C: SIGTERM during an upload (every store write takes 3 s), then a restart
start_daemon C --test-store-delay 3s --max-sandboxes 1 || exit 1
api POST /v1/sandboxes '{"guest":"pattern","mem_mib":16,"exec":{"command":"fill","arg0":9,"arg1":3}}'
cid=$(field .id)
api_error "max sandboxes" 429 too_many_sandboxes POST /v1/sandboxes '{"guest":"pattern","mem_mib":8}'
api POST "/v1/sandboxes/$cid/pause"
cbuild=$(field .build_id)
wait_status "$cbuild" uploading
[ ! -f "$store/$cbuild/memfile.header" ] && ok || bad "C: header before the upload finished"
kill -TERM "$daemon"
tries=0
until grep -q "stopping" "$tmp/C.log"; do
	tries=$((tries + 1))
	[ $tries -lt 600 ] || break
	sleep 0.1
done
"$memsnap" sandbox ls >/dev/null 2>&1
expect "C: no new connections while stopping" 5 $?
wait "$daemon"
expect "C: stopped after the upload" 0 $?
[ -f "$store/$cbuild/memfile.header" ] && ok || bad "C: header not published"
[ -f "$store/$cbuild/snapfile" ] && ok || bad "C: snapfile not published"
start_daemon C2 || exit 1
api GET "/v1/builds/$cbuild"
expect "C2: published in the store" published "$(field .status)"
expect "C2: not cached yet" false "$(field .cached)"
api POST /v1/sandboxes "{\"build_id\":\"$cbuild\",\"exec\":{\"command\":\"verify\",\"arg0\":9,\"arg1\":3}}"
expect "C2: resume after restart" 201 "$code"
expect "C2: cold" cold "$(field .start_type)"
expect "C2: verified" 0 "$(field .report.result0)"
expect "C2: a cold resume knows its guest (metadata.json)" pattern "$(field .guest)"
api POST /v1/sandboxes "{\"build_id\":\"$sbuild\",\"exec\":{\"command\":\"verify\",\"arg0\":5,\"arg1\":2}}"
expect "C2: the stalled build resumes cold" 0 "$(field .report.result0)"
c2id=$(field .id)
api POST "/v1/sandboxes/$c2id/pause"
c2build=$(field .build_id)
wait_status "$c2build" published
api GET "/v1/builds/$c2build"
expect "C2: a cold parent's child names it" "$sbuild" "$(field .parent_build_id)"
api POST /v1/sandboxes "{\"build_id\":\"$c2build\",\"exec\":{\"command\":\"verify\",\"arg0\":5,\"arg1\":2}}"
expect "C2: its child verifies" 0 "$(field .report.result0)"
# a damaged snapfile in the store (one flipped byte, then a truncated one): the cold resume
# is refused as an unusable build, saying why, and no sandbox is left behind; A's first
# build is not in C2's template cache, so its snapfile is read from the store
cp "$store/$build/snapfile" "$tmp/snapfile.good"
api GET /v1/sandboxes
held=$(field '.sandboxes | length')
for damage in flip truncate; do
	if [ $damage = flip ]; then
		python3 -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0xff; open(p, "wb").write(b)' "$store/$build/snapfile"
	else
		head -c 100 "$tmp/snapfile.good" >"$store/$build/snapfile"
	fi
	api POST /v1/sandboxes "{\"build_id\":\"$build\"}"
	expect "C2: a cold resume over a snapfile damaged by $damage" 422 "$code"
	expect "C2: $damage: unusable_build" unusable_build "$(field .error)"
	grep -q "checksum mismatch\|corrupt" "$tmp/body" && ok || bad "C2: $damage: no reason: $(cat "$tmp/body")"
	cp "$tmp/snapfile.good" "$store/$build/snapfile"
done
api GET /v1/sandboxes
expect "C2: no sandbox left by the refused resumes" "$held" "$(field '.sandboxes | length')"
api GET /metrics
cold=$(sed -n 's/^memsnap_sandbox_create_duration_seconds_count{start_type="cold"} //p' "$tmp/body")
expect "C2: cold creates counted" 2 "${cold:-none}"
promtool check metrics <"$tmp/body" >/dev/null 2>&1 && ok || bad "C2: promtool"
stop_daemon
expect "C2: clean stop" 0 $?

### daemon C3: SIGTERM during an upload that outlasts shutdown_timeout (1 s; every store
# write takes 3 s): the pipeline is cancelled through its token, not joined blindly; the
# daemon exits within seconds, saying so (status 1), and no header became visible
start_daemon C3 --test-store-delay 3s --shutdown-timeout 1s || exit 1
api POST /v1/sandboxes '{"guest":"pattern","mem_mib":16,"exec":{"command":"fill","arg0":4,"arg1":8}}'
xid=$(field .id)
api POST "/v1/sandboxes/$xid/pause"
xbuild=$(field .build_id)
wait_status "$xbuild" uploading
t0=$(date +%s)
kill -TERM "$daemon"
wait "$daemon"
expect "C3: a cancelled upload is an unclean stop" 1 $?
[ $(($(date +%s) - t0)) -lt 20 ] && ok || bad "C3: the stop took $(($(date +%s) - t0)) s"
grep -q "failed: operation cancelled" "$tmp/C3.log" && ok || bad "C3: the pipeline did not stop by its token: $(cat "$tmp/C3.log")"
[ ! -f "$store/$xbuild/memfile.header" ] && ok || bad "C3: a cancelled upload left a header"

### daemon D: template TTL - an evicted build resumes cold; an evicted template a sandbox
### still runs from stays open until the sandbox leaves it
start_daemon D --template-ttl 1s || exit 1
api POST /v1/sandboxes '{"guest":"pattern","mem_mib":8,"exec":{"command":"fill","arg0":11,"arg1":1}}'
did=$(field .id)
api POST "/v1/sandboxes/$did/pause"
dbuild=$(field .build_id)
wait_status "$dbuild" published
# wait_evicted N: polls the metrics until N templates were evicted
wait_evicted() {
	tries=0
	while :; do
		api GET /metrics
		e=$(sed -n 's/^memsnap_template_cache_evictions_total //p' "$tmp/body")
		[ "${e:-0}" -ge "$1" ] && { ok; return 0; }
		tries=$((tries + 1))
		[ $tries -lt 600 ] || { bad "no eviction ($e)"; return 1; }
		sleep 0.1
	done
}
wait_evicted 1
api GET "/v1/builds/$dbuild"
expect "D: evicted build is in the store only" false "$(field .cached)"
api POST "/v1/sandboxes/$did/resume" '{"exec":{"command":"verify","arg0":11,"arg1":1}}'
expect "D: resume after eviction is cold" cold "$(field .start_type)"
expect "D: verified" 0 "$(field .report.result0)"
wait_evicted 2
# the sandbox still runs from the evicted template: pausing it reads that file
api POST "/v1/sandboxes/$did/pause"
expect "D: pause over an evicted parent" 200 "$code"
d2build=$(field .build_id)
wait_status "$d2build" published
api POST /v1/sandboxes "{\"build_id\":\"$d2build\",\"exec\":{\"command\":\"verify\",\"arg0\":11,\"arg1\":1}}"
expect "D: its child verifies" 0 "$(field .report.result0)"
api DELETE "/v1/sandboxes/$(field .id)"
# prefetch: d2build was paused from a lazy resume, so its metadata.json holds that resume's
# trace; a resume replays it ahead of the faults and says so in the sandbox JSON. The guest
# stays idle until the replay ended: a guest that touches its memory at once can fault every
# page in before the replay installs one (the file store's pages are read in place, as fast
# as an install), and a page already present is skipped, rightly.
trace=$(jq '.prefetch.memory.indices | length' "$store/$d2build/metadata.json")
[ "$trace" -gt 0 ] && ok || bad "D: no trace in $d2build's metadata.json"
api POST /v1/sandboxes "{\"build_id\":\"$d2build\"}"
expect "D: idle resume" 201 "$code"
expect "D: resume prefetched (source)" init "$(field .prefetch.source)"
expect "D: prefetch blocks = the trace" "$trace" "$(field .prefetch.blocks)"
d3id=$(field .id)
tries=0
while api GET "/v1/sandboxes/$d3id" && [ "$(field .prefetch.done)" != true ] && [ $tries -lt 600 ]; do
	tries=$((tries + 1))
	sleep 0.1
done
expect "D: the prefetch ended" true "$(field .prefetch.done)"
expect "D: prefetch in the sandbox JSON" "$trace" "$(field .prefetch.blocks)"
[ "$(field .prefetch.pages_installed)" -gt 0 ] && ok || bad "D: nothing prefetched: $(cat "$tmp/body")"
# what the prefetch installed is the build's memory: the guest checks it after a pause
api POST "/v1/sandboxes/$d3id/pause"
expect "D: pause after the prefetch" 200 "$code"
api POST "/v1/sandboxes/$d3id/resume" '{"exec":{"command":"verify","arg0":11,"arg1":1}}'
expect "D: prefetched memory verifies" 0 "$(field .report.result0)"
api DELETE "/v1/sandboxes/$d3id"
api POST /v1/sandboxes "{\"build_id\":\"$d2build\",\"prefetch\":\"off\",\"exec\":{\"command\":\"verify\",\"arg0\":11,\"arg1\":1}}"
expect "D: prefetch off verifies" 0 "$(field .report.result0)"
expect "D: prefetch off: none" null "$(field .prefetch)"
api DELETE "/v1/sandboxes/$(field .id)"
api_error "D: bad prefetch source" 400 bad_request POST /v1/sandboxes \
	"{\"build_id\":\"$d2build\",\"prefetch\":\"sometimes\"}"
# a truncated metadata.json: the trace is refused with a log line, the resume (cold, after a
# restart) goes on. Its checksum table goes too, as for a build written by another tool: else
# the store's checksum check refuses the object before the trace parser sees it.
stop_daemon
expect "D: clean stop" 0 $?
head -c 100 "$store/$d2build/metadata.json" >"$tmp/md" && cp "$tmp/md" "$store/$d2build/metadata.json"
rm -f "$store/$d2build/checksums"
start_daemon D2 || exit 1
api POST /v1/sandboxes "{\"build_id\":\"$d2build\",\"exec\":{\"command\":\"verify\",\"arg0\":11,\"arg1\":1}}"
expect "D2: cold resume over a bad trace" cold "$(field .start_type)"
expect "D2: bad trace: verified" 0 "$(field .report.result0)"
expect "D2: bad trace: no prefetch" null "$(field .prefetch)"
grep -q "prefetch trace in its metadata.json is refused" "$tmp/D2.log" && ok ||
	bad "D2: no log line for the refused trace: $(cat "$tmp/D2.log")"
api GET /metrics
expect "D2: refused trace counted" 1 "$(sed -n 's/^memsnap_prefetch_traces_refused_total //p' "$tmp/body")"
stop_daemon
expect "D2: clean stop" 0 $?

echo "test_daemon: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
