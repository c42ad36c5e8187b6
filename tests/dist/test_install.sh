#!/bin/sh
# test_install.sh - what `meson install` gives an operator: the binaries, the
# systemd unit with ExecStart from the configured sbindir (Type=notify; checked
# by systemd-analyze where it exists), the annotated config, the docs, the
# LICENSE and the man pages (rendered by groff without warnings). Then the
# installed memsnapd under a stand-in for systemd's notify socket: READY=1 once
# its API answers, STOPPING=1 on SIGTERM.
#   test_install.sh BUILD_DIR
set -u
build=${1:?usage: test_install.sh BUILD_DIR}
tmp=$(mktemp -d /tmp/ms-install.XXXXXX)
dpid=
cleanup() {
	[ -n "$dpid" ] && kill -KILL "$dpid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/../expect.sh"

# where meson says each file goes, then an install into a destdir
if ! meson install -C "$build" --no-rebuild --quiet --destdir "$tmp/root" >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log"
	echo "FAIL: meson install"
	exit 1
fi
prefix=$(meson introspect "$build" --buildoptions |
	python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
sbindir=$(meson introspect "$build" --buildoptions |
	python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="sbindir"][0])')
root="$tmp/root"
for f in "$sbindir/memsnapd" bin/memsnap lib/systemd/system/memsnapd.service \
	share/man/man1/memsnap.1 share/man/man8/memsnapd.8 share/doc/memsnap/daemon.md \
	share/doc/memsnap/design.md share/doc/memsnap/README.md share/doc/memsnap/LICENSE \
	share/doc/memsnap/memsnapd.conf; do
	if [ -e "$root$prefix/$f" ]; then ok; else bad "not installed: $prefix/$f"; fi
done
unit="$root$prefix/lib/systemd/system/memsnapd.service"
expect "ExecStart" "$prefix/$sbindir/memsnapd --config $prefix/etc/memsnap/memsnapd.conf" \
	"$(sed -n 's/^ExecStart=//p' "$unit")"
expect "Type" notify "$(sed -n 's/^Type=//p' "$unit")"
grep -q '^DeviceAllow=/dev/kvm rw' "$unit" && ok || bad "the unit does not allow /dev/kvm"
grep -q '^DeviceAllow=/dev/userfaultfd rw' "$unit" && ok || bad "the unit does not allow /dev/userfaultfd"
grep -q '@' "$unit" && bad "unsubstituted @var@ in the unit: $(grep '@' "$unit")" || ok
if command -v systemd-analyze >/dev/null 2>&1; then
	# a copy whose ExecStart names the binary in the destdir, so that it exists
	mkdir -p "$tmp/unit"
	sed "s|^ExecStart=$prefix|ExecStart=$root$prefix|" "$unit" >"$tmp/unit/memsnapd.service"
	if systemd-analyze verify --man=no "$tmp/unit/memsnapd.service" >"$tmp/verify.log" 2>&1 &&
		! grep -q . "$tmp/verify.log"; then
		ok
	else
		bad "systemd-analyze verify: $(cat "$tmp/verify.log")"
	fi
fi
for m in "$root$prefix/share/man/man1/memsnap.1" "$root$prefix/share/man/man8/memsnapd.8"; do
	if groff -man -ww -z "$m" >"$tmp/groff.log" 2>&1 && [ ! -s "$tmp/groff.log" ]; then
		ok
	else
		bad "groff warns on $m: $(cat "$tmp/groff.log")"
	fi
done

# READY=1 and STOPPING=1 through NOTIFY_SOCKET (a datagram socket, as systemd's)
python3 - "$tmp/notify" >"$tmp/notes" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(30)
try:
    while True:
        msg = s.recv(4096).decode()
        print(msg.replace("\n", " "), flush=True)
        if "STOPPING=1" in msg:
            break
except socket.timeout:
    print("TIMEOUT", flush=True)
PY
lpid=$!
i=0
while [ ! -S "$tmp/notify" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
NOTIFY_SOCKET="$tmp/notify" "$root$prefix/$sbindir/memsnapd" --config /dev/null \
	--socket "$tmp/api.sock" --run-dir "$tmp/run" --cache-dir "$tmp/cache" \
	--store "file://$tmp/store" --backend proc --log-level warn 2>"$tmp/d.log" &
dpid=$!
i=0
while ! grep -q READY=1 "$tmp/notes" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
grep -q 'READY=1' "$tmp/notes" && ok || bad "no READY=1 from memsnapd: $(cat "$tmp/notes" "$tmp/d.log")"
# READY=1 means the API answers
code=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$tmp/api.sock" http://memsnapd/healthz)
expect "healthz after READY=1" 200 "$code"
kill -TERM "$dpid"
wait "$dpid"
expect "memsnapd exit status after SIGTERM" 0 $?
dpid=
wait "$lpid"
grep -q 'STOPPING=1' "$tmp/notes" && ok || bad "no STOPPING=1 from memsnapd: $(cat "$tmp/notes")"

echo "test_install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
