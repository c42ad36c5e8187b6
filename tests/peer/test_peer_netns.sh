#!/bin/sh
# Two nodes in two network namespaces joined by a veth pair, one object store
# (a directory both see). Node A pauses a guest with the compare held and the
# upload held; node B resumes it at once through A's peer server (found in
# the registry); A's upload is released and A exits; B resumes again from the
# store. Then a node A that dies (SIGKILL) in the middle of B's read: B falls
# back to the store without a failed read. The peer link is TLS (certificates
# of one fleet CA, made here with openssl).
#   test_peer_netns.sh PEER_NODE
# Needs root and ip(8) with netns; exits 77 (skip) where that is missing.
set -eu
node=${1:?usage: test_peer_netns.sh PEER_NODE}
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root for network namespaces"; exit 77; }
command -v ip >/dev/null || { echo "SKIP: no ip(8)"; exit 77; }
tag=$$
nsa=ms7a$tag nsb=ms7b$tag
net=10.77.$((tag % 250 + 1))
work=$(mktemp -d "${TMPDIR:-/tmp}/peer-netns.XXXXXX")
apid=
. "$(dirname "$0")/../../scripts/netns.sh"
cleanup() {
	[ -n "$apid" ] && kill "$apid" 2>/dev/null || true
	netns_unpair "$nsa" "$nsb"
	rm -rf "$work"
}
trap cleanup EXIT
trap "exit 1" INT TERM
if ! netns_pair "$nsa" "$nsb" "$net" "$tag"; then
	echo "SKIP: cannot create network namespaces here"
	exit 77
fi
# the link is TLS: a fleet CA, and a certificate for each node's address
export MEMSNAP_TEST_PEER_TLS_DIR="$work/tls"
sh "$(dirname "$0")/../../scripts/peer-certs.sh" "$MEMSNAP_TEST_PEER_TLS_DIR" fleet "a:$net.1" "b:$net.2"

wait_for() { # FILE PID: until FILE exists, or fail when PID is gone
	while [ ! -e "$1" ]; do
		kill -0 "$2" 2>/dev/null || { echo "node A exited before $1"; return 1; }
		sleep 0.05
	done
}

echo "== A pauses (compare and upload held) and serves on $net.1; B resumes from A"
run1="$work/run1"; mkdir "$run1"
ip netns exec "$nsa" "$node" a "$run1" "$net.1:0" >"$run1/a.log" 2>&1 &
apid=$!
wait_for "$run1/ready" $apid || { cat "$run1/a.log"; exit 1; }
# B cannot even reach A's loopback: the only way is the veth
ip netns exec "$nsb" "$node" b "$run1" peer || { cat "$run1/a.log"; exit 1; }
echo "== A's upload released; A exits; B resumes from the store"
touch "$run1/release"
wait "$apid" || { cat "$run1/a.log"; exit 1; }
apid=
[ -e "$run1/published" ]
ip netns exec "$nsb" "$node" b "$run1" store

echo "== A dies (SIGKILL) in the middle of B's read"
run2="$work/run2"; mkdir "$run2"
ip netns exec "$nsa" "$node" a-dies "$run2" "$net.1:0" >"$run2/a.log" 2>&1 &
apid=$!
wait_for "$run2/ready" $apid || { cat "$run2/a.log"; exit 1; }
ip netns exec "$nsb" "$node" b "$run2" dies || { cat "$run2/a.log"; exit 1; }
status=0
wait "$apid" || status=$?
apid=
[ "$status" = 137 ] || { echo "node A was expected to die by SIGKILL, exit $status"; exit 1; }
echo "ok"
