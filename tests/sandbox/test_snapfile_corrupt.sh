#!/bin/sh
# test_snapfile_corrupt.sh - a damaged snapfile never restores, on either backend,
# and `memsnap vm restore` says what is wrong with it: truncated, one flipped byte,
# a wrong magic, empty, and the other backend's snapfile; eager and lazy (the
# snapfile is checked before any page is asked for: the handler sees no fault).
#   test_snapfile_corrupt.sh MEMSNAP FC_HANDLER
set -u
memsnap=${1:?usage: test_snapfile_corrupt.sh MEMSNAP FC_HANDLER}
handler=${2:?usage: test_snapfile_corrupt.sh MEMSNAP FC_HANDLER}
. "${MEMSNAP_SOURCE_ROOT:?}/tests/expect.sh"
. "$MEMSNAP_SOURCE_ROOT/tests/sandbox/sandbox_test.sh"
sandbox_test_init snapfile

# restore NAME BACKEND SNAPFILE MEMFILE WANT_REASON [lazy]: exit 1, both lines said
restore() {
	name=$1 rb=$2 snap=$3 mem=$4 reason=$5 mode=${6:-eager}
	if [ "$mode" = lazy ]; then
		sock="$tmp/h.sock"
		handler_start "$sock" "$mem" "$tmp/h.log"
		set -- --lazy "$sock"
	else
		set -- --eager "$mem"
	fi
	timeout 60 "$memsnap" vm restore --backend "$rb" --mem 4M "$@" --snapfile "$snap" \
		>"$tmp/out" 2>"$tmp/err"
	expect "$name: exit" 1 "$?"
	if grep -q "^memsnap: cannot restore: " "$tmp/err" && grep -q "snapfile: $reason" "$tmp/err"; then
		ok
	else
		bad "$name: no clear error (wanted 'snapfile: $reason')"
		sed 's/^/  | /' "$tmp/out" "$tmp/err"
	fi
	if [ "$mode" = lazy ]; then
		kill -TERM "$hpid" 2>/dev/null
		wait "$hpid"
		expect "$name: no page served" "0" "$(sed -n 's/.* faults \([0-9]*\) .*/\1/p' "$tmp/h.log")"
	fi
}

# flip FILE OFFSET: one byte of FILE at OFFSET, inverted
flip() {
	python3 -c 'import sys; p, o = sys.argv[1], int(sys.argv[2]); b = bytearray(open(p, "rb").read()); b[o] ^= 0xff; open(p, "wb").write(b)' "$1" "$2"
}

for b in $backends; do
	vm="$tmp/vm-$b"
	if ! "$memsnap" vm run --backend "$b" --guest pattern --mem 4M --out "$vm" >"$tmp/out" 2>&1; then
		bad "vm run [$b] failed (set-up)"
		sed 's/^/  | /' "$tmp/out"
		continue
	fi
	size=$(wc -c <"$vm/snapfile")
	head -c $((size / 2)) "$vm/snapfile" >"$vm/truncated"
	cp "$vm/snapfile" "$vm/flipped" && flip "$vm/flipped" $((size / 3))
	cp "$vm/snapfile" "$vm/magic" && flip "$vm/magic" 0
	: >"$vm/empty"
	for mode in eager lazy; do
		restore "truncated [$b $mode]" "$b" "$vm/truncated" "$vm/memory" "checksum mismatch" "$mode"
		restore "flipped byte [$b $mode]" "$b" "$vm/flipped" "$vm/memory" "checksum mismatch" "$mode"
		restore "wrong magic [$b $mode]" "$b" "$vm/magic" "$vm/memory" "truncated or not a snapfile" "$mode"
		restore "empty [$b $mode]" "$b" "$vm/empty" "$vm/memory" "truncated or not a snapfile" "$mode"
	done
	# the intact snapfile still restores (the damage above was the only difference)
	"$memsnap" vm restore --backend "$b" --mem 4M --eager "$vm/memory" --snapfile "$vm/snapfile" \
		>"$tmp/out" 2>&1
	expect "intact snapfile restores [$b]" 0 "$?"
done
for b in $backends; do
	for other in $backends; do
		[ "$other" = "$b" ] && continue
		for mode in eager lazy; do
			restore "other backend [$b -> $other $mode]" "$other" "$tmp/vm-$b/snapfile" \
				"$tmp/vm-$b/memory" "written by the $b backend, restoring on $other" "$mode"
		done
	done
done
sandbox_test_finish
