# expect.sh - sourced by the shell tests: counted checks.
#   ok                     one check passed
#   bad MESSAGE            one check failed (printed)
#   expect NAME WANT GOT   ok when GOT is WANT, else bad
# $pass and $fail hold the counts.
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
	fail=$((fail + 1))
	echo "FAIL: $*"
}
expect() { if [ "$2" = "$3" ]; then ok; else bad "$1: got '$3', wanted '$2'"; fi; }
