#!/bin/sh
# test_cli.sh - the memsnap command line as a user meets it: --help everywhere,
# clear errors and exit codes for bad input, a demo chain, header inspect/validate.
#   test_cli.sh PATH_TO_MEMSNAP
set -u
memsnap=${1:?usage: test_cli.sh MEMSNAP}
tmp=$(mktemp -d /tmp/memsnap-cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
check() { # check NAME EXPECTED_RC COMMAND...
	name=$1 want=$2
	shift 2
	"$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$rc" -eq "$want" ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAIL: $name: exit $rc, wanted $want"
		sed 's/^/  | /' "$tmp/out" "$tmp/err" | head -20
	fi
}
contains() { # contains NAME FILE TEXT
	if grep -q -- "$3" "$2"; then pass=$((pass + 1)); else
		fail=$((fail + 1))
		echo "FAIL: $1: '$3' not in output"
		sed 's/^/  | /' "$2" | head -20
	fi
}

check "top-level help" 0 "$memsnap" --help
contains "help lists header inspect" "$tmp/out" "header inspect"
check "no arguments" 2 "$memsnap"
check "unknown command" 2 "$memsnap" frobnicate
for cmd in "header inspect" "header validate" "demo chain" "pageserver"; do
	# shellcheck disable=SC2086
	check "$cmd --help" 0 "$memsnap" $cmd --help
	contains "$cmd --help says usage" "$tmp/out" "usage: memsnap"
done
check "inspect without a file" 2 "$memsnap" header inspect
check "inspect a missing file" 1 "$memsnap" header inspect "$tmp/none.header"
contains "missing file reason" "$tmp/err" "No such file"
printf 'not a header at all, but long enough to hold the metadata block of 64 bytes....' >"$tmp/bad.header"
check "validate garbage" 1 "$memsnap" header validate "$tmp/bad.header"
contains "garbage reason" "$tmp/err" "invalid header"
check "bad store uri" 1 "$memsnap" header inspect "gopher://x/y/memfile.header"
check "bad build id" 1 "$memsnap" header inspect "file://$tmp" --build not-a-uuid
check "demo bad size" 2 "$memsnap" demo chain --store "file://$tmp/store" --mem 0
check "pageserver without store" 2 "$memsnap" pageserver --build x --socket "$tmp/s"
check "pageserver bad batch" 2 "$memsnap" pageserver --store "file://$tmp" \
	--build 00000000-0000-0000-0000-000000000001 --socket "$tmp/s" --batch 3000
check "pageserver unknown build" 1 "$memsnap" pageserver --store "file://$tmp/store" \
	--build 00000000-0000-0000-0000-000000000001 --socket "$tmp/s"

check "demo chain" 0 "$memsnap" demo chain --store "file://$tmp/store" --mem 8 --layers 3
contains "demo verified" "$tmp/out" "ok, every byte matches"
top=$(ls -t "$tmp"/store/*/memfile.header | head -1)
check "validate the demo's header" 0 "$memsnap" header validate "$top"
contains "validate says valid" "$tmp/out" "valid: version"
check "inspect --json" 0 "$memsnap" header inspect --json "$top"
if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); m=d["metadata"]; assert m["size"]==8<<20 and d["mappings"] and d["builds"] and d["incomplete"] is False and all(k in d["mappings"][0] for k in ("offset","length","build_id","storage_offset"))' "$tmp/out"; then
	pass=$((pass + 1))
else
	fail=$((fail + 1))
	echo "FAIL: inspect --json is not the documented object"
fi
build=$(basename "$(dirname "$top")")
check "inspect from a store uri" 0 "$memsnap" header inspect "file://$tmp/store" --build "$build"
contains "inspect table" "$tmp/out" "STORAGE_OFFSET"
check "inspect store object uri" 0 "$memsnap" header inspect "file://$tmp/store/$build/memfile.header"
# a truncated header is rejected, never half-read
head -c 100 "$top" >"$tmp/trunc.header"
check "validate truncated" 1 "$memsnap" header validate "$tmp/trunc.header"

check "demo resume" 0 "$memsnap" demo resume --store "file://$tmp/resume" --mem 8 --stall 1
contains "demo resume verified" "$tmp/out" "ok, every byte matches (warm and cold)"
contains "warm resume did not wait" "$tmp/out" "the resume did not wait for it"
check "demo resume --help" 0 "$memsnap" demo resume --help
check "demo sandbox" 0 "$memsnap" demo sandbox --store "file://$tmp/sandbox" --mem 8 --stall 1
contains "demo sandbox backend" "$tmp/out" "sandbox: backend proc"
contains "demo sandbox verified" "$tmp/out" "the guest verified all its memory, warm and cold"
contains "sandbox warm did not wait" "$tmp/out" "the resume did not wait for it"
check "demo sandbox --help" 0 "$memsnap" demo sandbox --help
check "demo sandbox kvm" 1 "$memsnap" demo sandbox --store "file://$tmp/x" --backend kvm
check "demo sandbox bad backend" 2 "$memsnap" demo sandbox --store "file://$tmp/x" --backend vmware

# vm run / restore: eager from a memory file (a regular file: not the memfd's filesystem),
# and lazy through a separate `memsnap pageserver` process
check "vm run --help" 0 "$memsnap" vm run --help
check "vm restore --help" 0 "$memsnap" vm restore --help
check "vm run bad guest" 2 "$memsnap" vm run --guest doom --out "$tmp/vm"
check "vm run bad mem" 2 "$memsnap" vm run --mem 12345 --out "$tmp/vm"
check "vm run kvm" 1 "$memsnap" vm run --backend kvm --out "$tmp/vm"
check "vm run pattern" 0 "$memsnap" vm run --guest pattern --mem 4M --seed 9 --epoch 2 --out "$tmp/vm"
contains "vm run says its backend" "$tmp/out" "sandbox: backend proc"
check "vm restore eager" 0 "$memsnap" vm restore --mem 4M --eager "$tmp/vm/memory" \
	--snapfile "$tmp/vm/snapfile" --seed 9 --epoch 2
contains "eager: no mismatch" "$tmp/out" "0 mismatched pages"
check "vm restore wrong seed" 1 "$memsnap" vm restore --mem 4M --eager "$tmp/vm/memory" \
	--snapfile "$tmp/vm/snapfile" --seed 8 --epoch 2
check "vm restore other size" 1 "$memsnap" vm restore --mem 8M --eager "$tmp/vm/memory" \
	--snapfile "$tmp/vm/snapfile"
head -c 1000 "$tmp/vm/snapfile" >"$tmp/vm/short"
check "vm restore truncated snapfile" 1 "$memsnap" vm restore --mem 4M \
	--eager "$tmp/vm/memory" --snapfile "$tmp/vm/short"
check "vm run counter" 0 "$memsnap" vm run --guest counter --mem 1M --out "$tmp/vmc"
check "vm restore counter" 0 "$memsnap" vm restore --guest counter --mem 1M \
	--eager "$tmp/vmc/memory" --snapfile "$tmp/vmc/snapfile"
contains "counter continued" "$tmp/out" "counter 2000000 -> 3000000"
check "vm run to a store" 0 "$memsnap" vm run --guest pattern --mem 4M --seed 5 \
	--store "file://$tmp/vmstore"
build=$(sed -n 's/^published: build \([0-9a-f-]\{36\}\) .*/\1/p' "$tmp/out")
"$memsnap" pageserver --store "file://$tmp/vmstore" --build "$build" --socket "$tmp/ps.sock" \
	>"$tmp/ps.log" 2>&1 &
ps_pid=$!
i=0
while [ ! -S "$tmp/ps.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
check "vm restore lazy (separate page server)" 0 "$memsnap" vm restore --mem 4M \
	--lazy "$tmp/ps.sock" --store "file://$tmp/vmstore" --build "$build" --seed 5
contains "lazy: no mismatch" "$tmp/out" "lazy, resumed"
sleep 0.3
kill -TERM "$ps_pid"
wait "$ps_pid"
contains "page server summary" "$tmp/ps.log" "session 1"

# the same against the real S3 server, when the suite started one
if [ -n "${MEMSNAP_S3_ENDPOINT:-}" ]; then
	export AWS_ACCESS_KEY_ID="$MEMSNAP_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$MEMSNAP_S3_SECRET_KEY"
	prefix="cli-$$"
	check "demo chain on s3" 0 "$memsnap" demo chain --store "s3://memsnap-cli/$prefix" --mem 4
	contains "s3 demo verified" "$tmp/out" "ok, every byte matches"
	build=$(sed -n 's/^  layer 2  \([0-9a-f-]\{36\}\) .*/\1/p' "$tmp/out")
	check "inspect from s3" 0 "$memsnap" header inspect "s3://memsnap-cli/$prefix" --build "$build" --json
	contains "s3 header is the top layer" "$tmp/out" "\"generation\":	2"
	check "validate s3 object uri" 0 "$memsnap" header validate "s3://memsnap-cli/$prefix/$build/memfile.header"
else
	echo "note: MEMSNAP_S3_ENDPOINT not set: the s3 part of this test did not run"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
