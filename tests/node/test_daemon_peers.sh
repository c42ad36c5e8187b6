#!/bin/sh
# test_daemon_peers.sh - two memsnapd nodes in two network namespaces (a veth
# pair between them), each with its own cache dir, one shared object store:
#  1. A pauses a guest with the compare stalled and the upload held; B resumes
#     it at once: header, snapfile and every page from A; the guest verifies
#     all its memory; the header B got names no build but the real one; A's
#     peer server refuses bad input from B's namespace; both scrapes pass
#     promtool. (First, peer configuration errors are refused clearly.)
#     The peer link is TLS: every node has a certificate of the fleet CA (made
#     here with openssl); A refuses a client certificate of another CA, or none,
#     and a client that trusts another CA does not accept A.
#  2. B pauses the sandbox it resumed: its child's header waits for A's upload.
#  3. A's upload is released; A resumes B's child; A stops; a third node
#     resumes B's child cold from the store (zstd on S3: the child's header
#     must name the frames of A's upload); B resumes the build again: from
#     the store now, bit for bit.
#  4. A node that dies (SIGKILL) in the middle of B's read, right after its
#     upload: B falls back to the store without a failed guest read.
#  5. A node with peer_tls = off serves plain HTTP (and says so).
#   test_daemon_peers.sh MEMSNAPD BACKEND STORE
# BACKEND proc|kvm (kvm skips where /dev/kvm does not open); STORE fs|s3 (s3:
# the test S3 server of run-tests.sh, reached from the namespaces through a
# socat relay over a unix socket). Needs root and ip(8): skips (77) without.
set -u
memsnapd=${1:?usage: test_daemon_peers.sh MEMSNAPD BACKEND STORE}
backend=${2:?usage: test_daemon_peers.sh MEMSNAPD BACKEND STORE}
storekind=${3:?usage: test_daemon_peers.sh MEMSNAPD BACKEND STORE}
if [ "$backend" = kvm ] && ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
	echo "SKIP: /dev/kvm does not open here"
	exit 77
fi
[ "$(id -u)" = 0 ] || { echo "SKIP: network namespaces need root"; exit 77; }
command -v ip >/dev/null || { echo "SKIP: no ip(8)"; exit 77; }
if [ "$storekind" = s3 ]; then
	[ -n "${MEMSNAP_S3_ENDPOINT:-}" ] || { echo "FAIL: no MEMSNAP_S3_ENDPOINT (run through make test)"; exit 1; }
	command -v socat >/dev/null || { echo "FAIL: socat is missing (scripts/deps.sh installs it)"; exit 1; }
fi
tag=$$
nsa=msda$tag nsb=msdb$tag
net=10.78.$((tag % 250 + 1))
tmp=$(mktemp -d /tmp/msd-peers.XXXXXX)
pids=""
here=$(dirname "$0")
. "$here/../expect.sh"
. "$here/../../scripts/netns.sh"
cleanup() {
	for p in $pids; do kill -KILL "$p" 2>/dev/null; done
	netns_unpair "$nsa" "$nsb"
	[ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 1" INT TERM
finish() {
	echo "test_daemon_peers ($backend, $storekind): $pass passed, $fail failed"
	[ "$fail" -eq 0 ]
	exit
}

# the fleet's certificates: A (and the nodes after it in A's namespace) on $net.1, B on
# $net.2; and a certificate of another CA for B's address
certs="$tmp/tls"
sh "$here/../../scripts/peer-certs.sh" "$certs" fleet "a:$net.1" "b:$net.2" &&
	sh "$here/../../scripts/peer-certs.sh" "$certs" other "stranger:$net.2" ||
	{ echo "FAIL: scripts/peer-certs.sh (openssl) failed"; exit 1; }
tls() { echo "--peer-tls-ca $certs/fleet.pem --peer-tls-cert $certs/$1.pem --peer-tls-key $certs/$1.key"; }

# configuration errors: clear messages, no daemon
# bad_config NAME WANT_MESSAGE FLAGS...
bad_config() {
	name=$1 want=$2
	shift 2
	"$memsnapd" --config /dev/null --socket "$tmp/x.sock" --run-dir "$tmp/x-run" \
		--cache-dir "$tmp/x-cache" --store "file://$tmp/x-store" --backend "$backend" "$@" \
		2>"$tmp/err" >/dev/null
	rc=$?
	[ "$rc" != 0 ] && grep -q "$want" "$tmp/err" && ok ||
		bad "config $name: exit $rc, $(cat "$tmp/err")"
}
MEMSNAP_PEER_TOKEN="" bad_config "listen without a token" "needs the peer token" --peer-listen 127.0.0.1:0
# shellcheck disable=SC2046
MEMSNAP_PEER_TOKEN=t bad_config "listen on 0.0.0.0" "not 0.0.0.0" --peer-listen 0.0.0.0:0 $(tls a)
# shellcheck disable=SC2046
MEMSNAP_PEER_TOKEN=t bad_config "listen not an address" "not an IPv4" --peer-listen localhost:0 $(tls a)
MEMSNAP_PEER_TOKEN=t bad_config "a static peer without a port" "is not ADDR:PORT" --peers 127.0.0.1
MEMSNAP_PEER_TOKEN=t bad_config "missing token file" "peer_token_file" --peer-token-file "$tmp/none"
# a peer token without TLS: one clear line; plain HTTP only by name; half a TLS config
MEMSNAP_PEER_TOKEN=t bad_config "token without TLS" "the peer link needs TLS" --peer-listen 127.0.0.1:0
[ "$(wc -l <"$tmp/err")" = 1 ] && ok || bad "token without TLS: more than one line: $(cat "$tmp/err")"
MEMSNAP_PEER_TOKEN=t bad_config "client side too" "the peer link needs TLS" --peers 127.0.0.1:7000
MEMSNAP_PEER_TOKEN=t bad_config "no key" "peer_tls_key is not set" --peer-listen 127.0.0.1:0 \
	--peer-tls-ca "$certs/fleet.pem" --peer-tls-cert "$certs/a.pem"
MEMSNAP_PEER_TOKEN=t bad_config "missing CA file" "peer_tls_ca $tmp/none.pem" --peer-listen 127.0.0.1:0 \
	--peer-tls-ca "$tmp/none.pem" --peer-tls-cert "$certs/a.pem" --peer-tls-key "$certs/a.key"
# shellcheck disable=SC2046
MEMSNAP_PEER_TOKEN=t bad_config "plain HTTP with certificates" "peer_tls = off, but" \
	--peer-listen 127.0.0.1:0 --peer-tls off $(tls a)
MEMSNAP_PEER_TOKEN=t bad_config "a key that is not the certificate's" "TLS did not start" \
	--peer-listen 127.0.0.1:0 --peer-tls-ca "$certs/fleet.pem" --peer-tls-cert "$certs/a.pem" \
	--peer-tls-key "$certs/b.key"

if ! netns_pair "$nsa" "$nsb" "$net" "$tag"; then
	echo "SKIP: cannot create network namespaces here"
	exit 77
fi

# the store both nodes share
if [ "$storekind" = s3 ]; then
	hostport=${MEMSNAP_S3_ENDPOINT#http://}
	hostport=${hostport%%/*}
	port=${hostport##*:}
	# host side: the unix socket to the S3 server; each namespace: its own 127.0.0.1:PORT
	socat UNIX-LISTEN:"$tmp/s3.sock",fork TCP:"$hostport" 2>"$tmp/relay.log" &
	pids="$pids $!"
	for ns in "$nsa" "$nsb"; do
		ip netns exec "$ns" socat TCP-LISTEN:"$port",bind=127.0.0.1,fork,reuseaddr \
			UNIX-CONNECT:"$tmp/s3.sock" 2>>"$tmp/relay.log" &
		pids="$pids $!"
	done
	store="s3://peers-$tag/fleet"
	# and compressed diffs: a child over a peer's build must name its uploaded frames
	store_opts="--s3-endpoint http://127.0.0.1:$port --s3-create-bucket on --compress zstd"
else
	mkdir -p "$tmp/store"
	store="file://$tmp/store"
	store_opts=""
fi
export MEMSNAP_PEER_TOKEN="fleet-secret-$tag"
unset MEMSNAP_SOCKET MEMSNAP_TOKEN

# start NAME NS ADDR [FLAGS...]: memsnapd in namespace NS, API on $tmp/NAME.sock,
# peer server on ADDR:0; waits for /healthz
start() {
	name=$1 ns=$2 addr=$3
	shift 3
	[ "$ns" = "$nsa" ] && cert=a || cert=b
	# TLS unless the node is asked for plain HTTP (--peer-tls off first)
	tls_flags=$([ "${1:-} ${2:-}" = "--peer-tls off" ] || tls $cert)
	# shellcheck disable=SC2086
	ip netns exec "$ns" "$memsnapd" --config /dev/null --socket "$tmp/$name.sock" \
		--run-dir "$tmp/run-$name" --cache-dir "$tmp/cache-$name" --store "$store" \
		$store_opts --backend "$backend" --log-level info --peer-listen "$addr:0" \
		$tls_flags "$@" 2>"$tmp/$name.log" &
	eval "pid_$name=$!"
	pids="$pids $!"
	tries=0
	until curl -s --unix-socket "$tmp/$name.sock" -o /dev/null http://d/healthz; do
		if ! kill -0 "$(eval echo \$pid_"$name")" 2>/dev/null; then
			bad "$name: memsnapd exited at start"
			sed 's/^/  | /' "$tmp/$name.log"
			finish
		fi
		tries=$((tries + 1))
		[ $tries -lt 600 ] || { bad "$name: no answer"; finish; }
		sleep 0.1
	done
	ok
}
# api NAME METHOD PATH [BODY]: $code, $tmp/body
api() {
	name=$1
	shift
	if [ $# -ge 3 ]; then
		code=$(curl -s --unix-socket "$tmp/$name.sock" -X "$1" -o "$tmp/body" \
			-w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$3" "http://d$2")
	else
		code=$(curl -s --unix-socket "$tmp/$name.sock" -X "$1" -o "$tmp/body" \
			-w '%{http_code}' "http://d$2")
	fi
}
field() { jq -r "$1" "$tmp/body"; }
# metric NAME SERIES: the value of one series of NAME's /metrics
metric() {
	curl -s --unix-socket "$tmp/$1.sock" http://d/metrics >"$tmp/metrics"
	v=$(grep -F "$2 " "$tmp/metrics" | grep -v '^#' | head -1 | awk '{print $2}')
	echo "${v:-missing}"
}
# wait_status NAME BUILD STATUS
wait_status() {
	tries=0
	while :; do
		api "$1" GET "/v1/builds/$2"
		s=$(field .status)
		[ "$s" = "$3" ] && { ok; return 0; }
		tries=$((tries + 1))
		[ $tries -lt 1200 ] || { bad "$1: build $2 never became $3 ($s)"; return 1; }
		sleep 0.1
	done
}
show_logs() { for n in "$@"; do echo "--- $n.log"; tail -20 "$tmp/$n.log"; done; }

mem=64
seed=4242
echo "== 1. A pauses (compare stalled 1 s, upload held); B resumes at once from A"
start A "$nsa" "$net.1" --test-stall-compare 1s --test-hold-upload "$tmp/release"
start B "$nsb" "$net.2"
api A GET /healthz
expect "A: peer address" "$net.1" "$(field .peer_address | cut -d: -f1)"
api A POST /v1/sandboxes "{\"guest\":\"pattern\",\"mem_mib\":$mem,\"exec\":{\"command\":\"fill\",\"arg0\":$seed,\"arg1\":1}}"
expect "A: create" 201 "$code"
sa=$(field .id)
api A POST "/v1/sandboxes/$sa/pause"
expect "A: pause" 200 "$code"
build=$(field .build_id)
api B POST /v1/sandboxes "{\"build_id\":\"$build\",\"exec\":{\"command\":\"verify\",\"arg0\":$seed,\"arg1\":1}}"
expect "B: resume from A" 201 "$code"
expect "B: cold" cold "$(field .start_type)"
expect "B: all memory verified" 0 "$(field .report.result0)"
expect "B: the guest kind came with A's metadata" pattern "$(field .guest)"
sb=$(field .id)
[ "$code" = 201 ] || show_logs A B
# B's cold resume can end inside A's 1 s compare stall: wait for A to reach
# the held upload (it must stop there: the upload is held until $tmp/release)
wait_status A "$build" uploading
sleep 0.5
api A GET "/v1/builds/$build"
expect "A: upload still held" uploading "$(field .status)"
api B GET "/v1/builds/$build"
expect "B: the build came from a peer" peer "$(field .source)"
expect "B: not in the store yet" on_peer "$(field .status)"
api B GET "/v1/builds/$build/scheduling-metadata"
cp "$tmp/body" "$tmp/b-metadata.json"
# the pages map to the build alone (the rest is nil); its base is the fresh guest's
expect "B: the header's layers: the real build only" "[\"$build\"]" \
	"$(jq -c '.memfile.base_build_id as $b | [.memfile.build_ids[] | select(. != $b)]' "$tmp/body")"
expect "B: the header is durable" false "$(field .pending)"
if [ "$storekind" = fs ]; then # nothing of the build in the store but its record
	# (peers/: the registry; uploads/: the pause's upload lease, since the store's gc)
	expect "store: only the registry and the upload lease" "peers uploads" "$(ls "$tmp/store" | tr '\n' ' ' | sed 's/ $//')"
	[ ! -e "$tmp/store/$build" ] && ok || bad "store: the build's objects before its upload"
	expect "store: the record names A" "$net.1" "$(jq -r .address "$tmp/store/peers/$build" | cut -d: -f1)"
fi
expect "B: header from a peer" 1 "$(metric B memsnap_peer_headers_total)"
peer_reads=$(metric B 'memsnap_peer_reads_total{source="peer"}')
[ "$peer_reads" != missing ] && [ "$peer_reads" -gt 0 ] && ok || bad "B: no peer reads ($peer_reads)"
expect "B: no store reads" 0 "$(metric B 'memsnap_peer_reads_total{source="store"}')"
# its faults by source: from the peer, none from the store
peer_faults=$(metric B 'memsnap_pageserver_fault_duration_seconds_count{source="peer"}')
[ "$peer_faults" != missing ] && [ "$peer_faults" -gt 0 ] && ok || bad "B: no peer faults ($peer_faults)"
expect "B: no store faults" 0 "$(metric B 'memsnap_pageserver_fault_duration_seconds_count{source="store"}')"
served=$(metric A 'memsnap_peer_server_requests_total{answer="available"}')
[ "$served" != missing ] && [ "$served" -gt 0 ] && ok || bad "A: served nothing ($served)"
bytes=$(metric A memsnap_peer_server_bytes_total)
[ "$bytes" != missing ] && [ "$bytes" -gt 0 ] && ok || bad "A: no bytes served ($bytes)"
expect "B: page server errors" 0 "$(metric B 'memsnap_pageserver_faults_total{result="error"}')"
for n in A B; do # the peer families pass promtool on live scrapes with values in them
	curl -s --unix-socket "$tmp/$n.sock" http://d/metrics >"$tmp/scrape"
	if promtool check metrics <"$tmp/scrape" >"$tmp/promtool" 2>&1; then ok; else
		bad "$n: promtool check metrics"
		sed 's/^/  | /' "$tmp/promtool"
	fi
done
# bad input to A's peer server, from B's namespace: clean refusals
api A GET /healthz
pa=$(field .peer_address)
# peer_get WANT_STATUS NAME PATH [TOKEN [CLIENT_CERT]]: over TLS, as B (or CLIENT_CERT)
peer_get() {
	cc=${5:-b}
	if [ "$cc" = none ]; then set -- "$1" "$2" "$3" "${4:-}"; fi
	c=$(ip netns exec "$nsb" curl -s -o "$tmp/pbody" -w '%{http_code}' --cacert "$certs/fleet.pem" \
		$([ "$cc" = none ] || echo "--cert $certs/$cc.pem --key $certs/$cc.key") \
		-H "Authorization: Bearer ${4:-$MEMSNAP_PEER_TOKEN}" "https://$pa$3")
	expect "peer server: $2" "$1" "$c"
	[ "$(jq -r .status "$tmp/pbody" 2>/dev/null)" = not_available ] && ok ||
		bad "peer server: $2: body $(head -c 200 "$tmp/pbody")"
}
peer_get 404 "unknown build" "/peer/v1/builds/6f1c2c7e-4b1e-4c4e-9c1e-1d2e3f405162/memfile.header"
peer_get 400 "unaligned range" "/peer/v1/builds/$build/memfile?offset=100&length=4096"
peer_get 400 "negative length" "/peer/v1/builds/$build/memfile?offset=0&length=-4096"
peer_get 400 "oversized length" "/peer/v1/builds/$build/memfile?offset=0&length=1099511627776"
peer_get 400 "range past the end" "/peer/v1/builds/$build/memfile?offset=1099511627776&length=4096"
peer_get 400 "not a build id" "/peer/v1/builds/nope/memfile.header"
peer_get 401 "bad token" "/peer/v1/builds/$build/memfile.header" wrong-token
# the sealed link: a certificate of another CA, or none, is refused before the token is
# read; a client that trusts another CA does not accept A; plain HTTP gets no answer
peer_get 403 "a client certificate of another CA" "/peer/v1/builds/$build/memfile.header" "" stranger
peer_get 403 "no client certificate" "/peer/v1/builds/$build/memfile.header" "" none
expect "A: uncertified counted" 2 \
	"$(metric A 'memsnap_peer_server_requests_total{answer="uncertified"}')"
c=$(ip netns exec "$nsb" curl -s -o /dev/null -w '%{http_code}' --cacert "$certs/other.pem" \
	--cert "$certs/stranger.pem" --key "$certs/stranger.key" \
	-H "Authorization: Bearer $MEMSNAP_PEER_TOKEN" "https://$pa/peer/v1/builds/$build")
expect "a client of another fleet does not accept A's certificate" 000 "$c"
c=$(ip netns exec "$nsb" curl -s -o /dev/null -w '%{http_code}' \
	-H "Authorization: Bearer $MEMSNAP_PEER_TOKEN" "http://$pa/peer/v1/builds/$build")
[ "$c" != 200 ] && ok || bad "A answered plain HTTP ($c)"
bad_answers=$(metric A 'memsnap_peer_server_requests_total{answer="bad_request"}')
[ "$bad_answers" -ge 5 ] && ok || bad "A: bad requests not counted ($bad_answers)"
expect "A: unauthorized counted" 1 "$(metric A 'memsnap_peer_server_requests_total{answer="unauthorized"}')"

echo "== 2. B pauses the resumed sandbox: its child's header waits for A's upload"
api B POST "/v1/sandboxes/$sb/pause"
expect "B: pause over a peer's build" 200 "$code"
child=$(field .build_id)
sleep 1
api B GET "/v1/builds/$child"
s=$(field .status)
[ "$s" = uploading ] || [ "$s" = deduping ] && ok || bad "B: child $s while its parent is held"
[ "$storekind" = s3 ] || [ ! -e "$tmp/store/$child/memfile.header" ] && ok || bad "B: child header before its parent's"

echo "== 3. A's upload released: both published; A resumes B's child; A stops; B resumes from the store"
touch "$tmp/release"
wait_status A "$build" published
wait_status B "$child" published
wait_status B "$build" published
# every id B's header named is one the published header names: no provisional one
api A GET "/v1/builds/$build/scheduling-metadata"
expect "B's header names only ids of the published header" "[]" \
	"$(jq -c --slurpfile pub "$tmp/body" '.memfile.build_ids - $pub[0].memfile.build_ids' "$tmp/b-metadata.json")"
expect "B's header has the published base" "$(field .memfile.base_build_id)" \
	"$(jq -r .memfile.base_build_id "$tmp/b-metadata.json")"
api A POST /v1/sandboxes "{\"build_id\":\"$child\",\"exec\":{\"command\":\"verify\",\"arg0\":$seed,\"arg1\":1}}"
expect "A: resume B's child" 201 "$code"
expect "A: B's child verified" 0 "$(field .report.result0)"
kill -TERM "$pid_A"
wait "$pid_A"
expect "A: clean stop" 0 $?
# a third node with nothing cached: B's child and A's build under it, all from the store
start C "$nsa" "$net.1"
api C POST /v1/sandboxes "{\"build_id\":\"$child\",\"exec\":{\"command\":\"verify\",\"arg0\":$seed,\"arg1\":1}}"
expect "C: resume B's child cold" 201 "$code"
expect "C: cold" cold "$(field .start_type)"
expect "C: B's child verified from the store" 0 "$(field .report.result0)"
expect "C: no header from a peer" 0 "$(metric C memsnap_peer_headers_total)"
kill -TERM "$pid_C"
wait "$pid_C"
expect "C: clean stop" 0 $?
before=$(metric B 'memsnap_peer_reads_total{source="store"}')
api B POST /v1/sandboxes "{\"build_id\":\"$build\",\"exec\":{\"command\":\"verify\",\"arg0\":$seed,\"arg1\":1}}"
expect "B: resume again, A gone" 201 "$code"
expect "B: warm (cached template)" warm "$(field .start_type)"
expect "B: verified from the store" 0 "$(field .report.result0)"
after=$(metric B 'memsnap_peer_reads_total{source="store"}')
[ "$after" -gt "$before" ] && ok || bad "B: no store reads after A stopped ($before -> $after)"
moved=$(metric B memsnap_peer_builds_moved_total)
[ "$moved" -ge 1 ] && ok || bad "B: the build never moved to the store ($moved)"
expect "B: page server errors" 0 "$(metric B 'memsnap_pageserver_faults_total{result="error"}')"
if [ "$storekind" = fs ]; then
	expect "store: no records left" "" "$(ls "$tmp/store/peers" 2>/dev/null)"
fi

echo "== 4. A node dies (SIGKILL) in the middle of B's read, right after its upload"
start A2 "$nsa" "$net.1" --test-hold-upload "$tmp/never" --test-peer-die-after 3
api A2 POST /v1/sandboxes "{\"guest\":\"pattern\",\"mem_mib\":$mem,\"exec\":{\"command\":\"fill\",\"arg0\":$((seed + 1)),\"arg1\":2}}"
sa2=$(field .id)
api A2 POST "/v1/sandboxes/$sa2/pause"
build2=$(field .build_id)
moved=$(metric B memsnap_peer_builds_moved_total)
api B POST /v1/sandboxes "{\"build_id\":\"$build2\",\"exec\":{\"command\":\"verify\",\"arg0\":$((seed + 1)),\"arg1\":2}}"
expect "B: resume while A2 dies" 201 "$code"
expect "B: verified" 0 "$(field .report.result0)"
[ "$code" = 201 ] || show_logs A2 B
wait "$pid_A2"
expect "A2 died by SIGKILL" 137 $?
grep -q "test_peer_die_after" "$tmp/A2.log" && ok || bad "A2 did not die in a peer read"
# B moved the build to the store: on the failed peer read, or as its poller saw the
# upload land first (A2 published, then died) - either way no guest read failed
after=$(metric B memsnap_peer_builds_moved_total)
[ "$after" -gt "$moved" ] && ok || bad "B: the build never moved to the store ($moved -> $after)"
expect "B: page server errors" 0 "$(metric B 'memsnap_pageserver_faults_total{result="error"}')"
kill -TERM "$pid_B"
wait "$pid_B"
expect "B: clean stop" 0 $?

echo "== 5. plain HTTP only when asked for: peer_tls = off"
start P "$nsb" "$net.2" --peer-tls off
grep -q "plain HTTP (peer_tls = off)" "$tmp/P.log" && ok || bad "P: no warning about plain HTTP"
api P GET /healthz
pp=$(field .peer_address)
c=$(ip netns exec "$nsa" curl -s -o "$tmp/pbody" -w '%{http_code}' \
	-H "Authorization: Bearer $MEMSNAP_PEER_TOKEN" "http://$pp/peer/v1/builds/$build")
expect "P answers plain HTTP" 404 "$c"
kill -TERM "$pid_P"
wait "$pid_P"
expect "P: clean stop" 0 $?
finish
