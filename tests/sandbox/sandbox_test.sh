# sandbox_test.sh - sourced by the sandbox shell tests (after expect.sh is read):
#   sandbox_test_init NAME   $tmp (removed at exit) and $backends (proc, and kvm
#                            where /dev/kvm opens; a note says when it does not)
#   sandbox_test_finish      exit: 1 on any failure; 77 (skip, with the reason) when
#                            the kvm half could not run; else 0
#   handler_start SOCK MEMFILE LOG
#                            starts $handler (fc_handler) on SOCK; $hpid; fails the
#                            check when it does not listen
sandbox_test_init() {
	tmp=$(mktemp -d "/tmp/memsnap-$1.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	backends=proc
	if python3 -c 'import os; os.close(os.open("/dev/kvm", os.O_RDWR))' 2>/dev/null; then
		backends="proc kvm"
	else
		echo "note: /dev/kvm does not open here: the kvm half of this test did not run"
		not_run="the kvm half (/dev/kvm does not open here)"
	fi
}

sandbox_test_finish() {
	echo "pass $pass fail $fail"
	[ "$fail" -eq 0 ] || exit 1
	[ -z "${not_run:-}" ] || { echo "SKIP: not run: $not_run"; exit 77; }
	exit 0
}

handler_start() {
	# the socket of a handler started before on the same path is still there: without this
	# the wait below could end before the new handler installs its SIGTERM handler, and a
	# kill at once (a restore that fails early) ended it without its summary line
	rm -f "$1"
	"$handler" "$1" "$2" >"$3" 2>&1 &
	hpid=$!
	hs_i=0
	while [ ! -S "$1" ] && [ $hs_i -lt 200 ]; do sleep 0.05; hs_i=$((hs_i + 1)); done
	[ -S "$1" ] || bad "the handler did not listen on $1 (set-up)"
}
