#!/bin/sh
# The two-node part of the demo (make demo NODES=2):
#   scripts/demo-nodes.sh BUILD_DIR [MIB]
# Two memsnapd nodes share one object store (a temp dir; STORE=s3: a local S3
# server) and each has its own cache. As root with ip(8) they run in two network
# namespaces joined by a veth pair (10.79.x.1 and .2); otherwise both on loopback
# (127.0.0.1 and 127.0.0.2). Node A runs a pattern guest and pauses it; its
# upload is held on purpose (test_hold_upload) so the window before the upload
# lands stays open. Node B resumes the build at once: the header, snapfile and
# every page come from A's peer server, and the guest verifies all its memory.
# Then A's upload goes, A stops, and B resumes the build again, from the store.
set -eu
build=${1:-build}
mib=${2:-256}
memsnapd="$build/src/node/memsnapd"
memsnap="$build/src/cli/memsnap"
work=$(mktemp -d /tmp/memsnap-demo-nodes.XXXXXX)
pids=""
nsa="" nsb="" rgw=""
. "$(dirname "$0")/netns.sh"
cleanup() {
	for p in $pids; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	[ -n "$nsa" ] && netns_unpair "$nsa" "$nsb"
	[ -n "$rgw" ] && "$(dirname "$0")/rgw.sh" stop "$work/rgw" >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
export MEMSNAP_PEER_TOKEN="demo-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
store_uri="file://$work/store"
s3_opts=""
if [ "${STORE:-file}" = s3 ]; then
	echo "starting a local S3 server (scripts/rgw.sh) ..."
	rgw=yes
	eval "$("$(dirname "$0")/rgw.sh" start "$work/rgw")"
	export MEMSNAP_S3_ACCESS_KEY MEMSNAP_S3_SECRET_KEY MEMSNAP_S3_REGION
	store_uri="s3://memsnap-demo-nodes/builds"
	s3_opts="--s3-endpoint $MEMSNAP_S3_ENDPOINT --s3-create-bucket on"
fi

# where the nodes live: two network namespaces, or loopback
tag=$$
net=10.79.$((tag % 250 + 1))
if [ -z "$rgw" ] && [ "$(id -u)" = 0 ] && command -v ip >/dev/null &&
	netns_pair "msna$tag" "msnb$tag" "$net" "$tag"; then
	nsa="msna$tag" nsb="msnb$tag"
	addr_a="$net.1" addr_b="$net.2"
	where="two network namespaces joined by a veth pair"
	run_a="ip netns exec $nsa" run_b="ip netns exec $nsb"
else
	addr_a=127.0.0.1 addr_b=127.0.0.2
	where="loopback (no network namespaces here${rgw:+: the S3 server is on the host's loopback})"
	run_a="" run_b=""
fi

# the peer link is TLS: a fleet CA and a certificate for each node's address
"$(dirname "$0")/peer-certs.sh" "$work/tls" fleet "A:$addr_a" "B:$addr_b"

# start NAME ADDR RUN [FLAGS...]
start() {
	name=$1 addr=$2 run=$3
	shift 3
	# shellcheck disable=SC2086
	$run "$memsnapd" --config /dev/null --socket "$work/$name.sock" --run-dir "$work/run-$name" \
		--cache-dir "$work/cache-$name" --store "$store_uri" $s3_opts --log-level warn \
		--peer-listen "$addr:0" --peer-tls-ca "$work/tls/fleet.pem" \
		--peer-tls-cert "$work/tls/$name.pem" --peer-tls-key "$work/tls/$name.key" \
		"$@" 2>>"$work/$name.log" &
	eval "pid_$name=$!"
	pids="$pids $!"
	until MEMSNAP_SOCKET="$work/$name.sock" "$memsnap" sandbox ls -q >/dev/null 2>&1; do
		kill -0 "$(eval echo \$pid_"$name")" 2>/dev/null || { cat "$work/$name.log"; exit 1; }
		sleep 0.1
	done
}
stop() {
	pid=$(eval echo \$pid_"$1")
	kill -TERM "$pid"
	wait "$pid"
	pids=$(echo "$pids" | sed "s/ $pid//")
}
on() { # on NAME memsnap-args...: the CLI against node NAME
	name=$1
	shift
	MEMSNAP_SOCKET="$work/$name.sock" "$memsnap" "$@"
}
j() { jq -r "$1" "$work/out"; }
metric() { curl -s --unix-socket "$work/$1.sock" http://d/metrics | sed -n "s/^$2 //p"; }

seed=777
echo "two nodes on $where; store $store_uri"
start A "$addr_a" "$run_a" --test-hold-upload "$work/release"
start B "$addr_b" "$run_b"
echo "node A: peer server on $(curl -s --unix-socket "$work/A.sock" http://d/healthz | jq -r .peer_address)"
echo "node B: peer server on $(curl -s --unix-socket "$work/B.sock" http://d/healthz | jq -r .peer_address)"
on A sandbox start --guest pattern --mem "$mib" --exec fill --seed $seed --epoch 1 --json >"$work/out"
id=$(j .id)
printf 'A: sandbox %s (%s MiB) filled its memory\n' "$id" "$mib"
on A sandbox pause "$id" --json >"$work/out"
build=$(j .build_id)
printf 'A: paused into build %s (resumable after %.2f ms); its upload is held\n' "$build" "$(j .pause_ms)"
on B sandbox start --build "$build" --exec verify --seed $seed --epoch 1 --json >"$work/out"
peer_ms=$(j .create_ms)
peer_bad=$(j .report.result0)
bid=$(j .id)
a_status=$(on A build show "$build" --json | jq -r .status)
printf 'B: resumed it through A (A: %s): %.1f ms, the guest found %s mismatched pages\n' \
	"$a_status" "$peer_ms" "$peer_bad"
printf 'B: %s bytes read from A, %s reads from the store\n' "$(metric B memsnap_peer_read_bytes_total)" \
	"$(metric B 'memsnap_peer_reads_total{source="store"}')"
on B sandbox rm -q "$bid"
on A sandbox resume "$id" --exec verify --seed $seed --epoch 1 --json >"$work/out"
local_ms=$(j .create_ms)
local_bad=$(j .report.result0)
printf 'A: the same build resumed on its own node (warm): %.1f ms, %s mismatched pages\n' \
	"$local_ms" "$local_bad"
touch "$work/release"
until [ "$(on A build show "$build" --json | jq -r .status)" = published ]; do sleep 0.2; done
echo "A: upload released and published; A stops"
stop A
on B sandbox start --build "$build" --exec verify --seed $seed --epoch 1 --json >"$work/out"
store_ms=$(j .create_ms)
store_bad=$(j .report.result0)
printf 'B: resumed again with A gone: %.1f ms from the store, %s mismatched pages\n' \
	"$store_ms" "$store_bad"
stop B
echo
echo "| resume (+ verify $mib MiB) | ms |"
echo "|---|---|"
printf '| on B through A'"'"'s peer server, before the upload | %.1f |\n' "$peer_ms"
printf '| on A, the origin (warm) | %.1f |\n' "$local_ms"
printf '| on B from the store, A gone | %.1f |\n' "$store_ms"
if [ "$peer_bad" = 0 ] && [ "$local_bad" = 0 ] && [ "$store_bad" = 0 ]; then
	echo "demo (2 nodes): ok, the guest verified all its memory on both nodes"
else
	echo "demo (2 nodes): FAILED: the guest found wrong memory"
	exit 1
fi
