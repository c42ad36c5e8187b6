#!/bin/sh
# The demo: what memsnap can do on this machine today.
#   scripts/demo.sh BUILD_DIR
# Builds a 3-layer snapshot chain of 64 MiB of simulated guest memory in a local
# object store (the embedded default), publishes it the way a pause does (data,
# then header; the top layer zstd-framed), reads every page of every layer back
# through its header and compares it with a model, and prints the timings and
# the top header. Sandboxes (kvm or proc backend), the page server and warm/cold
# resume join this demo as their issues land.
set -eu
build=${1:-build}
memsnap="$build/src/cli/memsnap"
store=$(mktemp -d /tmp/memsnap-demo.XXXXXX)
trap 'rm -rf "$store"' EXIT INT TERM

if [ -e /dev/kvm ] && [ -r /dev/kvm ]; then kvm="present"; else kvm="absent"; fi
echo "memsnap demo: /dev/kvm is $kvm on this machine; sandbox backends (kvm, proc) are not built yet,"
echo "so this demo runs the snapshot layer on simulated guest memory."
echo
"$memsnap" demo chain --store "file://$store" --mem 64 --layers 3
echo
top=$(ls -t "$store"/*/memfile.header | head -1)
echo "memsnap header inspect $top (first lines):"
"$memsnap" header inspect "$top" | head -16
"$memsnap" header validate "$top"
