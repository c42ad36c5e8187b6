#!/bin/sh
# test_examples.sh - examples/ against the INSTALLED libraries: meson install into a
# destdir, then examples/pageserver_source.c is compiled with nothing but
# `pkg-config --cflags --libs memsnap-uffd` from that destdir, checked to need neither
# libcurl nor libmicrohttpd, and run against a Firecracker-like fault client
# (fault_client.c) that reads every page and compares it with its model.
#   test_examples.sh BUILD_DIR FAULT_CLIENT
set -u
build=${1:?usage: test_examples.sh BUILD_DIR FAULT_CLIENT}
client=${2:?usage: test_examples.sh BUILD_DIR FAULT_CLIENT}
src=$(cd "$(dirname "$0")/../.." && pwd)
. "$src/tests/expect.sh"
tmp=$(mktemp -d /tmp/ms-examples.XXXXXX)
spid= # the example, while it runs
trap '[ -n "$spid" ] && kill -KILL "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT

if ! meson install -C "$build" --no-rebuild --quiet --destdir "$tmp/root" >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log"
	echo "FAIL: meson install"
	exit 1
fi
opt() {
	meson introspect "$build" --buildoptions |
		python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]==sys.argv[1]][0])' "$1"
}
prefix=$(opt prefix)
libdir=$(opt libdir)
case $libdir in /*) ;; *) libdir="$prefix/$libdir" ;; esac
for f in include/memsnap/memsnap.h include/memsnap/pageserver.h include/memsnap/header.h \
	include/memsnap/build.h; do
	[ -e "$tmp/root$prefix/$f" ] && ok || bad "not installed: $prefix/$f"
done
for lib in memsnap-header memsnap-uffd memsnap; do
	[ -e "$tmp/root$libdir/pkgconfig/$lib.pc" ] && ok || bad "no $lib.pc in $libdir/pkgconfig"
done
export PKG_CONFIG_PATH="$tmp/root$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$tmp/root"
flags=$(pkg-config --cflags --libs memsnap-uffd) || { echo "FAIL: pkg-config memsnap-uffd"; exit 1; }
# a sanitized build's libraries need the program built with the same runtime
sanitize=$(opt b_sanitize)
[ "$sanitize" = none ] || flags="$flags -fsanitize=$sanitize"

if ! cc -std=c11 -Wall -Wextra -Werror -o "$tmp/pageserver_source" \
	"$src/examples/pageserver_source.c" $flags 2>"$tmp/cc.log"; then
	cat "$tmp/cc.log"
	echo "FAIL: the example does not build against the installed memsnap-uffd ($flags)"
	exit 1
fi
ok
export LD_LIBRARY_PATH="$tmp/root$libdir"
needs=$(ldd "$tmp/pageserver_source")
case $needs in *libmemsnap-uffd.so*) ok ;; *) bad "the example does not load libmemsnap-uffd: $needs" ;; esac
case $needs in *libcurl* | *libmicrohttpd* | *libgnutls*) bad "the page server pulls in curl/microhttpd/gnutls: $needs" ;; *) ok ;; esac
# a symbol of the internals must not be visible
if nm -D --defined-only "$tmp/root$libdir/libmemsnap-uffd.so" | awk '{print $3}' | grep -qv '^memsnap_'; then
	bad "libmemsnap-uffd exports more than memsnap_*"
else
	ok
fi

"$tmp/pageserver_source" "$tmp/vm.sock" 8 >"$tmp/server.out" 2>&1 &
spid=$!
i=0
while [ ! -S "$tmp/vm.sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -S "$tmp/vm.sock" ] || { cat "$tmp/server.out"; echo "FAIL: the example does not listen"; exit 1; }
"$client" "$tmp/vm.sock" 8 >"$tmp/client.out" 2>&1
rc=$?
cat "$tmp/client.out"
if [ $rc -eq 77 ]; then
	exit 77
fi
expect "fault client (every page as the model says)" 0 "$rc"
wait "$spid"
src_rc=$?
spid=
cat "$tmp/server.out"
expect "example exit status" 0 "$src_rc"
grep -q "^served 2048 pages" "$tmp/server.out" && ok || bad "the example did not serve the 2048 pages"

echo "test_examples: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
