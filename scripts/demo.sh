#!/bin/sh
# The demo: what memsnap can do on this machine today.
#   scripts/demo.sh BUILD_DIR
# 1. Builds a 3-layer snapshot chain of 64 MiB of simulated guest memory in a
#    local object store (the embedded default), publishing it the way a pause
#    does, and reads every page of every layer back through its header.
# 2. Pauses 256 MiB of simulated guest memory with the dedup compare stalled,
#    resumes it warm through the userfaultfd page server while the compare is
#    still stalled, lets dedup/drain/upload finish, then resumes it cold from
#    the store with an empty cache; a stand-in VMM (Firecracker's handshake)
#    verifies every page each time. Timings are printed as it goes.
# The sandbox backends (kvm, proc) replace the stand-in VMM as their issues land.
set -eu
build=${1:-build}
memsnap="$build/src/cli/memsnap"
store=$(mktemp -d /tmp/memsnap-demo.XXXXXX)
trap 'rm -rf "$store"' EXIT INT TERM

if [ -e /dev/kvm ] && [ -r /dev/kvm ]; then kvm="present"; else kvm="absent"; fi
echo "memsnap demo: /dev/kvm is $kvm here; the sandbox backends (kvm, proc) are not built yet,"
echo "so the demo runs the snapshot layer on simulated guest memory."
echo
echo "== 1. a snapshot chain: publish 3 layers, read every page back through the headers"
"$memsnap" demo chain --store "file://$store/chain" --mem 64 --layers 3
top=$(ls -t "$store"/chain/*/memfile.header | head -1)
"$memsnap" header validate "$top"
echo
echo "== 2. pause, resume warm while dedup is stalled, then cold from the store"
"$memsnap" demo resume --store "file://$store/resume" --mem 256 --stall 5
