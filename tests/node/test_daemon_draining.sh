#!/bin/sh
# test_daemon_draining.sh - the 503 a stopping memsnapd answers, live: a client holds
# a keep-alive connection open across the SIGTERM; while the daemon waits for an
# upload (every store write takes 2 s), a request on that connection gets 503
# shutting_down with Retry-After: 5, /healthz on it still answers 200, and the daemon
# then stops cleanly with the build published.
#   test_daemon_draining.sh MEMSNAPD
set -u
memsnapd=${1:?usage: test_daemon_draining.sh MEMSNAPD}
for tool in python3 curl jq; do
	command -v $tool >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
tmp=$(mktemp -d /tmp/msd-drain.XXXXXX)
daemon=""
client=""
cleanup() {
	[ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null
	[ -n "$client" ] && kill -KILL "$client" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/../expect.sh"
. "$(dirname "$0")/daemon_lib.sh" # api, field, wait_healthz
sock="$tmp/api.sock"
mkdir "$tmp/store"
"$memsnapd" --config=/dev/null --socket="$sock" --run-dir="$tmp/run" --cache-dir="$tmp/cache" \
	--store="file://$tmp/store" --backend=proc --test-store-delay=2s 2>"$tmp/daemon.log" &
daemon=$!
wait_healthz memsnapd "$daemon" "$tmp/daemon.log" || exit 1
api POST /v1/sandboxes '{"guest":"pattern","mem_mib":8,"exec":{"command":"fill","arg0":5,"arg1":1}}'
expect "create" 201 "$code"
sid=$(field .id)
api POST "/v1/sandboxes/$sid/pause"
build=$(field .build_id)
tries=0
while :; do
	api GET "/v1/builds/$build"
	[ "$(field .status)" = uploading ] && { ok; break; }
	tries=$((tries + 1))
	[ $tries -lt 600 ] || { bad "build $build never uploading: $(cat "$tmp/body")"; break; }
	sleep 0.05
done

# the client: one connection; a request, then (once a line comes down the fifo) two more
mkfifo "$tmp/go"
cat >"$tmp/client.py" <<'PY'
import http.client, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sys.argv[1])
c = C("memsnapd")
def get(path):
    c.request("GET", path)
    r = c.getresponse()
    body = r.read().decode()
    print(path, r.status, r.getheader("Retry-After"), body.replace("\n", " "), flush=True)
get("/healthz")
open(sys.argv[2]).readline()
get("/v1/sandboxes")
get("/healthz")
PY
python3 "$tmp/client.py" "$sock" "$tmp/go" >"$tmp/client.out" 2>&1 &
client=$!
exec 3>"$tmp/go"
tries=0
until grep -q "^/healthz " "$tmp/client.out" || ! kill -0 "$client" 2>/dev/null; do
	tries=$((tries + 1))
	[ $tries -lt 300 ] || break
	sleep 0.05
done
expect "before the stop: /healthz" 200 "$(awk '/^\/healthz / {print $2; exit}' "$tmp/client.out")"
kill -TERM "$daemon"
tries=0
until grep -q "stopping" "$tmp/daemon.log"; do
	tries=$((tries + 1))
	[ $tries -lt 600 ] || { bad "the daemon never said it was stopping"; break; }
	sleep 0.05
done
echo go >&3
exec 3>&-
wait "$client"
expect "the client" 0 $?
client=""
line=$(grep "^/v1/sandboxes " "$tmp/client.out")
expect "while stopping: GET /v1/sandboxes on the open connection" 503 "$(echo "$line" | cut -d' ' -f2)"
expect "while stopping: Retry-After" 5 "$(echo "$line" | cut -d' ' -f3)"
echo "$line" | cut -d' ' -f4- | jq -e '.error == "shutting_down"' >/dev/null && ok ||
	bad "while stopping: the error: $line"
expect "while stopping: /healthz on the open connection" 200 \
	"$(awk '/^\/healthz / {n++; if (n == 2) print $2}' "$tmp/client.out")"
# the upload still finished: the stop waited for it

wait "$daemon"
expect "clean stop after the upload" 0 $?
daemon=""
[ -f "$tmp/store/$build/memfile.header" ] && ok || bad "the build was not published"
[ "$fail" -eq 0 ] || sed 's/^/  | /' "$tmp/client.out"
echo "test_daemon_draining: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
