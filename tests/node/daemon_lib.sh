# daemon_lib.sh - sourced by the memsnapd shell tests (after tests/expect.sh):
#   skip_without_kvm BACKEND      exit 77 (SKIP) for kvm where /dev/kvm does not open
#   wait_healthz NAME PID LOG     until $sock answers /healthz; bad + return 1 when the
#                                 daemon exited (its log is printed) or after 60 s
#   api METHOD PATH [BODY]        $code = HTTP status, $tmp/body = the answer (over $sock)
#   field JQ                      a field of the last answer
skip_without_kvm() {
	if [ "$1" = kvm ] && ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
		echo "SKIP: /dev/kvm does not open here"
		exit 77
	fi
}
wait_healthz() {
	tries=0
	until curl -s --unix-socket "$sock" -o /dev/null http://d/healthz; do
		if ! kill -0 "$2" 2>/dev/null; then
			bad "$1: memsnapd exited at start"
			sed 's/^/  | /' "$3"
			return 1
		fi
		tries=$((tries + 1))
		[ $tries -lt 600 ] || { bad "$1: no answer"; return 1; }
		sleep 0.1
	done
}
api() {
	if [ $# -ge 3 ]; then
		code=$(curl -s --unix-socket "$sock" -X "$1" -o "$tmp/body" -w '%{http_code}' \
			-H 'Content-Type: application/json' --data-binary "$3" "http://d$2")
	else
		code=$(curl -s --unix-socket "$sock" -X "$1" -o "$tmp/body" -w '%{http_code}' "http://d$2")
	fi
}
field() { jq -r "$1" "$tmp/body"; }
