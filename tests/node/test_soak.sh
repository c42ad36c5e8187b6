#!/bin/sh
# test_soak.sh - a bounded soak of memsnapd: 16 sandboxes in parallel, each
# paused and resumed CYCLES times (30 by default), and every resume ends with
# the pattern guest verifying its memory (--exec verify, the seed and epoch it
# was filled with). Two daemons share one file:// store: A stalls every
# pause's compare (test_stall_compare), so A's warm resumes land while the
# dedup is stalled; every third cycle the build is resumed cold on the other
# daemon (which does not hold it) once published. Templates live 3 s
# (template_ttl) and so do the diff store's entries (cache_ttl, freed 1 s
# after: cache_delete_delay), so a node also loses what it held between visits.
# Before and after the run (after a settle time longer than those) A's RSS, open
# fds and threads (/proc/PID/status, /proc/PID/fd) are printed; after must be
# back to before exactly in fds and threads (the diff store holds no entry then),
# anonymous RSS within RSS_SLACK_KIB (8 MiB by default: measured up to
# 4 MiB of noise; a leak of 17 KiB a cycle fails it). The daemons run
# with MALLOC_ARENA_MAX=1: glibc's per-thread arenas keep what the sandboxes'
# threads freed mapped (measured, 16 x 30 cycles: +32 MiB RssAnon with the
# default arenas, +88 KiB with one for 4 x 12), which would hide a leak.
# The second run injects faults into both daemons' stores (test_store_faults:
# every 7th put times out, every 11th is refused, every 13th read is cut
# short); resumes may fail there, but afterwards every build that reached
# "published" resumes cold on a clean daemon and verifies.
# Prints "soak: cycles N, verifies N, ..." and the resource table.
#   test_soak.sh MEMSNAPD [proc|kvm]
set -u
memsnapd=${1:?usage: test_soak.sh MEMSNAPD [BACKEND]}
backend=${2:-proc}
cycles=${CYCLES:-30}
n=${SANDBOXES:-16}
rss_slack=${RSS_SLACK_KIB:-8192}
export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-1}
# and a fixed mmap threshold: glibc's dynamic one rises after the first large free, so
# later multi-MiB buffers (chunk fetches) come from the heap and stay as fragments
# (measured, 16 x 12 cycles: RssAnon +22 MiB without, +0.7 MiB with 128 KiB fixed)
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-131072}
. "$(dirname "$0")/../expect.sh"
. "$(dirname "$0")/daemon_lib.sh" # skip_without_kvm
skip_without_kvm "$backend"
command -v jq >/dev/null || { echo "FAIL: jq is missing (scripts/deps.sh)"; exit 1; }
tmp=$(mktemp -d /tmp/msd-soak.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do kill -KILL "$p" 2>/dev/null; done
	[ -n "${KEEP:-}" ] || rm -rf "$tmp" # KEEP=1: leave the logs for a look
}
trap cleanup EXIT
trap 'exit 1' INT TERM # meson's timeout: the daemons go too
store="$tmp/store"
mkdir -p "$store"

# start NAME EXTRA_CONFIG: memsnapd NAME on $tmp/NAME.sock; $daemon_pid
start() {
	cat >"$tmp/$1.conf" <<EOF
socket = $tmp/$1.sock
run_dir = $tmp/$1.run
cache_dir = $tmp/$1.cache
store = file://$store
backend = $backend
log_level = info
template_ttl = 3s
cache_ttl = 3s
cache_delete_delay = 1s
$2
EOF
	"$memsnapd" --config "$tmp/$1.conf" 2>>"$tmp/$1.log" &
	daemon_pid=$!
	pids="$pids $daemon_pid"
	sock="$tmp/$1.sock" wait_healthz "$1" "$daemon_pid" "$tmp/$1.log"
}
stop() { # stop PID: SIGTERM (uploads finish), wait
	kill -TERM "$1"
	wait "$1"
}
# call DAEMON BODYFILE METHOD PATH [JSON]: $code
call() {
	if [ $# -ge 5 ]; then
		code=$(curl -s --unix-socket "$tmp/$1.sock" -X "$3" -o "$2" -w '%{http_code}' \
			-H 'Content-Type: application/json' --data-binary "$5" "http://d$4")
	else
		code=$(curl -s --unix-socket "$tmp/$1.sock" -X "$3" -o "$2" -w '%{http_code}' "http://d$4")
	fi
}
# wait_settled DAEMON BODY BUILD: until the build is published or failed, or unknown
# (a failed build the node no longer holds: 404); $status
wait_settled() {
	tries=0
	while :; do
		call "$1" "$2" GET "/v1/builds/$3"
		status=$(jq -r .status "$2" 2>/dev/null)
		[ "$code" = 404 ] && status=unknown
		case "$status" in published | failed | unknown) return 0 ;; esac
		tries=$((tries + 1))
		[ $tries -lt 600 ] || return 1
		sleep 0.1
	done
}
# resources PID NAME: "rss_kib anon_kib fds cache_fds threads" - cache_fds: the fds
# open on NAME's cache_dir diff files (the diff store's entries; their pages are
# RssFile, not RssAnon)
resources() {
	kib() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$2/status"; }
	threads=$(sed -n 's/^Threads:[[:space:]]*//p' "/proc/$1/status")
	fds=$(ls "/proc/$1/fd" | wc -l)
	cache_fds=$(ls -l "/proc/$1/fd" | grep -c " -> $tmp/$2.cache/[^.]")
	echo "$(kib VmRSS "$1") $(kib RssAnon "$1") $fds $cache_fds $threads"
}

# worker I RUN CYCLES: sandbox I's cycles; results in $tmp/RUN.I.{verified,failed,builds,log}
worker() {
	i=$1 run=$2 ncycles=$3
	seed=$((1000 + i))
	body="$tmp/$run.$i.body"
	out="$tmp/$run.$i"
	cur=A other=B
	verified=0 failed=0 cold=0 warm=0 wrong=0
	: >"$out.builds"
	call $cur "$body" POST /v1/sandboxes \
		"{\"guest\":\"pattern\",\"mem_mib\":8,\"exec\":{\"command\":\"fill\",\"arg0\":$seed,\"arg1\":1}}"
	if [ "$code" != 201 ]; then
		echo "start: $code $(cat "$body")" >>"$out.log"
		echo "0 1 0 0 0" >"$out.result"
		return
	fi
	sid=$(jq -r .id "$body")
	c=0
	while [ $c -lt "$ncycles" ]; do
		c=$((c + 1))
		call $cur "$body" POST "/v1/sandboxes/$sid/pause"
		if [ "$code" != 200 ]; then
			echo "cycle $c: pause on $cur: $code $(cat "$body")" >>"$out.log"
			failed=$((failed + 1))
			break
		fi
		build=$(jq -r .build_id "$body")
		echo "$build $seed $cur" >>"$out.builds"
		if [ $((c % 3)) = 0 ]; then # cold, on the node that does not hold it
			wait_settled $cur "$body" "$build"
			call $cur "$body" DELETE "/v1/sandboxes/$sid"
			t=$cur cur=$other other=$t
			call $cur "$body" POST /v1/sandboxes \
				"{\"build_id\":\"$build\",\"exec\":{\"command\":\"verify\",\"arg0\":$seed,\"arg1\":1}}"
			want=201
		else # warm (on A: while the compare is stalled)
			call $cur "$body" POST "/v1/sandboxes/$sid/resume" \
				"{\"exec\":{\"command\":\"verify\",\"arg0\":$seed,\"arg1\":1}}"
			want=200
		fi
		if [ "$code" != "$want" ]; then
			echo "cycle $c: resume of $build on $cur: $code $(cat "$body")" >>"$out.log"
			failed=$((failed + 1))
			# the sandbox stays paused on a failed resume: go on from a fresh one
			call $cur "$body" DELETE "/v1/sandboxes/$sid"
			call $cur "$body" POST /v1/sandboxes \
				"{\"guest\":\"pattern\",\"mem_mib\":8,\"exec\":{\"command\":\"fill\",\"arg0\":$seed,\"arg1\":1}}"
			[ "$code" = 201 ] || break
			sid=$(jq -r .id "$body")
			continue
		fi
		[ "$want" = 201 ] && { sid=$(jq -r .id "$body"); cold=$((cold + 1)); } || warm=$((warm + 1))
		if [ "$(jq -r .report.result0 "$body")" = 0 ]; then
			verified=$((verified + 1))
		else
			echo "cycle $c: $build on $cur: verify found $(jq -r .report.result0 "$body") bad pages" >>"$out.log"
			failed=$((failed + 1)) wrong=$((wrong + 1))
		fi
	done
	call $cur "$body" DELETE "/v1/sandboxes/$sid"
	echo "$verified $failed $cold $warm $wrong" >"$out.result"
}

# soak RUN FAULTS: both daemons, n workers, every sandbox deleted, every build settled
soak() {
	run=$1
	start A "test_stall_compare = 300ms
$2" || exit 1
	pid_a=$daemon_pid
	start B "$2" || exit 1
	pid_b=$daemon_pid
	# a warm-up round (3 cycles each, one cold) first: the 'before' is a daemon that has
	# run n sandboxes at once (its worker threads' malloc arenas, its caches' tables)
	jobs=""
	i=0
	while [ $i -lt "$n" ]; do
		worker $i "$run-warmup" 3 &
		jobs="$jobs $!"
		i=$((i + 1))
	done
	for j in $jobs; do wait "$j"; done
	sleep "${SETTLE:-8}"
	before=$(resources $pid_a A)
	ls -l "/proc/$pid_a/fd" >"$tmp/$run.fds.before" 2>&1
	t0=$(date +%s)
	jobs=""
	i=0
	while [ $i -lt "$n" ]; do
		worker $i "$run" "$cycles" &
		jobs="$jobs $!"
		i=$((i + 1))
	done
	for j in $jobs; do wait "$j"; done
	elapsed=$(($(date +%s) - t0))
	# every build settles (published or failed), then the templates' TTL passes
	cat "$tmp/$run".*.builds >"$tmp/$run.builds"
	: >"$tmp/$run.published"
	while read -r b seed d; do
		wait_settled "$d" "$tmp/$run.body" "$b" || status=unsettled
		[ "$status" = published ] && echo "$b $seed" >>"$tmp/$run.published"
	done <"$tmp/$run.builds"
	sleep "${SETTLE:-8}"
	after=$(resources $pid_a A)
	ls -l "/proc/$pid_a/fd" >"$tmp/$run.fds" 2>&1
	call A "$tmp/$run.body" GET /metrics
	diff_entries=$(sed -n 's/^memsnap_diffstore_entries //p' "$tmp/$run.body")
	templates=$(sed -n 's/^memsnap_template_cache_entries //p' "$tmp/$run.body")
	verifies=0 failures=0 colds=0 warms=0 wrongs=0
	for r in "$tmp/$run".[0-9]*.result; do
		read -r v f c w x <"$r"
		verifies=$((verifies + v)) failures=$((failures + f)) colds=$((colds + c)) warms=$((warms + w))
		wrongs=$((wrongs + x))
	done
	echo "soak $run ($backend): $n sandboxes x $cycles cycles in ${elapsed}s: verifies $verifies" \
		"(warm $warms, cold $colds), failed $failures (of them a verify that found wrong pages: $wrongs)"
	echo "soak $run: memsnapd A    rss_kib anon_kib fds cache_fds threads"
	echo "soak $run:   before      $before"
	echo "soak $run:   after       $after  (diff store entries $diff_entries, templates $templates)"
}
# check_resources RUN: A's state after the run is its state before: fds and threads
# exactly, no diff store entry or cache fd left, anonymous RSS within the slack
check_resources() {
	set -- $before
	rss0=$1 anon0=$2 fd0=$3 cfd0=$4 th0=$5
	set -- $after
	expect "$run: A's open fds are back" "$fd0" "$3"
	[ "$3" = "$fd0" ] || {
		echo "soak $run: fds before:"; sed 's/^/  | /' "$tmp/$run.fds.before"
		echo "soak $run: fds after:"; sed 's/^/  | /' "$tmp/$run.fds"
	}
	expect "$run: no cache fd open" 0 "$4"
	expect "$run: the diff store holds no entry" 0 "${diff_entries:-?}"
	expect "$run: A's threads are back" "$th0" "$5"
	expect "$run: A holds no template" 0 "${templates:-?}"
	[ "$2" -le $((anon0 + rss_slack)) ] && ok ||
		bad "$run: A's anonymous RSS grew from $anon0 to $2 KiB (slack $rss_slack)"
	echo "soak $run: anonymous RSS slack allowed $rss_slack KiB, used $(($2 - anon0)) KiB;" \
		"RSS $rss0 -> $1 KiB"
}

### the clean run
soak clean ""
cat "$tmp"/clean.*.log 2>/dev/null | head -20 | sed 's/^/  | /'
expect "clean: every cycle verified" $((n * cycles)) "$verifies"
expect "clean: nothing failed" 0 "$failures"
[ "$colds" -ge $((n * (cycles / 3))) ] && ok || bad "clean: $colds cold resumes"
check_resources
stop $pid_a || bad "clean: A did not stop cleanly"
stop $pid_b || bad "clean: B did not stop cleanly"
pids=""

### the same with faults in the store
faults="test_store_faults = put_timeout:7,put_refused:11,read_truncate:13"
soak faulty "$faults"
cat "$tmp"/faulty.*.log 2>/dev/null | head -10 | sed 's/^/  | /'
check_resources
expect "faulty: no guest was given wrong bytes" 0 "$wrongs"
call A "$tmp/m.body" GET /metrics
injected=$(sed -n 's/^memsnap_test_store_faults_total{kind="\([a-z_]*\)"} \([0-9]*\)$/\1=\2/p' \
	"$tmp/m.body" | tr '\n' ' ')
echo "soak faulty: faults injected on A: $injected"
[ -n "$injected" ] && ok || bad "faulty: no faults counted"
stop $pid_a || bad "faulty: A did not stop cleanly"
stop $pid_b || bad "faulty: B did not stop cleanly"
pids=""
# every build reported published resumes cold on a clean daemon and verifies
start C "" || exit 1
# check_published K: the published builds on lines = K (mod 8); one line per loss in $tmp/lost.K
check_published() {
	: >"$tmp/lost.$1"
	awk -v k="$1" 'NR % 8 == k' "$tmp/faulty.published" | while read -r b seed; do
		call C "$tmp/c.$1.body" POST /v1/sandboxes \
			"{\"build_id\":\"$b\",\"exec\":{\"command\":\"verify\",\"arg0\":$seed,\"arg1\":1}}"
		if [ "$code" = 201 ] && [ "$(jq -r .report.result0 "$tmp/c.$1.body")" = 0 ]; then
			call C "$tmp/c.$1.body" DELETE "/v1/sandboxes/$(jq -r .id "$tmp/c.$1.body")"
		else
			echo "$b: $code $(cat "$tmp/c.$1.body")" >>"$tmp/lost.$1"
		fi
	done
}
jobs=""
for k in 0 1 2 3 4 5 6 7; do
	check_published $k &
	jobs="$jobs $!"
done
for j in $jobs; do wait "$j"; done
published=$(wc -l <"$tmp/faulty.published")
lost=$(cat "$tmp"/lost.* | wc -l)
sed 's/^/  | lost: /' "$tmp"/lost.* | head -5
echo "soak faulty: builds $(cat "$tmp"/faulty.*.builds | wc -l), reported published $published, resumed cold and verified $((published - lost)), lost $lost"
[ "$published" -gt 0 ] && ok || bad "faulty: no build was published"
expect "faulty: nothing published is lost" 0 "$lost"
echo "test_soak: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
