#!/bin/sh
# rgw.sh - a throw-away Ceph RADOS Gateway (S3) on 127.0.0.1 for the tests.
#
#   scripts/rgw.sh start DIR   mon + memstore OSD + radosgw, all state under DIR;
#                              prints MEMSNAP_S3_* shell assignments on stdout
#   scripts/rgw.sh stop DIR    kills what start started (DIR/run/*.pid), waits; idempotent
#
# Notes:
#  - No /etc/ceph, no systemd, no cephx: CEPH_CONF points at DIR/ceph.conf.
#  - Every daemon runs in the foreground (-f) in the background of this shell, with
#    stdin/stdout/stderr on files, so a caller's $(rgw.sh start) is never held open
#    and the pids we record are the daemons' own.
#  - Ports (mon and rgw) are picked free by binding port 0; no fixed ports.
#  - "mon data avail warn/crit" are lowered: the mon refuses to run on a fuller disk.
#  - Every wait is bounded (RGW_WAIT seconds in all, default 90); on failure the log
#    tails go to stderr, everything started is stopped and the exit status is 1.
#  - Progress goes to stderr; stdout carries only the assignments.
#  - The memstore holds MEMSNAP_RGW_MEMSTORE_BYTES (default 1 GiB) in RAM, deleted objects'
#    tails included until the gateway's garbage collection runs (hours by default).
#  - STS is on (rgw sts key, rgw s3 auth use sts) and the user has user-policy, roles and
#    oidc-provider caps (web identity: a test registers its issuer and role), so a
#    test can allow itself sts:GetSessionToken and sign S3 calls with a session token.
set -eu

usage() {
	echo "usage: $0 start|stop DIR" >&2
	exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
D=$2

log() {
	echo "rgw.sh: $*" >&2
}

case "${MEMSNAP_RGW_MEMSTORE_BYTES:-1}" in
'' | *[!0-9]*)
	log "MEMSNAP_RGW_MEMSTORE_BYTES must be a number of bytes, not '$MEMSNAP_RGW_MEMSTORE_BYTES'"
	exit 2
	;;
esac

stop_all() {
	[ -d "$D/run" ] || return 0
	pids=""
	for f in "$D"/run/*.pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f" 2>/dev/null || true)
		case "$pid" in
		'' | *[!0-9]*) ;;
		*)
			kill -TERM "$pid" 2>/dev/null && pids="$pids $pid"
			;;
		esac
		rm -f "$f"
	done
	# Wait (bounded) for them to exit; then SIGKILL what is left.
	i=0
	while [ -n "$pids" ] && [ $i -lt 100 ]; do
		alive=""
		for pid in $pids; do
			kill -0 "$pid" 2>/dev/null && alive="$alive $pid"
		done
		pids=$alive
		[ -n "$pids" ] || break
		sleep 0.1
		i=$((i + 1))
	done
	for pid in $pids; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	for pid in $pids; do
		while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	done
	return 0
}

free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

deadline=0
fail() {
	log "FAILED: $*"
	for f in "$D"/log/*.log "$D"/log/*.out; do
		[ -s "$f" ] || continue
		echo "---- tail $f" >&2
		tail -n 20 "$f" >&2
	done
	stop_all
	exit 1
}

time_left() {
	[ "$(date +%s)" -lt "$deadline" ]
}

# Starts a daemon in the foreground, in the background of this shell; records its pid.
spawn() {
	name=$1
	shift
	setsid "$@" </dev/null >"$D/log/$name.out" 2>&1 &
	echo $! >"$D/run/$name.pid"
}

ceph_q() {
	timeout 15 ceph --connect-timeout 10 "$@" 2>>"$D/log/ceph-cli.out"
}

start_all() {
	for b in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool uuidgen \
		python3 setsid timeout curl; do
		command -v "$b" >/dev/null 2>&1 || {
			log "missing $b (run scripts/deps.sh)"
			exit 1
		}
	done
	mkdir -p "$D"
	D=$(cd "$D" && pwd)
	if [ -d "$D/run" ] && ls "$D"/run/*.pid >/dev/null 2>&1; then
		log "$D already has running daemons; stop them first"
		exit 1
	fi
	rm -rf "$D/mon" "$D/osd" "$D/run" "$D/log" "$D/rgw" "$D/keyring" "$D/monmap"
	mkdir -p "$D/mon" "$D/osd" "$D/run" "$D/log" "$D/rgw"
	trap 'stop_all; exit 1' INT TERM HUP
	deadline=$(($(date +%s) + ${RGW_WAIT:-90}))

	mon_port=$(free_port)
	rgw_port=$(free_port)
	while [ "$rgw_port" = "$mon_port" ]; do rgw_port=$(free_port); done
	fsid=$(uuidgen)
	# STS (session tokens): the key that seals them, 16 alphanumeric characters
	sts_key=$(python3 -c 'import secrets; print(secrets.token_hex(8))')
	export CEPH_CONF="$D/ceph.conf"
	cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms bind msgr2 = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd objectstore = memstore
osd crush update on start = false
osd class update on start = false
memstore device bytes = ${MEMSNAP_RGW_MEMSTORE_BYTES:-1073741824}
mon data avail warn = 1
mon data avail crit = 0
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
mon data = $D/mon/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
keyring = $D/keyring
crash dir = $D/crash
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $D/rgw
rgw dns name = 127.0.0.1
rgw sts key = $sts_key
rgw s3 auth use sts = true
# a removed object's data goes back to the memstore within a minute, not after the
# default two hours: benches that put and remove hundreds of MiB run after run
# filled a memstore with deleted tails until every PUT timed out
rgw gc obj min wait = 30
rgw gc processor period = 30
EOF
	log "config $CEPH_CONF (mon port $mon_port, rgw port $rgw_port)"

	ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' \
		>"$D/log/setup.out" 2>&1 || fail "ceph-authtool"
	ceph-authtool "$D/keyring" --gen-key -n client.admin --cap mon 'allow *' \
		--cap osd 'allow *' --cap mgr 'allow *' >>"$D/log/setup.out" 2>&1 ||
		fail "ceph-authtool admin"
	monmaptool --create --addv a "[v1:127.0.0.1:$mon_port]" --fsid "$fsid" "$D/monmap" \
		>>"$D/log/setup.out" 2>&1 || fail "monmaptool"
	ceph-mon --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" \
		>>"$D/log/setup.out" 2>&1 || fail "ceph-mon --mkfs"
	spawn mon.a ceph-mon -f -i a
	log "mon started"

	osd_uuid=$(uuidgen)
	osd_id=""
	while time_left; do
		osd_id=$(ceph_q osd new "$osd_uuid") && break
		osd_id=""
		sleep 0.5
	done
	[ -n "$osd_id" ] || fail "mon did not answer 'osd new'"
	mkdir -p "$D/osd/ceph-$osd_id"
	ceph-osd -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >>"$D/log/setup.out" 2>&1 ||
		fail "ceph-osd --mkfs"
	ceph_q osd crush add-bucket localhost host >/dev/null || fail "crush add-bucket"
	ceph_q osd crush move localhost root=default >/dev/null || fail "crush move"
	ceph_q osd crush add "osd.$osd_id" 1.0 host=localhost >/dev/null || fail "crush add"
	spawn "osd.$osd_id" ceph-osd -f -i "$osd_id"
	log "osd.$osd_id started"
	up=0
	while time_left; do
		if ceph_q osd stat 2>/dev/null | grep -q '1 up'; then
			up=1
			break
		fi
		sleep 0.5
	done
	[ $up -eq 1 ] || fail "osd did not come up"
	log "osd up"

	spawn rgw.a radosgw -f -n client.rgw.a
	up=0
	while time_left; do
		if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$rgw_port/"; then
			up=1
			break
		fi
		kill -0 "$(cat "$D/run/rgw.a.pid")" 2>/dev/null || fail "radosgw exited"
		sleep 0.5
	done
	[ $up -eq 1 ] || fail "radosgw did not answer on port $rgw_port"
	log "rgw up on 127.0.0.1:$rgw_port"

	access=$(python3 -c 'import secrets; print("MS" + secrets.token_hex(9).upper())')
	secret=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
	created=0
	while time_left; do
		if timeout 30 radosgw-admin user create --uid=memsnap --display-name=memsnap \
			--access-key="$access" --secret-key="$secret" >>"$D/log/setup.out" 2>&1; then
			created=1
			break
		fi
		sleep 1
	done
	[ $created -eq 1 ] || fail "radosgw-admin user create"
	# the user may attach its own policies (IAM PutUserPolicy): the STS tests let it call
	# GetSessionToken
	timeout 30 radosgw-admin caps add --uid=memsnap --caps="user-policy=*;roles=*;oidc-provider=*" \
		>>"$D/log/setup.out" 2>&1 || fail "radosgw-admin caps add"
	log "S3 user ready"
	trap - INT TERM HUP

	echo "MEMSNAP_S3_ENDPOINT=http://127.0.0.1:$rgw_port"
	echo "MEMSNAP_S3_ACCESS_KEY=$access"
	echo "MEMSNAP_S3_SECRET_KEY=$secret"
	echo "MEMSNAP_S3_REGION=us-east-1"
}

case "$cmd" in
start) start_all ;;
stop)
	[ -d "$D" ] || exit 0
	stop_all
	;;
*) usage ;;
esac
