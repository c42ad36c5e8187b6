#!/bin/sh
# test_daemon_obs.sh - memsnapd's observability as an operator sees it:
#  - logs in json mode: every line of a daemon run parses as JSON (jq), with an
#    RFC 3339 UTC millisecond timestamp, and one info line per lifecycle event
#    (sandbox created, paused, resumed, deleted; build published) carrying the
#    right sandbox_id / build_id; text mode lines start with the timestamp too;
#  - metrics: a live scrape promtool accepts, with the store request histogram
#    and counters, memsnap_build_info and process_start_time_seconds, and the
#    fault latency by source (memfd on a warm resume during a stalled compare,
#    store on a cold resume from a second daemon with an empty cache);
#  - --help hides the test hooks (docs/daemon.md documents them under "Test hooks");
#  - the --opt=value form, for memsnapd and memsnap sandbox/build/header.
#   test_daemon_obs.sh MEMSNAPD MEMSNAP
set -u
memsnapd=${1:?usage: test_daemon_obs.sh MEMSNAPD MEMSNAP}
memsnap=${2:?usage: test_daemon_obs.sh MEMSNAPD MEMSNAP}
docs="$(dirname "$0")/../../docs/daemon.md"
for tool in jq promtool curl; do
	command -v $tool >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
tmp=$(mktemp -d /tmp/msd-obs.XXXXXX)
daemon=""
cleanup() {
	[ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null
	[ -n "${KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/../expect.sh"
sock="$tmp/api.sock"
ts_re='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$'

# start_daemon LOG FLAGS...: memsnapd (proc, the test's socket and store, = forms) until it answers
start_daemon() {
	log=$1
	shift
	"$memsnapd" --config=/dev/null --socket="$sock" --run-dir="$tmp/run" \
		--store="file://$tmp/store" --backend=proc "$@" 2>"$log" &
	daemon=$!
	tries=0
	until curl -s --unix-socket "$sock" -o /dev/null http://d/healthz; do
		kill -0 "$daemon" 2>/dev/null || { bad "memsnapd exited at start"; cat "$log"; exit 1; }
		tries=$((tries + 1))
		[ $tries -lt 600 ] || { bad "memsnapd never answered"; exit 1; }
		sleep 0.1
	done
}

### --help: no test hook; each one documented under "Test hooks"
"$memsnapd" --help >"$tmp/help" 2>&1
expect "--help exit" 0 $?
grep -q -- "--log-format" "$tmp/help" && ok || bad "--help does not list --log-format"
if grep -q -- "--test-[a-z]" "$tmp/help"; then bad "--help lists test hooks: $(grep -- "--test-[a-z]" "$tmp/help")"; else ok; fi
sed -n '/^## Test hooks/,/^## /p' "$docs" >"$tmp/hooks.md"
[ -s "$tmp/hooks.md" ] && ok || bad "docs/daemon.md has no 'Test hooks' section"
"$memsnapd" --socket /x --print-config >"$tmp/effective"
for key in $(sed -n 's/^\(test_[a-z_0-9]*\) = .*/\1/p' "$tmp/effective"); do
	flag=$(echo "$key" | tr _ -)
	grep -q -- "--$flag" "$tmp/hooks.md" && ok || bad "'Test hooks' does not document --$flag"
done
[ "$(grep -c '^test_' "$tmp/effective")" -ge 4 ] && ok || bad "fewer test hooks than expected"

### log_format: refused values, the key in the file, and the flag
"$memsnapd" --log-format=xml --print-config >/dev/null 2>"$tmp/err"
expect "--log-format=xml refused" 2 $?
grep -q "log_format: 'xml' is not text or json" "$tmp/err" && ok || bad "reason: $(cat "$tmp/err")"
printf 'log_format = json\n' >"$tmp/json.conf"
"$memsnapd" --config="$tmp/json.conf" --print-config >"$tmp/e2"
expect "log_format from the file" "log_format = json" "$(grep '^log_format' "$tmp/e2")"
# text mode: a start that fails still logs a timestamped line
"$memsnapd" --config=/dev/null --log-format=text --socket="$tmp/t.sock" --run-dir="$tmp/trun" \
	--cache-dir="$tmp/tcache" --store=gopher://nowhere 2>"$tmp/text.log"
expect "bad store: exit" 1 $?
line=$(grep 'store gopher' "$tmp/text.log")
echo "$line" | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\.[0-9]{3}Z memsnap\[memsnapd\] ERROR store gopher://nowhere' &&
	ok || bad "text line: '$line'"

### a daemon run in json mode, every option in the = form
start_daemon "$tmp/d.log" --log-format=json --log-level=info --cache-dir="$tmp/cache" --template-ttl=1h \
	--test-stall-compare=2s
id=$("$memsnap" sandbox start --socket="$sock" --guest=pattern --mem=16 --exec=fill --seed=7 \
	--epoch=1 -q)
expect "start (= form)" 0 $?
build=$("$memsnap" sandbox pause --socket="$sock" -q "$id")
expect "pause (= form)" 0 $?
"$memsnap" sandbox resume --socket="$sock" --exec=verify --arg0=7 --arg1=1 "$id" >"$tmp/resume"
expect "resume + verify (= form)" 0 $?
tries=0
while :; do
	"$memsnap" build show --socket="$sock" --json "$build" >"$tmp/show" 2>&1
	status=$(jq -r .status "$tmp/show" 2>/dev/null)
	[ "$status" = published ] && { ok; break; }
	tries=$((tries + 1))
	[ $tries -lt 600 ] || { bad "build $build never published: $(cat "$tmp/show")"; break; }
	sleep 0.1
done
"$memsnap" header inspect --build="$build" --file=memfile --json "file://$tmp/store" >"$tmp/hdr"
expect "header inspect (= form)" 0 $?
expect "header inspect: the build" "$build" "$(jq -r .metadata.build_id "$tmp/hdr")"
"$memsnap" build verify --store="file://$tmp/store" "$build" >"$tmp/verify"
expect "build verify (= form)" 0 $?
"$memsnap" sandbox rm --socket="$sock" "$id" >/dev/null
expect "rm (= form)" 0 $?
"$memsnap" sandbox ls --socket="$tmp/none.sock" >/dev/null 2>&1
expect "--socket= is used (nothing there)" 5 $?

### metrics
curl -s --unix-socket "$sock" -o "$tmp/metrics" http://d/metrics
if promtool check metrics <"$tmp/metrics" >"$tmp/promtool" 2>&1; then ok; else
	bad "promtool check metrics"
	sed 's/^/  | /' "$tmp/promtool"
fi
metric() { sed -n "s/^$1 //p" "$tmp/metrics"; }
puts=$(metric 'memsnap_store_request_duration_seconds_count{op="put",backend="fs"}')
[ "${puts:-0}" -ge 3 ] && ok || bad "store put durations counted: ${puts:-none}"
ok_puts=$(metric 'memsnap_store_requests_total{op="put",result="ok"}')
expect "store puts ok = put durations" "$puts" "$ok_puts"
[ -n "$(metric 'memsnap_store_request_duration_seconds_bucket{op="get",backend="fs",le="+Inf"}')" ] &&
	ok || bad "no get series"
expect "build_info" 1 "$(metric 'memsnap_build_info{version="'"$("$memsnapd" --version | cut -d' ' -f2)"'"}')"
# the warm resume ran while the compare was stalled: its faults came from the paused memory
memfd=$(metric 'memsnap_pageserver_fault_duration_seconds_count{source="memfd"}')
[ "${memfd:-0}" -gt 0 ] && ok || bad "faults served from the memfd: ${memfd:-none}"
sum=$(metric 'memsnap_pageserver_fault_duration_seconds_sum{source="memfd"}')
awk -v s="${sum:-0}" 'BEGIN { exit !(s > 0) }' && ok || bad "memfd fault latency sum: $sum"
expect "no store faults on a warm resume" 0 \
	"$(metric 'memsnap_pageserver_fault_duration_seconds_count{source="store"}')"
start=$(metric process_start_time_seconds)
now=$(date +%s)
awk -v s="${start:-0}" -v n="$now" 'BEGIN { exit !(s > n - 600 && s <= n + 1) }' && ok ||
	bad "process_start_time_seconds $start, now $now"

kill -TERM "$daemon"
wait "$daemon"
expect "clean stop" 0 $?
daemon=""

### a second daemon, empty cache: a cold resume's faults come from the store
start_daemon "$tmp/d2.log" --log-format=json --cache-dir="$tmp/cache2"
"$memsnap" sandbox start --socket="$sock" --build="$build" --exec=verify --arg0=7 --arg1=1 -q \
	>/dev/null
expect "cold resume + verify" 0 $?
curl -s --unix-socket "$sock" -o "$tmp/metrics" http://d/metrics
promtool check metrics <"$tmp/metrics" >/dev/null 2>&1 && ok || bad "promtool (cold)"
cold=$(metric 'memsnap_pageserver_fault_duration_seconds_count{source="store"}')
[ "${cold:-0}" -gt 0 ] && ok || bad "faults served from the store: ${cold:-none}"
kill -TERM "$daemon"
wait "$daemon"
expect "clean stop 2" 0 $?
daemon=""

### the json log: every line an object with ts/level/module/msg, the lifecycle events
lines=$(wc -l <"$tmp/d.log")
[ "$lines" -ge 7 ] && ok || bad "only $lines log lines"
n=0
while IFS= read -r l; do
	n=$((n + 1))
	if ! echo "$l" | jq -e 'type == "object" and (.ts|type) == "string" and
		(.level|type) == "string" and (.module|type) == "string" and (.msg|type) == "string"' \
		>/dev/null 2>&1; then
		bad "log line $n is not a JSON log object: $l"
		continue
	fi
	echo "$l" | jq -r .ts | grep -Eq "$ts_re" && ok || bad "line $n timestamp: $l"
done <"$tmp/d.log"
# event MSG SANDBOX BUILD: exactly one info line with that message and these ids ("" = absent)
event() {
	got=$(jq -c --arg m "$1" --arg s "$2" --arg b "$3" 'select(.level == "info" and .msg == $m
		and (.sandbox_id // "") == $s and (.build_id // "") == $b)' "$tmp/d.log" | wc -l)
	expect "one info line '$1' ($2 $3)" 1 "$got"
}
event "sandbox created" "$id" ""
event "sandbox paused" "$id" "$build"
event "sandbox resumed" "$id" "$build"
event "sandbox deleted" "$id" ""
got=$(jq -c --arg b "$build" 'select(.level == "info" and (.msg | startswith("build published"))
	and .build_id == $b)' "$tmp/d.log" | wc -l)
expect "one info line 'build published' for $build" 1 "$got"
got=$(jq -c 'select(.msg | startswith("listening on unix:"))' "$tmp/d.log" | wc -l)
expect "one 'listening' line" 1 "$got"

echo "test_daemon_obs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
