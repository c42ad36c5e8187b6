#!/bin/sh
# test_builds.sh - the build lifecycle through memsnapd and the memsnap CLI:
# a pause into a build id the caller chose (taken and malformed ids refused),
# GET /v1/builds (parents, statuses, bytes, ages), DELETE refused while a
# sandbox, a cached child or a child in the store needs the build, then
# allowed (header first; the build is gone from the store); a branching chain;
# memsnap store gc while an upload runs (its lease keeps it), after a node
# died mid-upload (kept while its lease lives, removed once it expired), and
# never touching a published chain, which still resumes cold and verifies; a
# store quota that refuses a pause with 507 and leaves the sandbox running.
#   test_builds.sh MEMSNAPD MEMSNAP BACKEND STORE   (BACKEND proc|kvm, STORE fs|s3)
set -u
memsnapd=${1:?usage: test_builds.sh MEMSNAPD MEMSNAP BACKEND STORE}
memsnap=${2:?usage: test_builds.sh MEMSNAPD MEMSNAP BACKEND STORE}
backend=${3:-proc}
storekind=${4:-fs}
if [ "$backend" = kvm ] && ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
	echo "SKIP: /dev/kvm does not open here"
	exit 77
fi
tmp=$(mktemp -d /tmp/ms-builds.XXXXXX)
daemon=
cleanup() {
	[ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 1" INT TERM
. "$(dirname "$0")/../expect.sh"
sock="$tmp/api.sock"
export MEMSNAP_SOCKET="$sock"
if [ "$storekind" = s3 ]; then
	[ -n "${MEMSNAP_S3_ENDPOINT:-}" ] || { echo "FAIL: no MEMSNAP_S3_ENDPOINT (run through make test)"; exit 1; }
	export AWS_ACCESS_KEY_ID="$MEMSNAP_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$MEMSNAP_S3_SECRET_KEY"
	store="s3://builds-$$/lifecycle"
	store_opts="--s3-endpoint $MEMSNAP_S3_ENDPOINT --s3-create-bucket on"
	gc_opts="--endpoint $MEMSNAP_S3_ENDPOINT"
else
	store="file://$tmp/store"
	store_opts=""
	gc_opts=""
fi

# start NAME [FLAGS...]: memsnapd on the test's directories, until /healthz answers
start() {
	name=$1
	shift
	# shellcheck disable=SC2086
	"$memsnapd" --config /dev/null --socket "$sock" --run-dir "$tmp/run" \
		--cache-dir "$tmp/cache" --store "$store" $store_opts --backend "$backend" \
		--log-level warn "$@" 2>>"$tmp/$name.log" &
	daemon=$!
	tries=0
	until curl -s --unix-socket "$sock" -o /dev/null http://d/healthz; do
		kill -0 "$daemon" 2>/dev/null || { bad "$name: memsnapd exited: $(cat "$tmp/$name.log")"; exit 1; }
		tries=$((tries + 1))
		[ $tries -lt 600 ] || { bad "$name: no answer"; exit 1; }
		sleep 0.1
	done
}
stop() {
	kill -TERM "$daemon"
	wait "$daemon"
	daemon=
}
# api METHOD PATH [BODY]: $code, $tmp/body
api() {
	if [ $# -ge 3 ]; then
		code=$(curl -s --unix-socket "$sock" -X "$1" -o "$tmp/body" -w '%{http_code}' \
			-H 'Content-Type: application/json' --data-binary "$3" "http://d$2")
	else
		code=$(curl -s --unix-socket "$sock" -X "$1" -o "$tmp/body" -w '%{http_code}' "http://d$2")
	fi
	[ "$code" != 000 ] || alive
}
field() { jq -r "$1" "$tmp/body"; }
# a daemon that died fails the test at once (not after every later wait ran out)
alive() {
	[ -z "$daemon" ] || kill -0 "$daemon" 2>/dev/null && return 0
	bad "memsnapd died: $(tail -30 "$tmp"/*.log)"
	exit 1
}
# run NAME WANT_RC CMD...: the command's exit status; its stdout in $tmp/out
run() {
	name=$1 want=$2
	shift 2
	"$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	[ "$rc" = "$want" ] && ok || bad "$name: exit $rc, wanted $want: $(cat "$tmp/out" "$tmp/err" | head -5)"
}
wait_published() {
	tries=0
	while :; do
		api GET "/v1/builds/$1"
		[ "$(field .status)" = published ] && { ok; return 0; }
		tries=$((tries + 1))
		[ $tries -lt 600 ] || { bad "build $1 never published: $(cat "$tmp/body")"; return 1; }
		sleep 0.1
	done
}
# listed BUILD JQ: the field of BUILD's entry in GET /v1/builds
listed() {
	api GET /v1/builds
	jq -r --arg id "$1" ".builds[] | select(.build_id == \$id) | $2" "$tmp/body"
}
new_sandbox() { # new_sandbox SEED: a filled 16 MiB pattern sandbox, its id
	"$memsnap" sandbox start --guest pattern --mem 16 --exec fill --seed "$1" --epoch 1 -q
}
gc() { # gc ARGS...: memsnap store gc on the test's store
	# shellcheck disable=SC2086
	"$memsnap" store gc --store "$store" $gc_opts "$@" >"$tmp/gc.out" 2>"$tmp/gc.err"
}

start d1
### a pause into a chosen build id; taken and malformed ids refused
x=$(cat /proc/sys/kernel/random/uuid)
a=$(new_sandbox 3)
run "pause into a chosen id" 0 "$memsnap" sandbox pause "$a" --build-id "$x" -q
expect "the build has the chosen id" "$x" "$(cat "$tmp/out")"
wait_published "$x"
run "resume" 0 "$memsnap" sandbox resume "$a" --exec verify --seed 3 --epoch 1
run "the same id again: taken (409 -> exit 4)" 4 "$memsnap" sandbox pause "$a" --build-id "$x"
grep -q "is taken" "$tmp/err" && ok || bad "taken: $(cat "$tmp/err")"
api GET "/v1/sandboxes/$a"
expect "a refused pause leaves the sandbox running" running "$(field .state)"
api POST "/v1/sandboxes/$a/pause" '{"build_id": "not-a-uuid"}'
expect "a malformed build id" 400 "$code"
api POST "/v1/sandboxes/$a/pause" '{"build_id": "00000000-0000-0000-0000-000000000000"}'
expect "the nil build id" 400 "$code"
run "pause into a child" 0 "$memsnap" sandbox pause "$a" -q
y=$(cat "$tmp/out")
wait_published "$y"

### the list
run "build ls" 0 "$memsnap" build ls
grep -q "$x" "$tmp/out" && grep -q "$y" "$tmp/out" && ok || bad "build ls: $(cat "$tmp/out")"
expect "y's parent is x" "$x" "$(listed "$y" .parent_build_id)"
expect "x is published" published "$(listed "$x" .status)"
expect "x has no parent" null "$(listed "$x" .parent_build_id)"
[ "$(listed "$y" .bytes)" -gt 0 ] && ok || bad "y's bytes: $(listed "$y" .bytes)"
age=$(listed "$x" .age_s)
[ "$age" -ge 0 ] && [ "$age" -lt 600 ] && ok || bad "x's age: $age"
expect "cached here" true "$(listed "$x" .cached)"

### deletes: refused while needed, then allowed
run "rm x: y is layered over it (exit 4)" 4 "$memsnap" build rm "$x"
grep -q "needed" "$tmp/err" && ok || bad "rm x: $(cat "$tmp/err")"
run "rm y: the sandbox is paused into it (exit 4)" 4 "$memsnap" build rm "$y"
grep -q "paused into it" "$tmp/err" && ok || bad "rm y: $(cat "$tmp/err")"
run "rm the sandbox" 0 "$memsnap" sandbox rm "$a"
run "rm y" 0 "$memsnap" build rm "$y"
grep -q "deleted build $y" "$tmp/out" && ok || bad "rm y: $(cat "$tmp/out")"
api GET "/v1/builds/$y"
expect "y is gone" 404 "$code"
expect "y not listed" "" "$(listed "$y" .build_id)"
run "rm y again: not found (exit 3)" 3 "$memsnap" build rm "$y"
run "rm x" 0 "$memsnap" build rm "$x"
api POST /v1/sandboxes "{\"build_id\": \"$x\"}"
expect "a deleted build does not resume" 404 "$code"

### a branching chain: two children over one build
b=$(new_sandbox 5)
z=$("$memsnap" sandbox pause "$b" -q)
wait_published "$z"
c1=$("$memsnap" sandbox start --build "$z" -q)
c2=$("$memsnap" sandbox start --build "$z" -q)
z1=$("$memsnap" sandbox pause "$c1" -q)
z2=$("$memsnap" sandbox pause "$c2" -q)
wait_published "$z1"
wait_published "$z2"
for s in "$b" "$c1" "$c2"; do "$memsnap" sandbox rm "$s" >/dev/null; done
run "rm z: two children over it (exit 4)" 4 "$memsnap" build rm "$z"
grep -q "layered over it" "$tmp/err" && ok || bad "rm z: $(cat "$tmp/err")"
run "rm z1" 0 "$memsnap" build rm "$z1"
run "rm z: still z2 (exit 4)" 4 "$memsnap" build rm "$z"

### gc: a published chain is never touched
gc --older-than 0s
expect "gc over published builds" 0 $?
grep -q "$z" "$tmp/gc.out" && bad "gc removed a published build: $(cat "$tmp/gc.out")" || ok
if [ "$storekind" = fs ]; then
	### gc: the temp files of puts a writer died in, once older than the limit
	echo partial >"$tmp/store/$z/.memfile.tmp.old"
	touch -d '2 hours ago' "$tmp/store/$z/.memfile.tmp.old"
	echo partial >"$tmp/store/$z/.snapfile.tmp.young"
	gc --older-than 1h --dry-run
	grep -q "would remove .* 1 unfinished puts" "$tmp/gc.out" && ok || bad "gc dry run: $(cat "$tmp/gc.out")"
	[ -e "$tmp/store/$z/.memfile.tmp.old" ] && ok || bad "the dry run removed a temp file"
	gc --older-than 1h
	grep -q "removed .* 1 unfinished puts" "$tmp/gc.out" && ok || bad "gc: $(cat "$tmp/gc.out")"
	[ -e "$tmp/store/$z/.memfile.tmp.old" ] && bad "gc left the old temp file" || ok
	[ -e "$tmp/store/$z/.snapfile.tmp.young" ] && ok || bad "gc removed a put that may still run"
	rm -f "$tmp/store/$z/.snapfile.tmp.young"
fi
stop

### gc while an upload runs: every put sleeps, the lease keeps the build
start d2 --test-store-delay 700ms
s=$(new_sandbox 7)
u=$("$memsnap" sandbox pause "$s" -q)
# wait_data BUILD: until the store holds some of its objects (its data)
wait_data() {
	tries=0
	until [ "$(listed "$1" .bytes)" -gt 0 ] 2>/dev/null; do
		tries=$((tries + 1))
		[ $tries -lt 400 ] || { bad "no data of $1 in the store"; return 1; }
		sleep 0.05
	done
	ok
}
wait_data "$u"
expect "the build is uploading" uploading "$(listed "$u" .status)"
gc --older-than 0s
expect "gc during the upload" 0 $?
grep -q "1 under a live lease" "$tmp/gc.err" && ok || bad "gc during the upload: $(cat "$tmp/gc.err")"
grep -q "$u" "$tmp/gc.out" && bad "gc removed an upload under way: $(cat "$tmp/gc.out")" || ok
wait_published "$u"
"$memsnap" sandbox rm "$s" >/dev/null

### DELETE of a build whose upload runs and that nothing else needs: the delete cancels the
# pipeline through its token (its upload is held: it stops before its header), waits for it,
# and removes what it put; the build is gone from the node and the store (before: 409 until
# the upload ended)
stop
start d2c --test-hold-upload "$tmp/never"
s=$(new_sandbox 18)
c=$("$memsnap" sandbox pause "$s" -q)
"$memsnap" sandbox rm "$s" >/dev/null
api DELETE "/v1/builds/$c"
expect "delete during the upload: cancelled and deleted" 200 "$code"
expect "delete during the upload: deleted" true "$(field .deleted)"
api GET "/v1/builds/$c"
expect "delete during the upload: gone from the node" 404 "$code"
expect "delete during the upload: nothing of it in the store" "" "$(listed "$c" .build_id)"
grep -q "pause of build $c failed: operation cancelled" "$tmp/d2c.log" && ok ||
	bad "delete during the upload: not cancelled: $(tail -5 "$tmp/d2c.log")"
stop
start d2 --test-store-delay 700ms
### a node dies mid-upload: its leftovers stay while the lease lives
s=$(new_sandbox 8)
v=$("$memsnap" sandbox pause "$s" -q)
wait_data "$v"
kill -KILL "$daemon"
wait "$daemon" 2>/dev/null
daemon=
gc --older-than 0s
grep -q "$v" "$tmp/gc.out" && bad "gc removed a build under a live lease" || ok
if [ "$storekind" = fs ]; then
	# the lease expires (its holder is dead): rewrite it as expired
	lease="$tmp/store/uploads/$v"
	[ -f "$lease" ] && ok || bad "no uploads/ lease for the dead node's build"
	jq -c '.expires_at_ms = 1' "$lease" >"$tmp/lease" && cp "$tmp/lease" "$lease"
	gc --dry-run --older-than 0s
	grep -q "$v/" "$tmp/gc.out" && ok || bad "dry run: $(cat "$tmp/gc.out")"
	[ -f "$lease" ] && ok || bad "a dry run removed something"
	gc --older-than 0s
	grep -q "uploads/$v .*expired lease" "$tmp/gc.out" && ok || bad "gc, expired: $(cat "$tmp/gc.out")"
	grep -q "$v/memfile " "$tmp/gc.out" && ok || bad "gc, leftovers: $(cat "$tmp/gc.out")"
	[ ! -e "$tmp/store/$v/memfile" ] && [ ! -e "$lease" ] && ok || bad "leftovers still there"
fi

### after all that, the published chain resumes cold and verifies
rm -rf "$tmp/cache"
start d3
api POST /v1/sandboxes "{\"build_id\": \"$z2\", \"exec\": {\"command\": \"verify\", \"arg0\": 5, \"arg1\": 1}}"
expect "cold resume of the child after gc" 201 "$code"
expect "cold" cold "$(field .start_type)"
expect "the child verifies after gc" 0 "$(field .report.result0)"
stop

### the store quota: a pause that could pass it is refused (507), the sandbox runs on
start d4 --store-quota-bytes 1M
# a fresh node caches nothing: z is refused for its child in the store
run "rm z on a fresh node: z2 in the store (exit 4)" 4 "$memsnap" build rm "$z"
grep -q "1 build is in the store layered over it" "$tmp/err" && ok || bad "rm z, store: $(cat "$tmp/err")"
s=$(new_sandbox 9)
run "pause past the quota (exit 1)" 1 "$memsnap" sandbox pause "$s"
grep -q "store_quota_bytes" "$tmp/err" && ok || bad "quota message: $(cat "$tmp/err")"
api POST "/v1/sandboxes/$s/pause"
expect "507" 507 "$code"
expect "quota_exceeded" quota_exceeded "$(field .error)"
api GET "/v1/sandboxes/$s"
expect "still running" running "$(field .state)"
stop
start d5 --store-quota-bytes 64G
s=$(new_sandbox 9)
run "pause within the quota" 0 "$memsnap" sandbox pause "$s" -q
stop

echo "test_builds ($backend, $storekind): $pass passed, $fail failed"
[ "$fail" -eq 0 ]
