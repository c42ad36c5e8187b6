#!/bin/sh
# The demo: what memsnap can do on this machine today.
#   scripts/demo.sh BUILD_DIR
# 1. Runs the pattern guest in a sandbox (kvm where /dev/kvm opens, else proc;
#    the demo says which), pauses it with the dedup compare stalled, resumes it lazily
#    through the userfaultfd page server while the compare is still stalled (the
#    guest verifies all its memory), lets dedup/drain/upload finish into a local
#    object store (the embedded default), then resumes it cold from the store
#    with an empty cache and verifies again. Timings are printed as it goes.
# 2. Builds a 3-layer snapshot chain and reads every page of every layer back
#    through its header.
#
#   scripts/demo.sh BUILD_DIR daemon   (make demo-daemon)
# The same story through the node daemon: memsnapd on a temp socket with a local
# object store, driven with the memsnap CLI (scripts/demo-daemon.sh).
set -eu
build=${1:-build}
memsnap="$build/src/cli/memsnap"
if [ "${2:-}" = daemon ]; then
	exec "$(dirname "$0")/demo-daemon.sh" "$build"
fi
store=$(mktemp -d /tmp/memsnap-demo.XXXXXX)
trap 'rm -rf "$store"' EXIT INT TERM

if [ -e /dev/kvm ] && [ -r /dev/kvm ]; then kvm="present"; else kvm="absent"; fi
echo "memsnap demo: /dev/kvm is $kvm here"
echo
echo "== 1. a sandbox: run a guest, pause it, resume it warm while dedup is stalled, then cold"
"$memsnap" demo sandbox --store "file://$store/sandbox" --mem 256 --stall 5
echo
echo "== 2. a snapshot chain: publish 3 layers, read every page back through the headers"
"$memsnap" demo chain --store "file://$store/chain" --mem 64 --layers 3
top=$(ls -t "$store"/chain/*/memfile.header | head -1)
"$memsnap" header validate "$top"
