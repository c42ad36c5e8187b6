#!/bin/sh
# test_crash.sh - memsnapd killed (SIGKILL) at each stage of a pause, then
# started again on the same directories and store. Each crash point:
#   prepare: a pattern guest filled with its own seed, paused with one stage
#            held by a test hook (the peer server on, so a peers/ record exists)
#   crash:   SIGKILL once the stage is reached; what the store holds is printed
#   restart: the same cache dir, run dir and store
#   verify:  no header in the store whose data is missing or of the wrong size;
#            a build whose header is there resumes cold and the guest verifies
#            its memory; a build without a header answers 410 lost and nothing
#            of it is left in the store; its peers/ record and uploads/ lease
#            are gone; the cache
#            dir holds only the lock and the (empty) upload journal; the
#            removals are counted in memsnap_recovery_removed_total.
# Crash points: during the compare, during the drain, during the data upload,
# between the data and the header, after the header (before the end was
# recorded), and after the publish.
#   test_crash.sh MEMSNAPD BACKEND STORE    (BACKEND proc|kvm, STORE fs|s3)
set -u
memsnapd=${1:?usage: test_crash.sh MEMSNAPD BACKEND STORE}
backend=${2:?usage: test_crash.sh MEMSNAPD BACKEND STORE}
storekind=${3:?usage: test_crash.sh MEMSNAPD BACKEND STORE}
here=$(dirname "$0")
. "$here/../expect.sh"
. "$here/daemon_lib.sh"
skip_without_kvm "$backend"
if [ "$storekind" = s3 ] && [ -z "${MEMSNAP_S3_ENDPOINT:-}" ]; then
	echo "FAIL: no MEMSNAP_S3_ENDPOINT (run through scripts/run-tests.sh)"
	exit 1
fi
tag=$$
tmp=$(mktemp -d /tmp/msd-crash.XXXXXX)
daemon=""
cleanup() {
	[ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 1" INT TERM
sock="$tmp/api.sock"

sh "$here/../../scripts/peer-certs.sh" "$tmp/tls" fleet "a:127.0.0.1" ||
	{ echo "FAIL: scripts/peer-certs.sh (openssl) failed"; exit 1; }
export MEMSNAP_PEER_TOKEN="crash-$tag"
unset MEMSNAP_SOCKET MEMSNAP_TOKEN

if [ "$storekind" = s3 ]; then
	bucket="crash-$tag"
	store="s3://$bucket/fleet"
	store_opts="--s3-endpoint $MEMSNAP_S3_ENDPOINT --s3-create-bucket on"
	prefix="fleet/"
else
	mkdir -p "$tmp/store"
	store="file://$tmp/store"
	store_opts=""
	prefix=""
fi

# store_list PREFIX: "KEY SIZE" lines of the store's objects under PREFIX (relative keys)
store_list() {
	if [ "$storekind" = s3 ]; then
		# curl signs the query as written: give it in canonical form (sorted, '/' encoded)
		q=$(printf '%s' "$prefix$1" | sed 's|/|%2F|g')
		curl -s --aws-sigv4 "aws:amz:${MEMSNAP_S3_REGION:-us-east-1}:s3" \
			-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
			--user "$MEMSNAP_S3_ACCESS_KEY:$MEMSNAP_S3_SECRET_KEY" \
			"$MEMSNAP_S3_ENDPOINT/$bucket?list-type=2&prefix=$q" |
			sed 's/<Contents>/\n/g' |
			sed -n 's|.*<Key>'"$prefix"'\([^<]*\)</Key>.*<Size>\([0-9]*\)</Size>.*|\1 \2|p'
	else
		[ -d "$tmp/store" ] || return 0
		(cd "$tmp/store" && find . -type f ! -name '.*' -printf '%P %s\n' | grep "^$1" || true)
	fi
}
# s3 METHOD KEY_AND_QUERY: a signed request to the bucket (the query in canonical form)
s3() {
	curl -s --aws-sigv4 "aws:amz:${MEMSNAP_S3_REGION:-us-east-1}:s3" -X "$1" \
		-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
		--user "$MEMSNAP_S3_ACCESS_KEY:$MEMSNAP_S3_SECRET_KEY" "$MEMSNAP_S3_ENDPOINT/$bucket$2"
}
# plant_incomplete BUILD: what a kill inside a put of BUILD's memfile leaves (the test
# hooks hold a put before the store sees it): a temp file, an S3 multipart upload
plant_incomplete() {
	if [ "$storekind" = s3 ]; then
		s3 POST "/$prefix$1/memfile?uploads=" | grep -q "<UploadId>"
	else
		mkdir -p "$tmp/store/$1" && echo partial >"$tmp/store/$1/.memfile.tmp.killed"
	fi
}
# incomplete BUILD: how many of those are left under BUILD/
incomplete() {
	if [ "$storekind" = s3 ]; then
		s3 GET "?prefix=$(printf '%s' "$prefix$1/" | sed 's|/|%2F|g')&uploads=" |
			grep -o "<UploadId>" | wc -l
	else
		find "$tmp/store/$1" -name '.*.tmp.*' 2>/dev/null | wc -l
	fi
}
has_key() { store_list "$1" | grep -q "^$1 "; }
key_size() { store_list "$1" | sed -n "s|^$1 ||p"; }

start() {
	name=$1
	shift
	# shellcheck disable=SC2086
	"$memsnapd" --config /dev/null --socket "$sock" --run-dir "$tmp/run" \
		--cache-dir "$tmp/cache" --store "$store" $store_opts --backend "$backend" \
		--log-level info --peer-listen 127.0.0.1:0 --peer-tls-ca "$tmp/tls/fleet.pem" \
		--peer-tls-cert "$tmp/tls/a.pem" --peer-tls-key "$tmp/tls/a.key" "$@" \
		2>"$tmp/$name.log" &
	daemon=$!
	wait_healthz "$name" "$daemon" "$tmp/$name.log"
}
metric() {
	curl -s --unix-socket "$sock" http://d/metrics |
		sed -n "s/^memsnap_recovery_removed_total{kind=\"$1\"} //p"
}
# wait_for NAME COMMAND...: until COMMAND succeeds (60 s)
wait_for() {
	what=$1
	shift
	tries=0
	until "$@"; do
		tries=$((tries + 1))
		[ $tries -lt 600 ] || { bad "never: $what"; return 1; }
		sleep 0.1
	done
}
log_has() { grep -q "$2" "$tmp/$1.log"; }
status_is() {
	api GET "/v1/builds/$1"
	[ "$(field .status)" = "$2" ]
}

# Every header in the store has its data, of the size its builds table says.
check_headers() {
	for h in $(store_list "" | sed -n 's|^\([0-9a-f-]*\)/memfile.header .*|\1|p'); do
		api GET "/v1/builds/$h"
		want=$(field .diff_bytes)
		got=$(key_size "$h/memfile")
		if [ -n "$got" ] && [ "$got" = "$want" ]; then ok; else
			bad "$1: the header of $h is in the store, its data is ${got:-missing} bytes (header: $want)"
		fi
	done
}

seed=0
# crash POINT HOOK_FLAGS WAIT_COMMAND OUTCOME(complete|lost)
# (start, wait_for and check_headers set name/what/want: crash uses its own names)
crash() {
	point=$1 hooks=$2 reached=$3 outcome=$4
	seed=$((seed + 1))
	# shellcheck disable=SC2086
	start "$point" $hooks || return
	api POST /v1/sandboxes "{\"guest\":\"pattern\",\"mem_mib\":16,\"exec\":{\"command\":\"fill\",\"arg0\":$seed,\"arg1\":1}}"
	expect "$point: start" 201 "$code"
	sid=$(field .id)
	api POST "/v1/sandboxes/$sid/pause"
	expect "$point: pause" 200 "$code"
	build=$(field .build_id)
	wait_for "$point: stage reached" $reached
	if [ "$point" != published ]; then
		has_key "peers/$build" && ok || bad "$point: no peers/ record while the pause runs"
	fi
	left=$(store_list "$build/" | sed 's/ .*//' | tr '\n' ' ' | sed 's/ $//')
	record=$(has_key "peers/$build" && echo "peers/$build")
	lease=$(has_key "uploads/$build" && echo "uploads/$build")
	kill -KILL "$daemon"
	wait "$daemon" 2>/dev/null
	daemon=""
	cached=$(ls -A "$tmp/cache" | grep -v '^\.memsnapd\.lock$' | grep -cv '^\.memsnapd\.uploads$')
	planted=0
	if [ "$point" != published ]; then # the build is in the upload journal
		plant_incomplete "$build" && planted=1 || bad "$point: cannot plant an unfinished put"
	fi
	temps=""
	[ "$storekind" = fs ] && temps=$(cd "$tmp/store" && find . -name '.*.tmp.*' -printf '%P ')
	echo "crash point $point: the store held: ${left:-nothing of the build}${record:+, $record}${lease:+, $lease}${temps:+, temp files $temps}; the cache dir $cached entries"
	start "$point-restart" || return
	check_headers "$point"
	if [ "$outcome" = complete ]; then
		has_key "$build/memfile.header" && ok || bad "$point: the header went"
		api POST /v1/sandboxes "{\"build_id\":\"$build\",\"exec\":{\"command\":\"verify\",\"arg0\":$seed,\"arg1\":1}}"
		expect "$point: resumes after the restart" 201 "$code"
		expect "$point: cold" cold "$(field .start_type)"
		expect "$point: the guest verifies its memory" 0 "$(field .report.result0)"
		expect "$point: no object removed" 0 "$(metric store_object)"
	else
		api GET "/v1/builds/$build"
		expect "$point: lost build: 410" 410 "$code"
		expect "$point: lost build: error" lost "$(field .error)"
		api POST /v1/sandboxes "{\"build_id\":\"$build\"}"
		expect "$point: resume of a lost build: 410" 410 "$code"
		expect "$point: nothing of it in the store" "" "$(store_list "$build/")"
		n=$(echo "$left" | wc -w)
		expect "$point: its objects counted" "$n" "$(metric store_object)"
		log_has "$point-restart" "build $build was lost" && ok || bad "$point: no log line for the lost build"
	fi
	has_key "peers/$build" && bad "$point: the stale peers/ record stayed" || ok
	expect "$point: no unfinished put of the build left" 0 "$(incomplete "$build")"
	expect "$point: the unfinished put counted" "$planted" "$(metric incomplete_put)"
	[ -n "$record" ] && expect "$point: the record counted" 1 "$(metric peer_record)"
	has_key "uploads/$build" && bad "$point: the stale uploads/ lease stayed" || ok
	expect "$point: the upload lease counted" "$([ -n "$lease" ] && echo 1 || echo 0)" "$(metric upload_lease)"
	expect "$point: the cache dir's leftovers counted" "$cached" "$(metric cache_entry)"
	extra=$(ls -A "$tmp/cache" | grep -v '^\.memsnapd\.lock$' | grep -v '^\.memsnapd\.uploads$')
	[ -z "$(ls -A "$tmp/cache/.memsnapd.uploads" 2>/dev/null)" ] && ok ||
		bad "$point: the upload journal is not empty: $(ls -A "$tmp/cache/.memsnapd.uploads")"
	echo "crash point $point: recovery removed $(metric store_object) objects, $(metric peer_record) peers/ records, $(metric upload_lease) uploads/ leases, $(metric incomplete_put) unfinished puts, $(metric cache_entry) cache entries ($outcome); cache dir after: ${extra:-lock and journal only}"
	kill -TERM "$daemon"
	wait "$daemon"
	expect "$point: clean stop after the recovery" 0 $?
	daemon=""
}

# the stage each hook holds, seen from outside
compare_held() { status_is "$build" deduping; }
drain_held() { api GET "/v1/builds/$build" && [ "$(field .pages.dirty)" != null ]; }
data_held() { status_is "$build" uploading; }
data_in_store() { has_key "$build/memfile" && has_key "$build/snapfile" && has_key "$build/metadata.json"; }
# held at the header's put: every object before it is in, the checksum table last (without
# it the listing could miss the table, put between the listing and the kill)
header_held() { data_in_store && has_key "$build/checksums"; }
header_in_store() { has_key "$build/memfile.header"; }
published() { status_is "$build" published && ! has_key "peers/$build"; }

crash compare "--test-stall-compare 600s" compare_held lost
crash drain "--test-stall-drain 600s" drain_held lost
crash data "--test-hold-store put:/memfile" data_held lost
crash between "--test-hold-store put:memfile.header" header_held lost
crash header "--test-hold-store remove:peers/" header_in_store complete
crash published "" published complete

echo "test_crash ($backend, $storekind): $pass passed, $fail failed"
[ "$fail" -eq 0 ]
