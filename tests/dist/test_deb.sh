#!/bin/sh
# test_deb.sh - the Debian package: dpkg-buildpackage -us -uc -b on a copy of the
# source tree builds memsnap_*.deb; it holds both binaries, the systemd unit with
# ExecStart=/usr/sbin/memsnapd, the man pages, the docs and the annotated config,
# and its memsnapd runs. With --install (test_deb_systemd) the package is also
# installed under systemd, started (Type=notify), its API and one pause/resume
# checked through it, stopped and purged: on the host where systemd is PID 1,
# else in a booted systemd-nspawn container of this system (tests/dist/sysbox.sh);
# it needs root, and skips (77) at once without it or without systemd-nspawn.
#   test_deb.sh SOURCE_ROOT [--install]
set -u
src=${1:?usage: test_deb.sh SOURCE_ROOT [--install]}
install=${2:-}
. "$(dirname "$0")/sysbox.sh" # sysbox_start, sysbox_run, sysbox_stop
if [ "$install" = --install ] && [ "$(id -u)" -ne 0 ]; then
	echo "SKIP: installing and starting the package needs root"
	exit 77
fi
if [ "$install" = --install ] && [ "$(ps -p 1 -o comm= 2>/dev/null)" != systemd ] &&
	! command -v systemd-nspawn >/dev/null 2>&1; then
	echo "SKIP: systemd is not PID 1 and systemd-nspawn is missing (scripts/deps.sh installs systemd-container)"
	exit 77
fi
for tool in dpkg-buildpackage dh; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "FAIL: $tool is missing (scripts/deps.sh installs dpkg-dev and debhelper)"
		exit 1
	fi
done
tmp=$(mktemp -d /tmp/ms-deb.XXXXXX)
trap 'sysbox_stop; rm -rf "$tmp"' EXIT
. "$src/tests/expect.sh"

# a copy of the tree as git sees it (tracked files and new ones, no build dirs)
mkdir "$tmp/memsnap"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$src" ls-files -co --exclude-standard -z |
		(cd "$src" && xargs -0 tar -cf -) | tar -xf - -C "$tmp/memsnap"
else
	(cd "$src" && tar --exclude='./build*' -cf - .) | tar -xf - -C "$tmp/memsnap"
fi
echo "test_deb: dpkg-buildpackage -us -uc -b (a full build: this takes a minute or two)"
if ! (cd "$tmp/memsnap" && dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1; then
	tail -40 "$tmp/build.log"
	echo "FAIL: dpkg-buildpackage"
	exit 1
fi
deb=$(ls "$tmp"/memsnap_*_amd64.deb 2>/dev/null | head -1)
[ -n "$deb" ] && ok || { bad "no memsnap_*_amd64.deb was built"; deb=/nonexistent; }
dpkg-deb -c "$deb" | awk '{print $6}' >"$tmp/contents"
for f in ./usr/bin/memsnap ./usr/sbin/memsnapd ./lib/systemd/system/memsnapd.service \
	./usr/share/man/man1/memsnap.1.gz ./usr/share/man/man8/memsnapd.8.gz \
	./usr/share/doc/memsnap/daemon.md ./usr/share/doc/memsnap/memsnapd.conf \
	./usr/share/doc/memsnap/copyright; do
	grep -qx "$f" "$tmp/contents" && ok || bad "the package lacks $f"
done
mkdir "$tmp/x"
dpkg-deb -x "$deb" "$tmp/x"
expect "the packaged unit's ExecStart" "/usr/sbin/memsnapd --config /etc/memsnap/memsnapd.conf" \
	"$(sed -n 's/^ExecStart=//p' "$tmp/x/lib/systemd/system/memsnapd.service")"
"$tmp/x/usr/sbin/memsnapd" --help >"$tmp/help" 2>&1 && grep -q "memsnap node daemon" "$tmp/help" &&
	ok || bad "the packaged memsnapd --help: $(head -3 "$tmp/help")"
"$tmp/x/usr/bin/memsnap" --help >"$tmp/help" 2>&1 && grep -q "pageserver" "$tmp/help" &&
	ok || bad "the packaged memsnap --help: $(head -3 "$tmp/help")"

if [ "$install" = --install ]; then
	mkdir "$tmp/deb"
	cp "$deb" "$tmp/x/usr/share/doc/memsnap/memsnapd.conf" "$tmp/deb/"
	if ! sysbox_start "$tmp" "$tmp/deb"; then
		bad "$sysbox_why"
	else
		[ -n "$sysbox_leader" ] && echo "test_deb: the package goes into a booted systemd-nspawn container of this system"
		. "$(dirname "$0")/deb_systemd.sh"
		sysbox_stop
	fi
fi
echo "test_deb: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
