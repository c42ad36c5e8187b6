# deb_systemd.sh - sourced by test_deb.sh --install once sysbox_start succeeded:
# the package installed under that systemd, memsnapd started as its unit says
# (Type=notify: `systemctl start` returns once READY=1 arrived), the hardening in
# force on the running daemon, /healthz and one sandbox's pause and resume
# through its API socket, then stopped (STOPPING=1, a clean exit) and purged.
#   needs: $deb, $sysbox_bind (the dir holding the .deb and memsnapd.conf as the
#   box sees it), $sysbox_leader (empty on a systemd host), expect.sh
box_sock=/run/memsnap/memsnapd.sock
conf_made=
if ! sysbox_run test -e /etc/memsnap/memsnapd.conf; then
	sysbox_run mkdir -p /etc/memsnap &&
		sysbox_run cp "$sysbox_bind/memsnapd.conf" /etc/memsnap/memsnapd.conf && conf_made=1
fi
if sysbox_run dpkg -i "$sysbox_bind/$(basename "$deb")" >"$tmp/dpkg.log" 2>&1; then
	ok
	sysbox_run systemctl daemon-reload
	# the package does not enable or start the unit (debian/rules): the operator does
	expect "the unit after dpkg -i" inactive "$(sysbox_run systemctl is-active memsnapd)"
	if sysbox_run timeout 120 systemctl start memsnapd; then ok; else
		bad "systemctl start memsnapd: $(sysbox_run journalctl -u memsnapd --no-pager -n 20 2>&1)"
	fi
	expect "systemctl is-active memsnapd" active "$(sysbox_run systemctl is-active memsnapd)"
	expect "the unit's Type" notify "$(sysbox_run systemctl show -p Type --value memsnapd)"
	status=$(sysbox_run systemctl show -p StatusText --value memsnapd)
	case $status in "listening on unix:$box_sock"*) ok ;;
	*) bad "the unit's status (sd_notify STATUS=): '$status'" ;; esac
	mainpid=$(sysbox_run systemctl show -p MainPID --value memsnapd)
	expect "the daemon's NoNewPrivs" 1 \
		"$(sysbox_run awk '/^NoNewPrivs:/ {print $2}' "/proc/$mainpid/status")"
	# ProtectSystem=strict: /usr is read-only for the daemon, while its state dir is not
	if sysbox_run nsenter --target "$mainpid" --mount -- touch /usr/.ms-probe 2>/dev/null; then
		bad "the daemon's /usr is writable (ProtectSystem=strict)"
		sysbox_run rm -f /usr/.ms-probe
	else ok; fi
	if sysbox_run nsenter --target "$mainpid" --mount -- touch /var/lib/memsnap/.ms-probe; then
		ok
		sysbox_run rm -f /var/lib/memsnap/.ms-probe
	else bad "the daemon's StateDirectory /var/lib/memsnap is not writable"; fi
	code=$(sysbox_run curl -s -o /dev/null -w '%{http_code}' --unix-socket "$box_sock" \
		http://memsnapd/healthz)
	expect "GET /healthz through the unit's socket" 200 "$code"
	# one sandbox through the daemon: start (the guest fills its memory), pause into
	# the default file:// store, resume (the guest verifies its memory)
	ms() { sysbox_run env MEMSNAP_SOCKET="$box_sock" timeout 300 memsnap "$@"; }
	sid=$(ms sandbox start --guest pattern --mem 8 --exec fill --seed 16 --epoch 1 -q 2>"$tmp/ms.err")
	[ -n "$sid" ] && ok || bad "memsnap sandbox start: $(cat "$tmp/ms.err")"
	build=$(ms sandbox pause -q "$sid" 2>"$tmp/ms.err")
	[ -n "$build" ] && ok || bad "memsnap sandbox pause: $(cat "$tmp/ms.err")"
	if ms sandbox resume "$sid" --exec verify --seed 16 --epoch 1 >"$tmp/ms.out" 2>"$tmp/ms.err"; then
		ok
	else bad "memsnap sandbox resume (verify): $(cat "$tmp/ms.out" "$tmp/ms.err")"; fi
	ms sandbox rm "$sid" -q >/dev/null 2>&1
	if sysbox_run timeout 700 systemctl stop memsnapd; then ok; else bad "systemctl stop memsnapd"; fi
	expect "systemctl is-active memsnapd after stop" inactive \
		"$(sysbox_run systemctl is-active memsnapd)"
	expect "the unit's result after stop" success \
		"$(sysbox_run systemctl show -p Result --value memsnapd)"
	sysbox_run dpkg --purge memsnap >/dev/null 2>&1 && ok || bad "dpkg --purge memsnap"
else
	bad "dpkg -i: $(tail -5 "$tmp/dpkg.log")"
fi
[ -n "$conf_made" ] && sysbox_run rm -f /etc/memsnap/memsnapd.conf
