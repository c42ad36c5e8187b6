#!/bin/sh
# test_foreign_handler.sh - a lazy restore served by a page-fault handler that is
# not memsnap's (fc_handler.c, written from Firecracker's documentation), on each
# backend: the guest must restore and verify every page, the handler must have
# served its faults, and it must see the VMM's socket stay open until the sandbox
# is gone (Firecracker never closes it; a handler may take a hang-up as the end).
#   test_foreign_handler.sh MEMSNAP FC_HANDLER
set -u
memsnap=${1:?usage: test_foreign_handler.sh MEMSNAP FC_HANDLER}
handler=${2:?usage: test_foreign_handler.sh MEMSNAP FC_HANDLER}
. "${MEMSNAP_SOURCE_ROOT:?}/tests/expect.sh"
. "$MEMSNAP_SOURCE_ROOT/tests/sandbox/sandbox_test.sh"
sandbox_test_init foreign

for b in $backends; do
	vm="$tmp/vm-$b"
	if ! "$memsnap" vm run --backend "$b" --guest pattern --mem 4M --seed 7 --epoch 3 \
		--out "$vm" >"$tmp/run.log" 2>&1; then
		bad "vm run [$b] failed (set-up)"
		sed 's/^/  | /' "$tmp/run.log"
		continue
	fi
	sock="$tmp/fc-$b.sock"
	handler_start "$sock" "$vm/memory" "$tmp/handler-$b.log"
	[ -S "$sock" ] || { kill "$hpid"; continue; }
	timeout 120 "$memsnap" vm restore --backend "$b" --mem 4M --lazy "$sock" \
		--snapfile "$vm/snapfile" --seed 7 --epoch 3 >"$tmp/restore.log" 2>&1
	rc=$?
	expect "lazy restore through the foreign handler [$b] exit" 0 "$rc"
	if grep -q "the guest verified its memory: 0 mismatched pages" "$tmp/restore.log"; then ok; else
		bad "[$b] the guest did not verify every page"
		sed 's/^/  | /' "$tmp/restore.log"
	fi
	# the sandbox is gone: its end of the socket closes, and the handler exits by itself
	i=0
	while kill -0 "$hpid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	if kill -0 "$hpid" 2>/dev/null; then
		bad "[$b] the handler did not see the sandbox's socket close"
		kill -TERM "$hpid"
	fi
	wait "$hpid"
	expect "handler exit status [$b]" 0 "$?"
	sed 's/^/  [handler] /' "$tmp/handler-$b.log"
	line=$(grep '^fc_handler: faults' "$tmp/handler-$b.log")
	faults=$(echo "$line" | sed -n 's/.* faults \([0-9]*\) .*/\1/p')
	copied=$(echo "$line" | sed -n 's/.* copied \([0-9]*\) .*/\1/p')
	# the pattern guest reads every page of its 4 MiB (1024 pages) once
	if [ "${faults:-0}" -gt 0 ] && [ "${copied:-0}" -gt 0 ]; then ok; else
		bad "[$b] the handler served no fault ($line)"
	fi
	expect "the handler saw the end of the sandbox [$b]" "vmm-hangup" \
		"$(echo "$line" | sed -n 's/.* exit \([a-z-]*\)$/\1/p')"
done
sandbox_test_finish
