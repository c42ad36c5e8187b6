#!/bin/sh
# The demo (make demo): what memsnap does on this machine.
#   scripts/demo.sh BUILD_DIR            (make demo; STORE=s3 for the local S3 server)
# 1. The node daemon's story (scripts/demo-daemon.sh): memsnapd with a local object
#    store in a temp dir runs a pattern guest in a sandbox (kvm where /dev/kvm opens,
#    else proc; it says which), pauses it with the dedup compare stalled on purpose,
#    resumes it warm while dedup is still stalled (the guest verifies all its memory),
#    resumes the published build again as a control, pauses again, restarts with an
#    empty cache and resumes cold from the store (verified again); a table of timings.
# 2. A snapshot chain: 3 layers published and every page read back through the headers.
# 3. NODES=2 (make demo NODES=2): two nodes, one store (scripts/demo-nodes.sh): node B
#    resumes node A's build before A's upload lands, through A's peer server; then
#    from the store with A gone.
#
#   scripts/demo.sh BUILD_DIR library    the same story without the daemon, straight
#                                        through the library (memsnap demo sandbox)
#   scripts/demo.sh BUILD_DIR daemon     part 1 only (make demo-daemon)
set -eu
build=${1:-build}
memsnap="$build/src/cli/memsnap"
here=$(dirname "$0")
if [ "${2:-}" = daemon ]; then
	exec "$here/demo-daemon.sh" "$build"
fi
store=$(mktemp -d /tmp/memsnap-demo.XXXXXX)
trap 'rm -rf "$store"' EXIT INT TERM

if [ -e /dev/kvm ] && [ -r /dev/kvm ]; then kvm="present"; else kvm="absent"; fi
echo "memsnap demo: /dev/kvm is $kvm here"
echo
if [ "${2:-}" = library ]; then
	echo "== 1. a sandbox: run a guest, pause it, resume it warm while dedup is stalled, then cold"
	"$memsnap" demo sandbox --store "file://$store/sandbox" --mem 256 --stall 5
else
	echo "== 1. the node daemon: start, pause, resume warm while dedup is stalled, then cold"
	"$here/demo-daemon.sh" "$build" 256 5
fi
echo
echo "== 2. a snapshot chain: publish 3 layers, read every page back through the headers"
"$memsnap" demo chain --store "file://$store/chain" --mem 64 --layers 3
top=$(ls -t "$store"/chain/*/memfile.header | head -1)
"$memsnap" header validate "$top"
if [ "${NODES:-1}" = 2 ]; then
	echo
	echo "== 3. two nodes: B resumes A's build before A's upload lands, through A's peer server"
	"$here/demo-nodes.sh" "$build" 256
elif [ "${NODES:-1}" != 1 ]; then
	echo "demo: NODES=${NODES} is not supported (1 or 2)" >&2
	exit 2
fi
